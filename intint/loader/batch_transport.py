"""The wire layout of a loader batch: what a worker process fills and hands to the main process.

``BatchBuilder`` fills one batch in place inside the worker (training batches whole, from
``ClipMaker.train_batch``; evaluation batches video by video), ``unpack`` turns what arrives in the
main process into the contract's batch (docs/architecture.md, "Loader contract"). ``loader.streams``
decides *which* videos make a batch; this module decides how its bytes travel, and why:

* ``heatmaps_on="workers"``: heatmaps as **float16** B×K×T×H×W. Values lie in [0, 1] and the ±3σ
  window keeps them above 0.011, where float16 is exact to 2^-11 relative, and it halves the bytes
  of the shared-memory hand-off, the pin-memory copy and the host→device transfer;
  ``loader.device.to_device`` casts to float32 on the device.
* ``heatmaps_on="device"``: training clips B×M×T×V×2 / B×M×T×V *as cut from the videos*, in the
  dtype the shards store (float16 in PYSKL data), with each clip's spatial map (compact, resize, crop,
  flip as ``x' = a·x + b`` per axis, computed in the worker from every person's bounds) that
  ``to_device`` applies on the device in float32 (``loader.device.apply_maps``): ~5 KB per clip against
  5 MB of float16 heatmaps, and no rounding — mapped coordinates would have to travel as float32
  (float16 moves a Gaussian of σ = 0.6 px by up to 1/32 px, several percent of its value). Persons are
  padded with absent slots (zeros, score 0, which draw nothing) to the batch's own largest person count,
  or to ``max_persons`` when a cap is set. Evaluation clips travel mapped, as float32.
* Persons: heatmaps have no person axis (persons combine by maximum), so nothing heatmaps_on="workers"
  allocates depends on how many persons a video has; keypoint batches are sized per batch. A cap
  (``max_persons``) below a video's person count drops the persons beyond it: the batch reports how
  many (``"truncated"``) and the loader logs the total once per epoch (``log_truncated``).
* One shared-memory tensor per batch (the heatmaps of all pathways), allocated there from the start
  as torch's own collate does, so the hand-off passes one file descriptor, not a copy; everything
  small travels by value (``BatchBuilder`` explains the layout, ``unpack`` restores the contract).
  Training batches reuse a small ring of such buffers per worker (``loader.shared_ring``): fresh
  shared memory costs more to page in than rendering into it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from intint.loader.clip_maker import Clip, ClipBatch, render_views
from intint.loader.config import LoaderConfig
from intint.loader.shared_ring import WorkerBuffers, new_shared
from intint.render import heatmaps
from intint.render.scatter_layout import Written
from intint.store.shardstream import Video

log = logging.getLogger(__name__)

RENDER_CHUNK = 8  # workers render training heatmaps this many samples per call (``BatchBuilder.add_batch``)


def _empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor; inside a DataLoader worker it lives in shared memory from the start,
    so handing it to the main process sends a file descriptor instead of copying the bytes."""
    return torch.empty(shape, dtype=dtype) if get_worker_info() is None else new_shared(shape, dtype)


