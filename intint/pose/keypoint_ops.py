"""Keypoint-space spatial operations of the pipelines (docs/method.md §4): check a clip, PoseCompact's
box and crop, keep-ratio and fixed resizes, and RandomResizedCrop's box from uniform draws.

PoseC3D never touches pixels before the heatmaps are drawn: these operations only move coordinates and
change the frame size, so each is a few vectorised array operations over the whole M×T×V clip. The
maths (including the reference's int() truncations and float32 scale factors) follows the reference so
the golden vectors reproduce exactly. ``intint.pose.transforms`` chains them into the train and test
pipelines.

Arrays: keypoint M×T×V×2 (x, y pixels) float32, keypoint_score M×T×V; ``img_shape`` is (h, w).
Absent joints are (0, 0) with score 0; compact leaves exact zeros at 0, as the reference does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from intint.pose.keypoint_maps import Bounds, nonzero_bounds

Shape = tuple[int, int]  # (h, w)
Box = tuple[int, int, int, int]  # (x1, y1, x2, y2), x2/y2 exclusive
Quadruple = tuple[float, float, float, float]  # (x, y, w, h) as fractions of the original frame


def check_clip(keypoint: np.ndarray, score: np.ndarray | None = None) -> None:
    """Raise naming the field unless ``keypoint`` is M×T×V×2 and ``score`` (if given) M×T×V."""
    if keypoint.ndim != 4 or keypoint.shape[-1] != 2:
        raise ValueError(f"field 'keypoint': expected M×T×V×2, got shape {keypoint.shape}")
    if score is not None and score.shape != keypoint.shape[:-1]:
        raise ValueError(
            f"field 'keypoint_score': expected shape {keypoint.shape[:-1]} (keypoint's M×T×V), "
            f"got {score.shape}"
        )


def check_shape(img_shape: Sequence[int]) -> Shape:
    """``img_shape`` as a positive (h, w) of Python ints, or a ValueError naming the field."""
    if len(img_shape) != 2:
        raise ValueError(f"field 'img_shape': expected (height, width), got {tuple(img_shape)}")
    h, w = int(img_shape[0]), int(img_shape[1])  # not a generator: this runs for every training clip
    if h <= 0 or w <= 0:
        raise ValueError(f"field 'img_shape': height and width must be positive, got {(h, w)}")
    return h, w


def compact_box(
    bounds: Bounds | None,
    h: int,
    w: int,
    padding: float,
    threshold: float,
    hw_ratio: float | tuple[float, float] | None,
    allow_imgpad: bool,
) -> Box | None:
    """PoseCompact's box from the non-zero bounds, in Python floats (float64) as the reference's scalar
    maths ran under NumPy 1.x; None where the reference leaves the frame unchanged.
    """
    if bounds is None:
        return None
    lo_x, lo_y, hi_x, hi_y = bounds
    if hi_x - lo_x < threshold or hi_y - lo_y < threshold:
        return None
    cx, cy = (hi_x + lo_x) / 2, (hi_y + lo_y) / 2
    half_w = (hi_x - lo_x) / 2 * (1 + padding)
    half_h = (hi_y - lo_y) / 2 * (1 + padding)
    if hw_ratio is not None:
        r_h, r_w = (hw_ratio, hw_ratio) if isinstance(hw_ratio, (int, float)) else hw_ratio
        half_h = max(r_h * half_w, half_h)
        half_w = max(1 / r_w * half_h, half_w)
    x1, x2, y1, y2 = cx - half_w, cx + half_w, cy - half_h, cy + half_h
    if allow_imgpad:
        return int(x1), int(y1), int(x2), int(y2)
    return int(max(0, x1)), int(max(0, y1)), int(min(w, x2)), int(min(h, y2))


def pose_compact(
    keypoint: np.ndarray,
    img_shape: Sequence[int],
    padding: float = 0.25,
    threshold: float = 10,
    hw_ratio: float | tuple[float, float] | None = 1.0,
    allow_imgpad: bool = True,
) -> tuple[np.ndarray, Shape, Quadruple]:
    """Crop the frame to the padded box around every non-zero coordinate of the clip (PoseCompact).

    The box spans all persons and frames; its half sizes grow by ``padding`` and, with ``hw_ratio``,
    the shorter side is widened to the ratio. Corners are truncated toward zero with ``int()`` (a box
    reaching above the frame can come out 1 px off square, as in the reference). If the tight box is
    smaller than ``threshold`` in either direction nothing changes. Non-finite coordinates become 0
    (absent), where the reference only handles NaN and would fail on an infinite box.
    Returns (new keypoint, new (h, w), crop_quadruple); the input is not modified.
    """
    check_clip(keypoint)
    h, w = check_shape(img_shape)
    kp = np.nan_to_num(np.array(keypoint, copy=True), nan=0.0, posinf=0.0, neginf=0.0)
    bounds = nonzero_bounds(np.array(kp.transpose(3, 0, 1, 2), order="C").reshape(1, 2, -1))
    box = compact_box(bounds[0], h, w, padding, threshold, hw_ratio, allow_imgpad)
    if box is None:
        return kp, (h, w), (0.0, 0.0, 1.0, 1.0)
    x1, y1, x2, y2 = box
    # Only non-zero coordinates move (absent joints stay exactly 0), each axis by its own mask.
    np.subtract(kp, np.array([x1, y1], dtype=kp.dtype), out=kp, where=kp != 0)
    quadruple = (x1 / w, y1 / h, (x2 - x1) / w, (y2 - y1) / h)
    return kp, (y2 - y1, x2 - x1), quadruple


def rescale_size(img_shape: Sequence[int], scale: float | tuple[float, float]) -> Shape:
    """mmcv 1.x ``rescale_size``: the keep-ratio target (h, w) for ``scale``.

    ``scale`` is a factor, or (w, h) bounds where -1 means unbounded: the factor is then
    min(long bound / long side, short bound / short side), e.g. (-1, 64) puts the short side at 64.
    """
    h, w = check_shape(img_shape)
    if isinstance(scale, (int, float)):
        if scale <= 0:
            raise ValueError(f"resize: scale factor must be positive, got {scale}")
        factor = float(scale)
    else:
        lo, hi = min(scale), max(scale)
        long_edge, short_edge = (math.inf, hi) if lo == -1 else (hi, lo)
        factor = min(long_edge / max(h, w), short_edge / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def resize(
    keypoint: np.ndarray,
    img_shape: Sequence[int],
    scale: float | tuple[int, int],
    keep_ratio: bool = True,
) -> tuple[np.ndarray, Shape]:
    """Rescale the frame (Resize): keep-ratio via ``rescale_size``, or to a fixed ``scale`` = (w, h).

    ``scale`` follows the reference configs' (w, h) order. All coordinates, zeros included, are
    multiplied by the per-axis float32 factors (new size / old size).
    """
    check_clip(keypoint)
    h, w = check_shape(img_shape)
    if keep_ratio:
        new_h, new_w = rescale_size((h, w), scale)
    else:
        if isinstance(scale, (int, float)) or len(scale) != 2 or min(scale) <= 0:
            raise ValueError(f"resize: keep_ratio=False needs a positive (w, h) size, got {scale!r}")
        new_w, new_h = int(scale[0]), int(scale[1])
    factors = np.array([new_w / w, new_h / h], dtype=np.float32)
    return keypoint * factors, (new_h, new_w)


def check_crop_ranges(area_range: tuple[float, float], aspect_ratio_range: tuple[float, float]) -> None:
    """RandomResizedCrop's ranges: 0 < area lo <= hi <= 1 and 0 < aspect lo <= hi."""
    if not 0 < area_range[0] <= area_range[1] <= 1:
        raise ValueError(f"random_resized_crop: area_range must satisfy 0 < lo <= hi <= 1, got {area_range}")
    if not 0 < aspect_ratio_range[0] <= aspect_ratio_range[1]:
        raise ValueError(f"random_resized_crop: bad aspect_ratio_range {aspect_ratio_range}")


