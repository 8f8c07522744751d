"""The ten single motion-intensity curves as the Int&Int paper states them, with absent data masked.

`intint.pose.intensity.compute(..., mode="paper")` calls `curves` here. The definitions are those of the
paper (§III-C) applied to every joint of every person, without the reference code's accidents
(docs/method.md §2.7, §9); ``docs/intensity-modes.md`` lists the departures one per row. In short:

- a joint is present when its score is > 0, its coordinates are finite and not both 0; a person is
  present in a frame when any of its joints is; absent data never enters a term (no jump from the
  origin when a person appears, no zeros dragging a mean);
- a ``next`` term needs its joint (bone, angle) valid in both frames; an ``avr`` term compares with
  the mean over the frames where it is valid, per person and joint;
- every curve is summed over persons and joints and divided by the number of persons present
  (in both frames for ``next``), so a crowded frame is not more intense than a single person;
- the nose's bone goes to the shoulder midpoint (the "neck"), an anatomical neighbour, instead of
  the left wrist;
- angles are computed at all 17 joints of all persons; vectors shorter than ``MIN_LENGTH`` have no
  direction and are masked instead of turning into NaN;
- no arbitrary scalings: joint curves are pixels per person, bone and angle curves sums of
  ``1 - cos`` per person.

Speed: x and y are separate V×M×T planes (joints outermost, frames innermost), so joint gathers
through the bone/angle tables copy whole contiguous blocks, every intermediate stays C-contiguous,
and per-frame sums add contiguous rows; masks are applied by multiplying with the boolean mask
(every term is finite by construction), which is several times faster than ``np.where`` on an
irregular mask.
``1 - cos`` is evaluated as ``|u - w|² / 2`` of unit vectors: the textbook ``1 - a·b/(|a||b|)``
cancels catastrophically for the small frame-to-frame angles these curves are made of, and the
unit-vector form keeps float32 accurate.
"""

from __future__ import annotations

import numpy as np

from intint.pose import skeleton

# Vectors (bones, angle arms) shorter than this, in input units (pixels), have no direction.
MIN_LENGTH = 1e-5

NOSE = 0
# The reference bone table; the nose's entry is replaced by the shoulder midpoint in `curves`.
_BONE_END = np.array(skeleton.REFERENCE_BONE_END)
_ANGLE_VERTEX = np.array(list(skeleton.ANGLE_TABLE))
_ANGLE_END1 = np.array([ends[0] for ends in skeleton.ANGLE_TABLE.values()])
_ANGLE_END2 = np.array([ends[1] for ends in skeleton.ANGLE_TABLE.values()])

Vec = tuple[np.ndarray, np.ndarray]  # (x, y) planes of equal shape


def presence(keypoint: np.ndarray, keypoint_score: np.ndarray) -> np.ndarray:
    """M×T×17 bool: score > 0, finite coordinates, and not the (0, 0) that marks an absent joint."""
    x, y = keypoint[..., 0], keypoint[..., 1]
    return np.isfinite(x) & np.isfinite(y) & ((x != 0) | (y != 0)) & (keypoint_score > 0)


def _units(vec: Vec, valid: np.ndarray) -> tuple[Vec, np.ndarray]:
    """Unit vectors where ``valid`` and at least MIN_LENGTH long (0 elsewhere), and that validity."""
    vx, vy = vec
    length = np.sqrt(vx * vx + vy * vy)
    valid = valid & (length >= MIN_LENGTH)
    inv = valid / np.maximum(length, np.float32(MIN_LENGTH))
    return (vx * inv, vy * inv), valid


def _one_minus_cos(u: Vec, w: Vec) -> np.ndarray:
    """``1 - cos`` of the angle between unit vectors, as ``|u - w|² / 2`` (no cancellation, in [0, 2])."""
    dx, dy = u[0] - w[0], u[1] - w[1]
    return 0.5 * (dx * dx + dy * dy)


