"""The training map's array kernels: where a clip's coordinates are (non-zero bounds), and moving them.

``transforms.FusedTrainPipeline.maps`` turns each clip's bounds and random draws into one affine map
per axis (``x' = a·x + b``, ``b0`` for absent joints, a flip flag); this module holds the array work
around it, with no per-clip Python:

* ``nonzero_bounds`` / ``float16_bounds``: per clip, the bounds of the non-zero coordinates (the input
  of PoseCompact's box), from float32 planes or straight from float16 clips as the shards store them;
* ``apply_maps_planar`` (NumPy, in loader workers before rendering): the maps applied, bit for bit
  as ``intint.loader.device.apply_maps`` applies them on the training device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Bounds = tuple[float, float, float, float]  # (lo_x, lo_y, hi_x, hi_y) of a clip's non-zero coordinates


def _least_nonzero(bits: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row along ``axis``, the smallest non-zero value of an unsigned array and whether the row has
    none. After subtracting 1 the zeros wrap to the dtype's largest value, so one plain minimum finds
    the smallest non-zero value (minus 1): no mask, no select pass."""
    one = bits.dtype.type(1)
    least = (bits - one).min(axis=axis)
    return least + one, least == np.iinfo(bits.dtype).max


def nonzero_bounds(flat: np.ndarray) -> list[Bounds | None]:
    """For clips as B×2×N coordinate planes (the x row, the y row): per clip the bounds
    (lo_x, lo_y, hi_x, hi_y) of the non-zero values, None when an axis has none.

    NaN/±inf are set to 0 in ``flat`` (absent, as ``np.nan_to_num`` would make them); they show up as
    non-finite plain bounds, so finite data costs no extra pass. Planar rows, not the interleaved
    M×T×V×2 layout: NumPy reduces over an inner axis of length 2 ~20x slower than over a contiguous row.
    """
    hi = flat.max(axis=2)
    if not np.isfinite(hi).all():  # NaN (it propagates through max) or +inf somewhere
        np.nan_to_num(flat, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        hi = flat.max(axis=2)
    if flat.dtype == np.float32 and int(flat.view(np.uint32).max()) < 0x80000000:
        # No sign bit anywhere, so every value is >= +0.0, and such float32 order like their bits read as
        # uint32, with 0.0 at 0 (``_least_nonzero``): ~3.5x cheaper than the masked minimum below.
        least, empty = _least_nonzero(flat.view(np.uint32), axis=2)
        lo = np.where(empty, np.float32(np.inf), least.view(np.float32))
    else:  # negative values (or -0.0, -inf): masked reductions
        inf = flat.dtype.type(np.inf)  # a fill of the array's own dtype keeps np.where from promoting
        zero = flat == 0
        lo = np.where(zero, inf, flat).min(axis=2)
        if not (lo > -inf).all():
            np.nan_to_num(flat, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
            hi = flat.max(axis=2)
            zero = flat == 0
            lo = np.where(zero, inf, flat).min(axis=2)
        if (hi <= 0).any():  # the plain max may be a zero (absent) entry: take the masked one
            hi = np.where(zero, -inf, flat).max(axis=2)
    return [None if lx == math.inf or ly == math.inf else (lx, ly, hx, hy)
            for (lx, ly), (hx, hy) in zip(lo.tolist(), hi.tolist(), strict=True)]


def float16_bounds(keypoint: np.ndarray) -> list[Bounds | None] | None:
    """``nonzero_bounds`` for float16 clips B×…×2 as stored (interleaved x, y), without a float32 copy;
    None when a value is negative or not finite (then make the planar copy and use ``nonzero_bounds``).

    Each (x, y) pair read as one little-endian uint32 holds x in its low and y in its high 16 bits, and
    float16 values >= 0 order like their bits: the bounds are integer reductions over contiguous rows
    (``_least_nonzero``), so a device-mode worker never converts the clip it ships.
    """
    b = keypoint.shape[0]
    if keypoint.dtype != np.float16 or keypoint.shape[-1] != 2 or not keypoint.flags.c_contiguous:
        return None
    pairs = keypoint.view(np.uint32).reshape(b, -1)
    halves = (pairs & np.uint32(0xFFFF), pairs >> np.uint32(16))  # x bits, y bits
    hi = [h.max(axis=1) for h in halves]
    if max(int(h.max()) for h in hi) >= 0x7C00:  # a sign bit (>= 0x8000), or inf/NaN (0x7C00-0x7FFF)
        return None
    (lo_x, none_x), (lo_y, none_y) = (_least_nonzero(h, axis=1) for h in halves)
    values = np.stack([lo_x, lo_y, hi[0], hi[1]], axis=1).astype(np.uint16).view(np.float16)
    return [None if gone else (lx, ly, hx, hy)
            for gone, (lx, ly, hx, hy) in zip((none_x | none_y).tolist(), values.astype(np.float64).tolist(),
                                              strict=True)]


def apply_maps_planar(
    rows: np.ndarray,
    score: np.ndarray,
    coef: np.ndarray,
    flipped: np.ndarray,
    persons: Sequence[int],
    keep: int,
    flip_index: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """``apply_maps`` in NumPy on the planar copy ``FusedTrainPipeline.maps`` measured: the workers'
    path (they hold that copy already, and NumPy's in-place passes over contiguous planes cost ~1/4 of
    torch's broadcasts over the interleaved (x, y) layout on these small arrays); the same float32
    operations, so the same bits.

    ``rows`` B×2×M×L×V float32 (non-finite values already zeroed by ``maps``; overwritten), ``score``
    B×M×L×V. Returns new arrays, keypoint B×K×L×V×2 and score B×K×L×V (``score``'s dtype) with
    K = min(keep, M), person slots from ``persons[i]`` on zero.
    """
    b, _, m, t, v = rows.shape
    if len(flip_index) != v:
        raise ValueError(f"flip: flip_index has {len(flip_index)} entries for V={v} joints")
    k = min(keep, m)
    n = k * t * v
    flat = rows.reshape(b, 2, -1)[:, :, :n]
    zero = flat == 0
    coef = np.asarray(coef, dtype=np.float32).reshape(b, 3, 2, 1)
    flat *= coef[:, 0]
    flat += coef[:, 1]
    np.copyto(flat, np.broadcast_to(coef[:, 2], flat.shape), where=zero)
    out = np.empty((b, n, 2), dtype=np.float32)
    out[:, :, 0] = flat[:, 0]
    out[:, :, 1] = flat[:, 1]
    out = out.reshape(b, k, t, v, 2)
    sc = np.array(score[:, :k])  # a copy (its own dtype): the flip below reorders it in place
    for i, count in enumerate(persons):
        if count < k:
            out[i, count:] = 0  # padded slots stay absent (the map moved their zeros)
    order = np.asarray(flip_index)
    for i in np.flatnonzero(flipped).tolist():  # ``take`` per clip: ~10x cheaper than fancy indexing
        out[i] = out[i].take(order, axis=2)
        sc[i] = sc[i].take(order, axis=2)
    return out, sc
