"""Temporal clip placement for the two pathways (docs/method.md §2.6, §3).

* Intensity pathway: a window of ``clip_len`` consecutive frames centred on the most intense frame
  (``intensity_indices``), optionally with a temporal jitter of the peak in training.
* Integrity pathway: PoseC3D's uniform segment sampling (``uniform_indices``).
* Random-centre ablation: the intensity window around a random frame (``random_centre_indices``).

Training randomness comes from a ``numpy.random.Generator`` made by ``clip_rng(seed, epoch, key,
pathway)``: it depends only on the run seed, the epoch, the video and the pathway, never on global
state, the rank or the worker process, so a run gives the same clips whatever the number of ranks and
loader workers (and, unlike the reference, whose workers replay one stream every epoch, different
clips in a different epoch: docs/method.md §3.2).

Test mode reproduces the reference bit for bit, including its use of NumPy's legacy global RNG
seeded with 255 before each video (tests/data/README.md, docs/method.md §3.2); a private ``RandomState(255)``
makes the same calls in the same order without touching global state.
"""

from __future__ import annotations

import copy
import hashlib
from functools import lru_cache

import numpy as np

REFERENCE_TEST_SEED = 255  # UniformSampleFrames / TimeWindowSampleFrames_random default `seed`

PATHWAYS = ("integrity", "intensity")  # the two pathways, in the fixed order batches and models list them

_PATHWAY_STREAMS = {"integrity": 1, "intensity": 2}