def _frame_mean(values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over frames (last axis) of the valid entries, per joint and person, and whether any was valid.

    Both are returned with a trailing length-1 frame axis, ready to broadcast against V×M×T.
    """
    count = valid.sum(axis=-1, keepdims=True)
    total = (values * valid).sum(axis=-1, keepdims=True)
    return total / np.maximum(count, 1).astype(values.dtype), count > 0


def _next(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frames 1..T-1, frames 0..T-2) of a V×M×T array: the pairs a ``next`` term compares."""
    return a[..., 1:], a[..., :-1]


class _PerPerson:
    """Per-frame sums of masked terms divided by the number of persons present, shared by all curves."""

    def __init__(self, person_present: np.ndarray) -> None:  # M×T
        self.frames = person_present.shape[-1]
        self.per_frame = np.maximum(1, person_present.sum(axis=0)).astype(np.float32)
        self.per_pair = np.maximum(1, np.logical_and(*_next(person_present)).sum(axis=0)).astype(np.float32)

    def next_curve(self, terms: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """K×M×(T-1) terms → length-T curve; the last frame has no successor and scores 0."""
        curve = np.zeros(self.frames, dtype=np.float32)
        if self.frames > 1:
            curve[:-1] = (terms * valid).reshape(-1, self.frames - 1).sum(axis=0) / self.per_pair
        return curve

    def avr_curve(self, terms: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """K×M×T terms → length-T curve."""
        return (terms * valid).reshape(-1, self.frames).sum(axis=0) / self.per_frame


def _displacement_curves(x: np.ndarray, y: np.ndarray, present: np.ndarray, per: _PerPerson) -> dict:
    """jnt_next / jnt_avr: Euclidean joint displacement in pixels, masked per person and joint."""
    (x1, x0), (y1, y0) = _next(x), _next(y)
    dx, dy = x1 - x0, y1 - y0
    mean_x, seen = _frame_mean(x, present)
    mean_y, _ = _frame_mean(y, present)
    ax, ay = x - mean_x, y - mean_y
    return {
        "jnt_next": per.next_curve(np.sqrt(dx * dx + dy * dy), np.logical_and(*_next(present))),
        "jnt_avr": per.avr_curve(np.sqrt(ax * ax + ay * ay), present & seen),
    }


def _direction_curves(vec: Vec, valid: np.ndarray, per: _PerPerson, name: str) -> dict[str, np.ndarray]:
    """``{name}_next`` / ``{name}_avr`` for bones: 1 - cos between bone directions.

    The ``avr`` reference direction is that of the mean bone vector over the frames where the bone
    is valid (the reference's bone of mean positions, without the absent frames' zeros).
    """
    unit, valid = _units(vec, valid)
    mean_x, seen = _frame_mean(vec[0], valid)
    mean_y, _ = _frame_mean(vec[1], valid)
    mean_unit, seen = _units((mean_x, mean_y), seen)
    (ux1, ux0), (uy1, uy0) = _next(unit[0]), _next(unit[1])
    return {
        f"{name}_next": per.next_curve(_one_minus_cos((ux1, uy1), (ux0, uy0)), np.logical_and(*_next(valid))),
        f"{name}_avr": per.avr_curve(_one_minus_cos(unit, mean_unit), valid & seen),
    }


def _angle_curves(arm1: Vec, arm2: Vec, valid: np.ndarray, per: _PerPerson, name: str) -> dict:
    """``{name}_next`` / ``{name}_avr``: A = 1 - cos of the angle between two arms, per person and vertex."""
    unit1, valid = _units(arm1, valid)
    unit2, valid = _units(arm2, valid)
    a = _one_minus_cos(unit1, unit2)
    a_mean, seen = _frame_mean(a, valid)
    a1, a0 = _next(a)
    return {
        f"{name}_next": per.next_curve(np.abs(a1 - a0), np.logical_and(*_next(valid))),
        f"{name}_avr": per.avr_curve(np.abs(a - a_mean), valid & seen),
    }


def curves(keypoint: np.ndarray, keypoint_score: np.ndarray) -> dict[str, np.ndarray]:
    """All ten single-definition curves (float32, length T) of an M×T×17×2 pose and its M×T×17 scores."""
    present = np.ascontiguousarray(presence(keypoint, keypoint_score).transpose(2, 0, 1))  # V×M×T
    planes = np.ascontiguousarray(keypoint.transpose(3, 2, 0, 1), dtype=np.float32)  # 2×V×M×T
    np.copyto(planes, 0, where=~present)  # absent joints (also NaN/inf ones) become exact zeros
    x, y = planes[0], planes[1]
    per = _PerPerson(present.any(axis=0))
    out = _displacement_curves(x, y, present, per)

    def mid(a: int, b: int) -> tuple[Vec, np.ndarray]:
        """Midpoint of two joints (1×M×T planes) and whether both are present."""
        point = ((x[a:a + 1] + x[b:b + 1]) * 0.5, (y[a:a + 1] + y[b:b + 1]) * 0.5)
        return point, present[a:a + 1] & present[b:b + 1]

    hip_mid, hips = mid(*skeleton.HIPS)
    shoulder_mid, shoulders = mid(*skeleton.SHOULDERS)

    end_x, end_y, end_present = x[_BONE_END], y[_BONE_END], present[_BONE_END]
    end_x[NOSE:NOSE + 1], end_y[NOSE:NOSE + 1] = shoulder_mid
    end_present[NOSE:NOSE + 1] = shoulders
    out.update(_direction_curves((end_x - x, end_y - y), present & end_present, per, "boneL"))
    out.update(_direction_curves((hip_mid[0] - x, hip_mid[1] - y), present & hips, per, "boneC"))

    vx, vy = x[_ANGLE_VERTEX], y[_ANGLE_VERTEX]
    local_arm1 = (x[_ANGLE_END1] - vx, y[_ANGLE_END1] - vy)
    local_arm2 = (x[_ANGLE_END2] - vx, y[_ANGLE_END2] - vy)
    local_valid = present[_ANGLE_VERTEX] & present[_ANGLE_END1] & present[_ANGLE_END2]
    out.update(_angle_curves(local_arm1, local_arm2, local_valid, per, "angL"))

    centre_arm = (vx - hip_mid[0], vy - hip_mid[1])
    trunk = (shoulder_mid[0] - hip_mid[0], shoulder_mid[1] - hip_mid[1])  # 1×M×T, broadcasts
    centre_valid = present[_ANGLE_VERTEX] & hips & shoulders
    out.update(_angle_curves(centre_arm, trunk, centre_valid, per, "angC"))
    return out