class BatchBuilder:
    """Fills one batch in place, in the *wire* layout that crosses from a worker to the main process.

    Wire batch: ``"pathways"`` (names, in order), ``"label"`` (int64 ndarray), ``"key"``, ``"skipped"``,
    ``"truncated"`` (persons a ``max_persons`` cap kept out of the clips), ``"size"`` (h, w), ``"views"``
    (eval: (num_clips, flip_double), else None), and either
    ``"heatmaps"``, one float16 tensor P×B×K×T×H×W (eval P×B×N×K×T×H×W) in shared memory, or
    ``"kp"``/``"score"`` ndarrays P×B×M×T×V×2 / P×B×M×T×V: evaluation clips mapped, float32, with a C
    axis after B; training clips as cut from the videos (stored dtype, the batch's own M) with
    ``"maps"`` P×B×7 float32 (each clip's ``coef`` flattened, then 1.0 where it flips) and ``"persons"``
    B; ``"max_persons"`` says what ``unpack`` pads M to (None: the batch's own M).
    Why: every shared-memory tensor costs a file-descriptor hand-off (a socket round trip per tensor),
    so the big heatmaps go as ONE tensor and the small arrays travel by value through the pipe (far
    cheaper for a keypoint batch). ``unpack`` rebuilds the contract layout.
    """

    def __init__(self, cfg: LoaderConfig, size: int, num_clips: int | None, flip_double: bool,
                 buffers: WorkerBuffers | None = None) -> None:
        self.cfg, self.size, self.num_clips, self.flip_double = cfg, size, num_clips, flip_double
        self.buffers = buffers  # a worker's recycled heatmap buffers (training), else fresh ones
        self.pool_slot: tuple[int, int, int] | None = None
        self.pathways = cfg.active_pathways
        self.labels = np.zeros(size, dtype=np.int64)
        self.keys: list[str] = []
        self.heatmaps: torch.Tensor | None = None
        self.kp: np.ndarray | None = None
        self.score: np.ndarray | None = None
        self.hw: tuple[int, int] | None = None
        self.written: list[Written] | None = None  # a recycled ring buffer's write record
        self.maps: np.ndarray | None = None  # training keypoint batches: each clip's map, P×B×7
        self.persons: np.ndarray | None = None  # and its person count, B
        self.truncated = 0  # persons of the batch's videos that a max_persons cap left out
        # evaluation keypoint batches: each video's clips per pathway, stacked by ``finish`` once the
        # batch's largest person count is known
        self.eval_clips: list[list[Clip]] = [[] for _ in self.pathways]

    def _alloc_heatmaps(self, length: int, joints: int, size: tuple[int, int]) -> None:
        """The batch's heatmap buffer (heatmaps_on="workers"); no person axis, so any person count fits."""
        h, w = size
        views = () if self.num_clips is None else (self.num_clips * (2 if self.flip_double else 1),)
        if self.buffers is None:
            shape = (len(self.pathways), self.size, *views, joints, length, h, w)
            self.heatmaps = _empty(shape, torch.float16)
        else:  # ring buffers hold a full batch; a smaller last batch uses the front of one
            full = (len(self.pathways), self.cfg.batch_size, *views, joints, length, h, w)
            ring, self.pool_slot = self.buffers.take(full, torch.float16)
            self.heatmaps, self.written = ring.tensor[:, : self.size], ring.written

    def add(self, video: Video, clips: dict[str, Clip]) -> None:
        """One video's evaluation clips (``ClipMaker.test``); training batches come whole (``add_batch``)."""
        if self.num_clips is None:
            raise ValueError("BatchBuilder.add takes evaluation clips; training batches go through add_batch")
        i = len(self.keys)
        for p, pathway in enumerate(self.pathways):
            clip = clips[pathway]
            if self.hw is None:
                self.hw = clip.size
                if self.cfg.heatmaps_on == "workers":
                    self._alloc_heatmaps(clip.keypoint.shape[-3], clip.keypoint.shape[-2], clip.size)
            elif clip.size != self.hw:
                raise ValueError(f"{video.shard}: sample {video.key} ({video.frame_dir!r}): {pathway} clip "
                                 f"is {clip.size}, the batch's others are {self.hw}; the pipeline must end "
                                 "in a fixed size")
            if self.heatmaps is None:
                self.eval_clips[p].append(clip)
        self.truncated += video.keypoint.shape[0] - clips[self.pathways[0]].keypoint.shape[-4]
        if self.heatmaps is not None:  # test views are view-major (N = view·C + clip), as the reference
            for p, pathway in enumerate(self.pathways):
                clip = clips[pathway]
                views = render_views(clip.keypoint[None], clip.score[None], clip.size, self.cfg.sigma,
                                     self.flip_double)
                self.heatmaps[p, i].copy_(views[0])
        self.labels[i] = video.label
        self.keys.append(video.key)

    def add_batch(self, videos: list[Video], batch: dict[str, ClipBatch]) -> None:
        """A whole training batch at once, from ``ClipMaker.train_batch`` (into an empty builder)."""
        n = len(videos)
        if self.keys or n > self.size:
            raise ValueError(f"add_batch: {n} videos into a builder of {self.size} holding {len(self.keys)}")
        first = batch[self.pathways[0]]
        self.hw = first.size
        if self.cfg.heatmaps_on == "workers":
            length, joints = first.keypoint.shape[2:4]
            self._alloc_heatmaps(length, joints, first.size)
            # Rendered a few samples at a time, both pathways in one call, real persons only: runs of up
            # to RENDER_CHUNK samples with the same person count. Why: a call has a fixed overhead (a few
            # dozen small tensor ops), a sizeable share of a sample's work when each sample is a call; the
            # whole batch in one call gains little more while its temporaries outgrow the caches.
            h, w = first.size
            mapped = [batch[p].mapped() for p in self.pathways]
            kp = np.stack([k for k, _ in mapped])  # P×B×K×L×V×2
            score = np.stack([s for _, s in mapped])
            for i, j, m in _runs(first.persons, RENDER_CHUNK):
                heatmaps.render_batch(kp[:, i:j, :m], score[:, i:j, :m], h, w, sigma=self.cfg.sigma,
                                      out=self.heatmaps[:, i:j], clear=self.written is None,
                                      written=self.written)
        else:
            # Keypoint batches cross as cut from the videos, in their stored dtype, with each clip's map
            # (``to_device`` applies it on the training device): float16 PYSKL clips are half the bytes of
            # mapped float32 coordinates. They keep the batch's own person count; ``unpack`` pads them to
            # max_persons when a cap is set.
            clips = [batch[p] for p in self.pathways]
            self.kp = np.stack([c.keypoint for c in clips])  # P×B×K×L×V×2
            self.score = np.stack([c.score for c in clips])
            self.maps = np.concatenate([np.stack([c.coef.reshape(n, 6) for c in clips]),
                                        np.stack([c.flipped for c in clips])[..., None]], axis=2)  # P×B×7
            self.persons = np.array(first.persons, dtype=np.int64)
        self.labels[:n] = [video.label for video in videos]
        self.keys = [video.key for video in videos]
        self.truncated = sum(int(video.keypoint.shape[0]) for video in videos) - sum(first.persons)

    def finish(self, skipped: int) -> dict[str, Any]:
        """The wire batch of the samples added so far (a smaller last batch is a view of the buffers)."""
        n = len(self.keys)
        views = None if self.num_clips is None else (self.num_clips, self.flip_double)
        wire: dict[str, Any] = {"pathways": self.pathways, "label": self.labels[:n].copy(),
                                "key": list(self.keys), "skipped": int(skipped), "size": self.hw,
                                "views": views, "truncated": int(self.truncated)}
        if self.heatmaps is not None:
            wire["heatmaps"] = self.heatmaps if n == self.size else self.heatmaps[:, :n]
            wire["pool"] = self.pool_slot
        elif self.eval_clips[0]:
            wire["kp"], wire["score"] = _stack_eval_clips(self.eval_clips)
            wire["max_persons"] = self.cfg.max_persons
        elif self.kp is not None and self.score is not None:
            wire["kp"], wire["score"] = self.kp[:, :n], self.score[:, :n]
            wire["max_persons"] = self.cfg.max_persons
            if self.maps is not None and self.persons is not None:
                wire["maps"], wire["persons"] = self.maps[:, :n], self.persons[:n]
        return wire


