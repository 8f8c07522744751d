"""One decoded video → the keypoint clips of both pathways, and clips → heatmap views.

The two pathways share everything but the frame sampler (docs/method.md §4): the Integrity clip is PoseC3D's
uniform sampling, the Intensity clip the window around the precomputed intensity peak (or around a
random centre for the "random" ablation). Both are cut from the *same* decoded arrays, so a video is
read and decoded once per step for both pathways.

Training randomness comes from ``sampling.clip_rng(seed, epoch, key, pathway)``: one Generator per
video, epoch and pathway, so a clip never depends on the rank, the worker, or whether the other
pathway is on. By default (``max_persons=None``) a clip keeps every person of its video, as the
reference renders them all. A cap keeps the first ``max_persons`` person slots *after* the transforms,
so PoseCompact still frames every person as the reference does; the dropped slots draw nothing, and
``loader.batch_transport`` counts them so the loader can say how many were lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from intint.pose import keypoint_maps, sampling, transforms
from intint.render import heatmaps
from intint.store.shardstream import Video


@dataclass
class Clip:
    """One pathway's keypoint clip(s) after the transforms.

    Training: keypoint M×L×V×2, score M×L×V. Evaluation: keypoint C×M×L×V×2 (C test clips).
    ``size`` is the frame (h, w) the coordinates live in, i.e. the heatmap size.
    """

    keypoint: np.ndarray
    score: np.ndarray
    size: tuple[int, int]


@dataclass
class ClipBatch:
    """One pathway's training clips of a batch *before* their spatial map: keypoint B×K×L×V×2 and score
    B×K×L×V as cut from the videos (stored dtype), clip i's real persons in its first ``persons[i]``
    slots (zeros after them), and each clip's map (``coef`` B×3×2, ``flipped`` B, from
    ``FusedTrainPipeline.maps``) into a frame of ``size``. ``mapped`` applies it
    (``keypoint_maps.apply_maps_planar``).

    Why unapplied: the heatmaps_on="device" wire ships the clips as stored (float16 in PYSKL data: half
    the bytes of float32 coordinates) with the maps, and the training device applies them."""

    keypoint: np.ndarray
    score: np.ndarray
    size: tuple[int, int]
    persons: list[int]
    coef: np.ndarray
    flipped: np.ndarray
    flip_index: tuple[int, ...]
    rows: np.ndarray | None  # a planar float32 copy of the clips (B×2×M×L×V, M >= K) if one was made
    _mapped: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False)

    def mapped(self) -> tuple[np.ndarray, np.ndarray]:
        """Float32 coordinates B×K×L×V×2 in the ``size`` frame and the score, flipped clips' joints
        swapped: clip i equals ``ClipMaker.train``'s clip for its own person slots. Computed once (it
        maps ``rows`` in place), then cached."""
        if self._mapped is None:
            keep = self.keypoint.shape[1]
            rows = _planar(self.keypoint) if self.rows is None else self.rows
            self._mapped = keypoint_maps.apply_maps_planar(rows, self.score, self.coef, self.flipped,
                                                        self.persons, keep, self.flip_index)
        return self._mapped


@dataclass(frozen=True)
class _BatchRows:
    """A training batch's videos as one table of (person, frame) rows, end to end, plus one zero row for
    padded person slots. Why: one gather per pathway then cuts all clips, instead of four small NumPy
    calls per clip."""

    kp: np.ndarray  # rows×V×2, stored dtype, the zero row last
    score: np.ndarray  # rows×V
    first: np.ndarray  # B×M×1: the row of (clip i, person p, frame 0)
    present: np.ndarray  # B×M×1: person p is one of video i's
    zero_row: np.integer  # the zero row, where absent persons' rows point
    persons: list[int]  # each video's person count
    frames: list[int]  # each video's frame count
    shapes: list[tuple[int, int]]  # each video's img_shape

    @staticmethod
    def of(videos: list[Video]) -> _BatchRows:
        persons = [int(v.keypoint.shape[0]) for v in videos]
        joints = videos[0].keypoint.shape[2]
        for v in videos:
            if v.keypoint.shape[2] != joints:
                raise ValueError(f"{v.shard}: sample {v.key} ({v.frame_dir!r}): field 'keypoint': "
                                 f"{v.keypoint.shape[2]} joints, the batch's others have {joints}")
        frames = [int(v.keypoint.shape[1]) for v in videos]
        flat_kp = np.concatenate([v.keypoint.reshape(-1, joints, 2) for v in videos]
                                 + [np.zeros((1, joints, 2), dtype=videos[0].keypoint.dtype)])
        flat_score = np.concatenate([v.keypoint_score.reshape(-1, joints) for v in videos]
                                    + [np.zeros((1, joints), dtype=videos[0].keypoint_score.dtype)])
        starts = np.cumsum([0] + [m * t for m, t in zip(persons, frames, strict=True)])
        slot = np.arange(max(persons))[None, :, None]
        present = slot < np.array(persons)[:, None, None]
        first = starts[:-1, None, None] + slot * np.array(frames)[:, None, None]
        return _BatchRows(flat_kp, flat_score, first, present, starts[-1], persons, frames,
                          [video.img_shape for video in videos])


class ClipMaker:
    """Samples and transforms the clips of the enabled pathways for one video (all its persons, or the
    first ``max_persons`` when a cap is set)."""

    def __init__(self, pathways: tuple[str, ...], clip_len: int, definition: str, jitter: int,
                 pipeline: transforms.PipelineConfig, max_persons: int | None, seed: int) -> None:
        unknown = [p for p in pathways if p not in sampling.PATHWAYS]
        if unknown or not pathways:
            raise ValueError(f"pathways must be a non-empty subset of {sampling.PATHWAYS}, got {pathways}")
        self.pathways = pathways
        self.clip_len = clip_len
        self.random_centre = definition == "random"
        self.jitter = jitter
        self.max_persons = max_persons  # None: every person of the video
        self.seed = seed
        self.train_pipe = transforms.train_pipeline(pipeline)
        self.test_pipe = transforms.test_pipeline(pipeline)
        # One Generator per pathway, re-seeded per clip (``clip_rng(out=)``): constructing a fresh one per
        # clip costs a sizeable share of a sample's CPU budget.
        self._rngs = {p: sampling.new_clip_generator() for p in pathways}
        self._steps = np.arange(clip_len, dtype=np.int64)

    def _indices(self, video: Video, pathway: str, num_clips: int, test_mode: bool,
                 rng: np.random.Generator | None) -> np.ndarray:
        total = video.keypoint.shape[1]
        if pathway == "integrity":
            return sampling.uniform_indices(total, self.clip_len, num_clips, test_mode=test_mode, rng=rng)
        if self.random_centre:
            return sampling.random_centre_indices(total, self.clip_len, num_clips, test_mode=test_mode,
                                                  rng=rng)
        jitter = 0 if test_mode else self.jitter
        return sampling.intensity_indices(total, _peak(video), self.clip_len, num_clips, jitter=jitter,
                                          rng=rng)

    def train(self, video: Video, epoch: int, rng_key: str) -> dict[str, Clip]:
        """The training clip of each enabled pathway (random sampling, crop and flip)."""
        out = {}
        for pathway in self.pathways:
            rng = sampling.clip_rng(self.seed, epoch, rng_key, pathway, out=self._rngs[pathway])
            idx = self._indices(video, pathway, 1, False, rng)
            if pathway == "intensity" and len(idx) <= video.keypoint.shape[1]:
                # a window of consecutive frames: a view suffices (the pipeline never writes its input)
                frames = slice(int(idx[0]), int(idx[0]) + len(idx))
                kp_in, score_in = video.keypoint[:, frames], video.keypoint_score[:, frames]
            else:  # np.take gathers along an axis faster than fancy indexing
                kp_in = np.take(video.keypoint, idx, axis=1)
                score_in = np.take(video.keypoint_score, idx, axis=1)
            kp, score, size = self.train_pipe(kp_in, score_in, video.img_shape, rng, persons=self.max_persons)
            out[pathway] = Clip(kp, score, size)
        return out

    def train_batch(self, videos: list[Video], epoch: int, rng_keys: list[str]) -> dict[str, ClipBatch]:
        """``train`` for a whole batch: per pathway, the clips of all videos as padded arrays.

        Clip i, once ``ClipBatch.mapped``, equals ``train(videos[i], epoch, rng_keys[i])`` bit for bit
        (same Generators, same draws in the same order), with person slots beyond its own count zero.
        Sampling stays per video; one gather cuts every clip, and the maps are computed for the batch
        (``FusedTrainPipeline.maps``) but left for the consumer to apply: the workers' renderer or
        the training device.
        """
        if len(videos) != len(rng_keys) or not videos:
            raise ValueError(f"train_batch: {len(videos)} videos and {len(rng_keys)} RNG keys")
        rows = _BatchRows.of(videos)
        frames_of = np.empty((len(videos), self.clip_len), dtype=np.int64)  # each pathway's, in turn
        out = {}
        for pathway in self.pathways:
            draws = self._sample_frames(videos, epoch, rng_keys, pathway, rows.frames, frames_of)
            out[pathway] = self._cut_clips(rows, frames_of, draws)
        return out

    def _sample_frames(self, videos: list[Video], epoch: int, rng_keys: list[str], pathway: str,
                       frames: list[int], out: np.ndarray) -> np.ndarray:
        """The frames of each video's ``pathway`` clip into ``out`` (B×L), and the pipeline's uniforms of
        each clip (B×draws), drawn from the clip's Generator in ``train``'s order.

        Vectorised where no per-clip logic is needed: Integrity clips of videos with T >= 2L take one
        frame per equal segment from L uniforms that come first in the clip's stream
        (``sampling.uniform_indices``), Intensity clips a window at the stored peak; the other regimes,
        the random-centre ablation and temporal jitter go through ``_indices`` clip by clip.
        """
        length = self.clip_len
        draws = 2 * self.train_pipe.max_attempts + 3  # the pipeline's uniforms per clip
        uniforms = np.empty((len(videos), length + draws))
        for i, (video, key) in enumerate(zip(videos, rng_keys, strict=True)):
            rng = sampling.clip_rng(self.seed, epoch, key, pathway, out=self._rngs[pathway])
            t = frames[i]
            if pathway == "integrity" and t >= 2 * length:
                rng.random(out=uniforms[i])  # L index uniforms, then the pipeline's
                sampling.segment_frames(t, length, uniforms[i, :length], out=out[i])
                continue
            if pathway == "intensity" and not self.random_centre and not self.jitter and t >= length:
                out[i] = self._steps + sampling.window_start(t, _peak(video), length)
            else:
                out[i] = self._indices(video, pathway, 1, False, rng)
            rng.random(out=uniforms[i, length:])
        return uniforms[:, length:]

    def _cut_clips(self, rows: _BatchRows, frames_of: np.ndarray, draws: np.ndarray) -> ClipBatch:
        """One pathway's clips of the batch at frames ``frames_of`` (B×L), cut with one gather, and their
        maps from the pipeline's uniforms ``draws``."""
        rows_of = np.where(rows.present, rows.first + frames_of[:, None, :], rows.zero_row)  # B×M×L
        kp = rows.kp.take(rows_of, axis=0)  # B×M×L×V×2, stored dtype
        bounds = keypoint_maps.float16_bounds(kp)  # straight from float16 clips as stored, when it can
        if bounds is None:
            planar = _planar(kp)
            coef, flipped = self.train_pipe.maps(planar, rows.persons, rows.shapes, draws)
        else:
            planar = None
            coef, flipped = self.train_pipe.maps_from_bounds(bounds, rows.shapes, draws)
        # every person, or the first max_persons slots (the map was framed on all of them); scores only
        # move, never change, so they stay in their stored dtype
        kept = rows.persons if self.max_persons is None else [min(m, self.max_persons) for m in rows.persons]
        keep = max(kept)
        score = rows.score.take(rows_of[:, :keep], axis=0)
        return ClipBatch(kp[:, :keep], score, self.train_pipe.cfg.train_hw, kept, coef, flipped,
                         tuple(self.train_pipe.cfg.flip_index), planar)

    def test(self, video: Video, num_clips: int) -> dict[str, Clip]:
        """The ``num_clips`` deterministic test clips of each pathway, C×M×L×V×2.

        As the reference, all C·L sampled frames go through the pipeline together (one PoseCompact
        box for all clips of a video), then are split into clips.
        """
        out = {}
        for pathway in self.pathways:
            idx = self._indices(video, pathway, num_clips, True, None)
            kp, score, size = self.test_pipe(video.keypoint[:, idx], video.keypoint_score[:, idx],
                                             video.img_shape, None)
            m = kp.shape[0] if self.max_persons is None else min(self.max_persons, kp.shape[0])
            kp = kp[:m].reshape(m, num_clips, self.clip_len, *kp.shape[2:]).swapaxes(0, 1)
            score = score[:m].reshape(m, num_clips, self.clip_len, score.shape[2]).swapaxes(0, 1)
            out[pathway] = Clip(np.ascontiguousarray(kp), np.ascontiguousarray(score), size)
        return out


