"""The ten single motion-intensity curves exactly as the published Int&Int code computes them.

`intint.pose.intensity.compute(..., mode="reference")` calls `curves` here. Every quirk of the
authors' samplers is reproduced on purpose (docs/method.md §2.1-2.5), because a model trained on windows
placed by the reference curves only reproduces the paper's numbers if the windows are the same:

- absent person slots are zero coordinates and still enter the joint sums and all slot means;
- ``R[t]`` is the highest occupied slot + 1 (not a count), max(R) of a frame pair for joint-next,
  min(R) for bone/angle-next;
- a per-joint term is kept only if it is finite and >= 0 (this is what drops zero-length bones);
- the nose's bone points to the left wrist (``skeleton.REFERENCE_BONE_NEIGHBOUR``);
- the four angle curves see only the left-wrist angle of slot 0, times 17·M (list-aliasing bug).

Everything is vectorised over persons, frames and joints; the reference loops in Python. The
per-term arithmetic runs in float32 like the reference's own (its pickles are float32): that reproduces
its rounding, so the golden curves match to ~1.5e-6 of their maximum (float64 arithmetic: ~1.5e-5), which
keeps near-tied argmaxes on the reference's side.
"""

from __future__ import annotations

import math

import numpy as np

from intint.pose.skeleton import ANGLE_TABLE, HIPS, NUM_JOINTS, REFERENCE_BONE_END, SHOULDERS

# A slot (or a slot's bone array) counts as empty when every component is below this
# (docs/method.md §2.1, §2.3).
EMPTY_EPS = 1e-5

_BONE_END = np.array(REFERENCE_BONE_END)
# The aliasing bug keeps only the first vertex of the angle table (joint 9, the left wrist).
_ALIASED_VERTEX = next(iter(ANGLE_TABLE))
_ALIASED_END1, _ALIASED_END2 = ANGLE_TABLE[_ALIASED_VERTEX]


Vec = tuple[np.ndarray, np.ndarray]  # (x, y) planes of equal (or broadcastable) shape