def _stack_eval_clips(clips: list[list[Clip]]) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation clips (per pathway, per video: C×M×L×V×2 and C×M×L×V) → float32 P×B×C×M×L×V×2 and
    P×B×C×M×L×V, M the batch's largest person count, absent slots zero (they draw nothing)."""
    first = clips[0][0].keypoint
    c, _, length, joints, _ = first.shape
    m = max(clip.keypoint.shape[1] for per_pathway in clips for clip in per_pathway)
    lead = (len(clips), len(clips[0]), c, m, length, joints)
    kp, score = np.zeros((*lead, 2), dtype=np.float32), np.zeros(lead, dtype=np.float32)
    for p, per_pathway in enumerate(clips):
        for i, clip in enumerate(per_pathway):
            persons = clip.keypoint.shape[1]
            kp[p, i, :, :persons], score[p, i, :, :persons] = clip.keypoint, clip.score
    return kp, score


def log_truncated(persons: int, cap: int | None, where: str) -> None:
    """One warning for the ``persons`` a ``max_persons`` cap kept out of ``where``'s clips (none: silent).
    Why: a dropped person's heatmaps are a silent change of the input; the loaders call this once per
    epoch (or evaluation pass) with the batches' ``"truncated"`` counts added up."""
    if persons:
        log.warning("%s: %d person(s) beyond max_persons=%s were not rendered (max_persons=None renders "
                    "every person)", where, persons, cap)