def _planar(keypoint: np.ndarray) -> np.ndarray:
    """Clips B×M×L×V×2 (any float dtype) → a new float32 B×2×M×L×V (x plane, y plane): what the bounds
    reductions and ``apply_maps_planar`` want. Cast and de-interleave in one torch copy: NumPy casts
    float16 element by element, torch with F16C."""
    b, m, length, joints, _ = keypoint.shape
    rows = np.empty((b, 2, m, length, joints), dtype=np.float32)
    source = torch.from_numpy(np.ascontiguousarray(keypoint)).view(b, -1, 2).transpose(1, 2)
    torch.from_numpy(rows).view(b, 2, -1).copy_(source)
    return rows


def _peak(video: Video) -> int:
    """The stored intensity peak the Intensity clip is placed at; an error naming the sample without one."""
    if video.peak is None:
        raise ValueError(f"{video.shard}: sample {video.key} ({video.frame_dir!r}): field 'intensity': "
                         "no peak was read for the Intensity clip")
    return int(video.peak)


def render_views(keypoint: torch.Tensor | np.ndarray, score: torch.Tensor | np.ndarray, size: tuple[int, int],
                 sigma: float, flip_double: bool) -> torch.Tensor:
    """Test views of a batch: keypoint B×C×M×L×V×2 → heatmaps B×N×V×L×H×W float32.

    N = C·2 with ``flip_double`` (view-major, as the reference's FormatShape: all clips unflipped,
    then all clips mirrored), else C. Rendering goes through ``heatmaps.render_batch`` with the C
    clips of every video as one batch, so workers and the device produce the same numbers.
    """
    b, c = keypoint.shape[:2]
    h, w = size
    flat_kp = keypoint.reshape(b * c, *keypoint.shape[2:])
    flat_sc = score.reshape(b * c, *score.shape[2:])
    maps = heatmaps.render_batch(flat_kp, flat_sc, h, w, sigma=sigma, flip_double=flip_double)
    views = 2 if flip_double else 1
    k = maps.shape[1] // views
    maps = maps.view(b, c, views, k, *maps.shape[2:]).transpose(1, 2)
    return maps.reshape(b, views * c, k, *maps.shape[4:])