def _occupied(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """V×M×T → M×T: not every |x|, |y| of the slot's 17 joints is below EMPTY_EPS (NaN: occupied)."""
    return ~np.all((np.abs(x) < EMPTY_EPS) & (np.abs(y) < EMPTY_EPS), axis=0)


def _highest_slot_count(occupied: np.ndarray) -> np.ndarray:
    """M×T occupancy → 1 + highest occupied slot per frame, 0 where none (int64, length T)."""
    num_slots = occupied.shape[0]
    if num_slots == 0:
        return np.zeros(occupied.shape[1], dtype=np.int64)
    highest_from_top = np.argmax(occupied[::-1], axis=0)
    return np.where(occupied.any(axis=0), num_slots - highest_from_top, 0).astype(np.int64)


def real_num_person(keypoint: np.ndarray) -> np.ndarray:
    """Per-frame ``R[t]``: 1 + the highest slot with any |coordinate| >= 1e-5, 0 if none
    (docs/method.md §2.1).

    It is a highest-occupied-slot count, not the number of present persons: an empty slot below an
    occupied one still counts. Scores are ignored, as in the reference. Returns int64 of length T.
    """
    keypoint = np.asarray(keypoint)
    return _highest_slot_count(_occupied(*_planes(keypoint)))


def _planes(keypoint: np.ndarray) -> Vec:
    """M×T×V×2 → contiguous x and y planes laid out V×M×T (joints outermost, frames innermost).

    With this layout the gathers through the bone table copy whole contiguous blocks and the
    per-frame sums add contiguous rows, which is most of the speed of this module.
    """
    planes = np.ascontiguousarray(keypoint.transpose(3, 2, 0, 1))
    return planes[0], planes[1]


def _kept(term: np.ndarray) -> np.ndarray:
    """The reference appends a term only if it is finite and >= 0; dropped terms count as 0.

    ``fmax(term, 0)`` zeroes NaN and negative terms in one pass (3× faster than ``np.where`` on a
    mask); +inf, which needs infinite input, is zeroed afterwards.
    """
    kept = np.fmax(term, 0)
    kept[kept == np.inf] = 0
    return kept


def _one_minus_cos(a: Vec, b: Vec) -> np.ndarray:
    """``1 - a·b / (|a| |b|)``, NaN/inf for zero-length vectors exactly as in the reference."""
    with np.errstate(divide="ignore", invalid="ignore"):
        dot = a[0] * b[0] + a[1] * b[1]
        norms = np.sqrt(a[0] * a[0] + a[1] * a[1]) * np.sqrt(b[0] * b[0] + b[1] * b[1])
        return 1 - dot / norms


def _frame_sums(terms: np.ndarray) -> np.ndarray:
    """V×M×T' terms → length-T' sums over joints and persons."""
    return terms.reshape(math.prod(terms.shape[:-1]), terms.shape[-1]).sum(axis=0)


def _next(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frames 1..T-1, frames 0..T-2) along the last axis: the pairs a ``next`` term compares."""
    return a[..., 1:], a[..., :-1]


def _next_pad(values: np.ndarray) -> np.ndarray:
    """Append the reference's 0 for the last frame of a ``next`` curve (length T-1 -> T)."""
    return np.concatenate([values, np.zeros(1, dtype=values.dtype)])


def _slot_means(kp: np.ndarray) -> Vec:
    """Per-slot mean position of every joint over ALL frames (absent ones as zeros), as V×M×1 planes.

    Averaged over the frame axis of the original M×T×V×2 array, i.e. by sequential float32
    accumulation like the reference's, not NumPy's pairwise summation along a contiguous axis:
    that keeps the avr curves ~10× closer to the golden values.
    """
    mean = kp.mean(axis=1).transpose(2, 1, 0)[..., None]  # 2×V×M×1
    return mean[0], mean[1]


def _joint_curves(x: np.ndarray, y: np.ndarray, mean: Vec, r: np.ndarray) -> dict[str, np.ndarray]:
    """jnt_next and jnt_avr (docs/method.md §2.2): Euclidean displacement /100 /10, absent slots as zeros."""
    (x1, x0), (y1, y0) = _next(x), _next(y)
    dx, dy = x1 - x0, y1 - y0
    step = _frame_sums(_kept(np.sqrt(dx * dx + dy * dy) / 100))
    ax, ay = x - mean[0], y - mean[1]
    dev = _frame_sums(_kept(np.sqrt(ax * ax + ay * ay) / 100))
    return {
        "jnt_next": _next_pad(step / 10 / np.maximum(1, np.maximum(*_next(r)))),
        "jnt_avr": dev / 10 / np.maximum(1, r),
    }


def _bone_curves(bone: Vec, mean_bone: Vec, r: np.ndarray, tag: str) -> dict[str, np.ndarray]:
    """bone{tag}_next / bone{tag}_avr (docs/method.md §2.3): 10·(1 - cos), slots with all-zero bones
    skipped."""
    nonempty = _occupied(*bone)  # M×T, broadcasts over the joint axis
    (bx1, bx0), (by1, by0) = _next(bone[0]), _next(bone[1])
    nxt = _kept(10 * _one_minus_cos((bx1, by1), (bx0, by0)))
    nxt = _frame_sums(nxt * np.logical_and(*_next(nonempty)))  # kept terms are finite: mask by product
    avr = _frame_sums(_kept(10 * _one_minus_cos(mean_bone, bone)) * nonempty)
    return {
        f"bone{tag}_next": _next_pad(nxt / np.maximum(1, np.minimum(*_next(r)))),
        f"bone{tag}_avr": avr / np.maximum(1, r),
    }


def _aliased_angle_curves(a: np.ndarray, num_slots: int, r: np.ndarray, tag: str) -> dict[str, np.ndarray]:
    """ang{tag}_next / ang{tag}_avr from the single aliased series ``a(t)`` (docs/method.md §2.4), ×17·M."""
    copies = NUM_JOINTS * num_slots
    nxt = _kept(np.abs(np.subtract(*_next(a)))) * copies / np.maximum(1, np.minimum(*_next(r)))
    finite = np.isfinite(a)
    mean_valid = a[finite].mean() if finite.any() else np.nan
    avr = _kept(np.abs(a - mean_valid)) * copies / 10 / np.maximum(1, r)
    return {f"ang{tag}_next": _next_pad(nxt), f"ang{tag}_avr": avr}


def curves(kp: np.ndarray) -> dict[str, np.ndarray]:
    """All ten single-definition curves (length T) of a float32 M×T×17×2 keypoint array.

    Scores are not used by any reference definition, so they are not an argument here.
    """
    num_slots, num_frames = kp.shape[:2]
    x, y = _planes(kp)
    r = _highest_slot_count(_occupied(x, y))
    mean_x, mean_y = _slot_means(kp)
    out: dict[str, np.ndarray] = _joint_curves(x, y, (mean_x, mean_y), r)

    def mid(px: np.ndarray, py: np.ndarray, a: int, b: int) -> Vec:
        """Midpoint of joints a and b, keeping a length-1 joint axis to broadcast over V."""
        return (px[a:a + 1] + px[b:b + 1]) / 2, (py[a:a + 1] + py[b:b + 1]) / 2

    hip, mean_hip = mid(x, y, *HIPS), mid(mean_x, mean_y, *HIPS)
    local = (x[_BONE_END] - x, y[_BONE_END] - y)
    mean_local = (mean_x[_BONE_END] - mean_x, mean_y[_BONE_END] - mean_y)
    out.update(_bone_curves(local, mean_local, r, "L"))
    out.update(_bone_curves((hip[0] - x, hip[1] - y), (mean_hip[0] - mean_x, mean_hip[1] - mean_y), r, "C"))

    if num_slots == 0:
        zeros = np.zeros(num_frames, dtype=kp.dtype)
        out.update({name: zeros for name in ("angL_next", "angL_avr", "angC_next", "angC_avr")})
        return out
    # Only the first angle-table vertex of person slot 0 survives the aliasing bug: series over T.
    vx, vy = x[_ALIASED_VERTEX, 0], y[_ALIASED_VERTEX, 0]
    arm1 = (x[_ALIASED_END1, 0] - vx, y[_ALIASED_END1, 0] - vy)
    arm2 = (x[_ALIASED_END2, 0] - vx, y[_ALIASED_END2, 0] - vy)
    shoulder = mid(x, y, *SHOULDERS)
    hip0, shoulder0 = (hip[0][0, 0], hip[1][0, 0]), (shoulder[0][0, 0], shoulder[1][0, 0])
    trunk = (shoulder0[0] - hip0[0], shoulder0[1] - hip0[1])
    out.update(_aliased_angle_curves(_one_minus_cos(arm1, arm2), num_slots, r, "L"))
    out.update(_aliased_angle_curves(_one_minus_cos((vx - hip0[0], vy - hip0[1]), trunk), num_slots, r, "C"))
    return out