def clip_rng(seed: int, epoch: int, key: str, pathway: str, *,
             out: np.random.Generator | None = None) -> np.random.Generator:
    """An independent Generator per pathway for one video in one epoch.

    Separate streams mean that switching the other pathway on or off (``pathways="both"`` vs a single
    one) does not change this pathway's clips or augmentations.

    The PCG64 state and increment come straight from a 256-bit blake2b of (seed, epoch, pathway, key):
    building a ``SeedSequence`` and a fresh bit generator per clip cost more than the whole clip's
    transforms. ``out`` (a PCG64-backed Generator the caller owns, e.g. one per pathway held by the
    loader) is re-seeded in place and returned, which avoids even the Generator allocation; without it a
    new Generator is returned. Either way the draws depend only on the four arguments.
    """
    if pathway not in _PATHWAY_STREAMS:
        raise ValueError(f"clip_rng: pathway must be one of {sorted(_PATHWAY_STREAMS)}, got {pathway!r}")
    if seed < 0 or epoch < 0:
        raise ValueError(f"clip_rng: seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
    digest = hashlib.blake2b(f"{seed}/{epoch}/{_PATHWAY_STREAMS[pathway]}/{key}".encode(),
                             digest_size=32, person=b"intint-clip-rng").digest()
    state = {"bit_generator": "PCG64",
             "state": {"state": int.from_bytes(digest[:16], "little"),
                       "inc": int.from_bytes(digest[16:], "little") | 1},  # PCG increments are odd
             "has_uint32": 0, "uinteger": 0}
    if out is None:
        out = copy.copy(_GENERATOR_TEMPLATE)  # unpickles a new PCG64: ~10x cheaper than seeding one
    elif not isinstance(out.bit_generator, np.random.PCG64):
        raise ValueError(f"clip_rng: out must be a PCG64 Generator, got {type(out.bit_generator).__name__}")
    out.bit_generator.state = state
    return out


def new_clip_generator() -> np.random.Generator:
    """A Generator suitable as ``clip_rng(..., out=)``: hold one per pathway and re-seed it per clip."""
    return copy.copy(_GENERATOR_TEMPLATE)


_GENERATOR_TEMPLATE = np.random.Generator(np.random.PCG64(0))


def _check_lengths(total_frames: int, clip_len: int, num_clips: int) -> None:
    if total_frames < 1:
        raise ValueError(f"total_frames must be >= 1, got {total_frames}")
    if clip_len < 1:
        raise ValueError(f"clip_len must be >= 1, got {clip_len}")
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")


def _required(rng: np.random.Generator | None, what: str) -> np.random.Generator:
    """``rng``, or a ValueError saying that ``what`` needs one."""
    if rng is None:
        raise ValueError(f"{what} needs a Generator (rng)")
    return rng


def _window(total_frames: int, centres: np.ndarray, clip_len: int) -> np.ndarray:
    """Windows of ``clip_len`` frames with each centre at position ``clip_len // 2`` (docs/method.md §3.1).

    Clamped to the video (start in [0, T - L]); a video shorter than the clip is looped from frame 0
    whatever the centre, exactly as the reference. Returns (len(centres), L) int64.
    """
    steps = np.arange(clip_len, dtype=np.int64)
    if total_frames < clip_len:
        return np.broadcast_to(steps % total_frames, (len(centres), clip_len)).copy()
    starts = np.clip(centres.astype(np.int64) - clip_len // 2, 0, total_frames - clip_len)
    return starts[:, None] + steps[None, :]


def intensity_indices(total_frames: int, peak: int, clip_len: int = 48, num_clips: int = 1, *,
                      jitter: int = 0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Frame indices of the Intensity clip: ``clip_len`` frames with ``peak`` at position L//2.

    ``num_clips`` repeats the same window (the reference does; every Int&Int config uses 1).
    ``jitter > 0`` moves the peak by a uniform integer in [-jitter, jitter] (clamped to the video)
    before placement: temporal augmentation the reference lacks (docs/method.md §9 item 11), off by default.
    Returns int64 of length ``num_clips * clip_len``.
    """
    _check_lengths(total_frames, clip_len, num_clips)
    if not 0 <= peak < total_frames:
        raise ValueError(f"intensity_indices: peak {peak} outside the video [0, {total_frames})")
    if jitter < 0:
        raise ValueError(f"intensity_indices: jitter must be >= 0, got {jitter}")
    centre = int(peak)
    if jitter > 0:
        shift = int(_required(rng, "intensity_indices: jitter > 0").integers(-jitter, jitter, endpoint=True))
        centre = min(max(centre + shift, 0), total_frames - 1)
    if total_frames < clip_len:
        window = _window(total_frames, np.array([centre]), clip_len)[0]
    else:  # the hot path: scalar clamping and one arange (same numbers as _window)
        start = window_start(total_frames, centre, clip_len)
        window = np.arange(start, start + clip_len, dtype=np.int64)
    return window if num_clips == 1 else np.tile(window, num_clips)


def _uniform_train(total_frames: int, clip_len: int, num_clips: int, rng: np.random.Generator) -> np.ndarray:
    """Random uniform sampling for training, all clips at once (num_clips × L)."""
    n, length = total_frames, clip_len
    steps = np.arange(length, dtype=np.int64)
    if n < length:
        starts = rng.integers(0, n, size=num_clips)
        return (starts[:, None] + steps[None, :]) % n
    if n < 2 * length:
        # n - L distinct skip positions out of L + 1: the first n - L entries of a random permutation.
        skips = np.argsort(rng.random((num_clips, length + 1)), axis=1)[:, : n - length]
        marks = np.zeros((num_clips, length + 1), dtype=np.int64)
        np.put_along_axis(marks, skips, 1, axis=1)
        return steps[None, :] + np.cumsum(marks, axis=1)[:, :length]
    return segment_frames(n, length, rng.random((num_clips, length)))


def segment_frames(total_frames: int, clip_len: int, uniforms: np.ndarray,
                   out: np.ndarray | None = None) -> np.ndarray:
    """Uniform training sampling for T >= 2L from L uniforms in [0, 1) per clip (…×L, scaled in
    place): frame ``start + int(u · size)`` of each of the L equal segments. floor(U · size) is uniform
    on [0, size), and one float draw beats ``integers()`` with array bounds. ``out``: where to write
    the int64 indices (the batched loader path fills its own array)."""
    starts, sizes = _segments(total_frames, clip_len)
    uniforms *= sizes
    return np.add(starts, uniforms.astype(np.int64), out=out)


def window_start(total_frames: int, centre: int, clip_len: int) -> int:
    """First frame of the L-frame window with ``centre`` at position L//2, clamped to a video of
    T >= L frames (shorter videos loop instead, see ``intensity_indices``)."""
    return min(max(centre - clip_len // 2, 0), total_frames - clip_len)


@lru_cache(maxsize=4096)
def _segments(total_frames: int, clip_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Start frame (int64) and size (float64) of each of the L equal segments; cached per (T, L), the
    arrays are read-only so a caller cannot corrupt the cache.
    """
    borders = np.arange(clip_len + 1, dtype=np.int64) * total_frames // clip_len
    starts, sizes = borders[:clip_len].copy(), np.diff(borders).astype(np.float64)
    starts.flags.writeable = sizes.flags.writeable = False
    return starts, sizes


def _uniform_test(total_frames: int, clip_len: int, num_clips: int, seed: int) -> np.ndarray:
    """The reference's test-mode sampling: the same legacy-RNG calls in the same order (golden README).

    Per clip: ``rand()`` (crop ratio, unused with p_interval 1), ``randint(1)`` (offset, always 0),
    then nothing (T < L), ``choice(L + 1, T - L, replace=False)`` (L <= T < 2L) or ``randint(sizes)``.
    """
    n, length = total_frames, clip_len
    legacy = np.random.RandomState(seed)
    steps = np.arange(length, dtype=np.int64)
    clips = []
    for i in range(num_clips):
        legacy.rand()
        legacy.randint(1)
        if n < length:
            start = i if n < num_clips else i * n // num_clips
            clips.append(start + steps)
        elif n < 2 * length:
            marks = np.zeros(length + 1, dtype=np.int64)
            marks[legacy.choice(length + 1, n - length, replace=False)] = 1
            clips.append(steps + np.cumsum(marks)[:length])
        else:
            borders = np.arange(length + 1, dtype=np.int64) * n // length
            clips.append(borders[:length] + legacy.randint(np.diff(borders)))
    return np.stack(clips)


def uniform_indices(total_frames: int, clip_len: int = 48, num_clips: int = 1, *, test_mode: bool,
                    rng: np.random.Generator | None = None,
                    test_seed: int = REFERENCE_TEST_SEED) -> np.ndarray:
    """Frame indices of the Integrity clips (PoseC3D ``UniformSampleFrames``, docs/method.md §3.2).

    Three regimes: T < L loops the video from a start frame; L <= T < 2L spreads L distinct frames by
    skipping T - L random gaps; T >= 2L takes one random frame in each of L equal segments.
    Training draws from ``rng``; test mode is deterministic per (T, clip index) and equals the
    reference exactly. Returns int64 of length ``num_clips * clip_len``, clips concatenated.
    """
    _check_lengths(total_frames, clip_len, num_clips)
    if test_mode:
        return _uniform_test_cached(total_frames, clip_len, num_clips, test_seed).copy()
    inds = _uniform_train(total_frames, clip_len, num_clips,
                          _required(rng, "uniform_indices: training mode"))  # already in [0, T)
    return inds.reshape(-1)


@lru_cache(maxsize=4096)
def _uniform_test_cached(total_frames: int, clip_len: int, num_clips: int, seed: int) -> np.ndarray:
    """Test-mode indices depend only on (T, L, C, seed): computed once (the legacy RandomState seeding
    dominates their cost), stored read-only, and copied out by ``uniform_indices``.
    """
    inds = (_uniform_test(total_frames, clip_len, num_clips, seed) % total_frames).reshape(-1)
    inds = inds.astype(np.int64)
    inds.flags.writeable = False
    return inds


def random_centre_indices(total_frames: int, clip_len: int = 48, num_clips: int = 1, *, test_mode: bool,
                          rng: np.random.Generator | None = None,
                          test_seed: int = REFERENCE_TEST_SEED) -> np.ndarray:
    """The random-centre ablation (docs/method.md §2.6): the Intensity window around ``int(U[0, T))``.

    One centre per clip. In training a fresh draw each call (so it also acts as temporal cropping);
    in test mode the reference's ``seed(255)`` then ``uniform(0, T)`` per clip, so the centre depends
    only on T. Returns int64 of length ``num_clips * clip_len``.
    """
    _check_lengths(total_frames, clip_len, num_clips)
    if test_mode:
        draws = np.array(_legacy_uniform_draws(total_frames, num_clips, test_seed))
    else:
        train_rng = _required(rng, "random_centre_indices: training mode")
        draws = train_rng.uniform(0, total_frames, size=num_clips)
    centres = np.minimum(draws.astype(np.int64), total_frames - 1)
    return _window(total_frames, centres, clip_len).reshape(-1)


@lru_cache(maxsize=4096)
def _legacy_uniform_draws(total_frames: int, num_clips: int, seed: int) -> tuple[float, ...]:
    """The reference's ``seed(255)`` then ``uniform(0, T)`` per clip: depends only on (T, C, seed), so
    cached (seeding a RandomState costs far more than the rest of the sampling).
    """
    legacy = np.random.RandomState(seed)
    return tuple(legacy.uniform(0, total_frames) for _ in range(num_clips))