def crop_box_from_uniforms(
    h: int,
    w: int,
    u: Sequence[float],
    area_range: tuple[float, float],
    aspect_ratio_range: tuple[float, float],
    max_attempts: int,
) -> Box:
    """The RandomResizedCrop box from ``2 * max_attempts + 2`` uniforms in [0, 1): log-uniform aspect
    ratios, uniform areas, then the integer offsets; the first candidate that fits, else the centred
    square of side min(h, w) (docs/method.md §4.3). Scalar Python maths: on ten candidates it is cheaper
    than NumPy's per-call overhead, and one vectorised draw replaces four Generator calls.
    """
    lo_ratio, hi_ratio = aspect_ratio_range
    log_lo, log_span = math.log(lo_ratio), math.log(hi_ratio / lo_ratio)
    area_lo, area_span = area_range[0] * (h * w), (area_range[1] - area_range[0]) * (h * w)
    for i in range(max_attempts):
        ratio = math.exp(log_lo + log_span * u[i])
        area = area_lo + area_span * u[max_attempts + i]
        cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if ch <= h and cw <= w:
            x1 = int(u[2 * max_attempts] * (w - cw + 1))  # uniform integer in [0, w - cw]
            y1 = int(u[2 * max_attempts + 1] * (h - ch + 1))
            return x1, y1, x1 + cw, y1 + ch
    side = min(h, w)
    x1, y1 = (w - side) // 2, (h - side) // 2
    return x1, y1, x1 + side, y1 + side