def _runs(persons: list[int] | np.ndarray, longest: int) -> list[tuple[int, int, int]]:
    """(start, stop, person count) of consecutive samples with the same person count, at most ``longest``
    samples each."""
    runs: list[tuple[int, int, int]] = []
    for i, m in enumerate(int(p) for p in persons):
        if runs and runs[-1][2] == m and i - runs[-1][0] < longest:
            runs[-1] = (runs[-1][0], i + 1, m)
        else:
            runs.append((i, i + 1, m))
    return runs


def unpack(wire: dict[str, Any], pin_memory: bool = False) -> dict[str, Any]:
    """Wire batch (``BatchBuilder.finish``) → the contract's batch layout, in the main process.

    Zero-copy views; arrays that came by value are pinned here when ``pin_memory`` is set (the
    DataLoader's pin thread pins only tensors, i.e. the heatmaps). Training keypoint batches also carry
    ``"{pathway}_map"`` (B×7) and ``"persons"`` (B): ``loader.device.to_device`` applies the maps
    (``apply_maps``) before it renders.
    """
    pin = pin_memory and torch.cuda.is_available()
    label = torch.from_numpy(wire["label"])
    batch: dict[str, Any] = {"label": label.pin_memory() if pin else label, "key": wire["key"],
                             "skipped": wire["skipped"], "truncated": wire["truncated"]}
    if "heatmaps" in wire:
        for p, pathway in enumerate(wire["pathways"]):
            batch[pathway] = wire["heatmaps"][p]
        return batch
    kp, score = torch.from_numpy(wire["kp"]), torch.from_numpy(wire["score"])
    axis = 2 if wire["views"] is None else 3  # the person axis of P×B(×C)×M×T×V(×2)
    missing = 0 if wire["max_persons"] is None else wire["max_persons"] - kp.shape[axis]
    if missing > 0:  # pad with absent persons: zeros, score 0 (they draw nothing)
        kp, score = (torch.cat([t, t.new_zeros((*t.shape[:axis], missing, *t.shape[axis + 1:]))], axis)
                     for t in (kp, score))
    if pin:
        kp, score = kp.pin_memory(), score.pin_memory()
    for p, pathway in enumerate(wire["pathways"]):
        batch[f"{pathway}_kp"], batch[f"{pathway}_score"] = kp[p], score[p]
        if "maps" in wire:
            batch[f"{pathway}_map"] = torch.from_numpy(wire["maps"][p])
    if "maps" in wire:
        batch["persons"] = torch.from_numpy(wire["persons"])
    batch["size"] = wire["size"]
    if wire["views"] is not None:
        batch["flip_double"] = wire["views"][1]
    return batch
