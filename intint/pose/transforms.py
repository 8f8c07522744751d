"""Keypoint-space spatial transforms and the train/test pipelines (spec §4).

PoseC3D never touches pixels before the heatmaps are drawn: compact, resize, crop and flip only move
coordinates and change the frame size, so each transform here is a few vectorised array operations
over the whole M×T×V clip. The maths (including the reference's int() truncations, float32 scale
factors and the W - x flip) follows the reference so the golden vectors reproduce exactly.

Arrays: keypoint M×T×V×2 (x, y pixels) float32, keypoint_score M×T×V; ``img_shape`` is (h, w).
Absent joints are (0, 0) with score 0; compact and flip leave exact zeros at 0, as the reference does.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from intint.pose import skeleton
from intint.pose.keypoint_maps import Bounds, apply_maps_planar, nonzero_bounds

Shape = tuple[int, int]  # (h, w)
Box = tuple[int, int, int, int]  # (x1, y1, x2, y2), x2/y2 exclusive
Quadruple = tuple[float, float, float, float]  # (x, y, w, h) as fractions of the original frame
# Two Python floats rounded to float32 (the reference's float32 scale factors): one pack/unpack is ~8x
# cheaper than float(np.float32(x)) twice, and this runs for every training clip.
_F32_PAIR = struct.Struct("=ff")


def _check_clip(keypoint: np.ndarray, score: np.ndarray | None = None) -> None:
    if keypoint.ndim != 4 or keypoint.shape[-1] != 2:
        raise ValueError(f"field 'keypoint': expected M×T×V×2, got shape {keypoint.shape}")
    if score is not None and score.shape != keypoint.shape[:-1]:
        raise ValueError(
            f"field 'keypoint_score': expected shape {keypoint.shape[:-1]} (keypoint's M×T×V), "
            f"got {score.shape}"
        )


def _check_shape(img_shape: Sequence[int]) -> Shape:
    if len(img_shape) != 2:
        raise ValueError(f"field 'img_shape': expected (height, width), got {tuple(img_shape)}")
    h, w = int(img_shape[0]), int(img_shape[1])  # not a generator: this runs for every training clip
    if h <= 0 or w <= 0:
        raise ValueError(f"field 'img_shape': height and width must be positive, got {(h, w)}")
    return h, w


def _compact_box(
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
    _check_clip(keypoint)
    h, w = _check_shape(img_shape)
    kp = np.nan_to_num(np.array(keypoint, copy=True), nan=0.0, posinf=0.0, neginf=0.0)
    bounds = nonzero_bounds(np.array(kp.transpose(3, 0, 1, 2), order="C").reshape(1, 2, -1))
    box = _compact_box(bounds[0], h, w, padding, threshold, hw_ratio, allow_imgpad)
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
    h, w = _check_shape(img_shape)
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
    _check_clip(keypoint)
    h, w = _check_shape(img_shape)
    if keep_ratio:
        new_h, new_w = rescale_size((h, w), scale)
    else:
        if isinstance(scale, (int, float)) or len(scale) != 2 or min(scale) <= 0:
            raise ValueError(f"resize: keep_ratio=False needs a positive (w, h) size, got {scale!r}")
        new_w, new_h = int(scale[0]), int(scale[1])
    factors = np.array([new_w / w, new_h / h], dtype=np.float32)
    return keypoint * factors, (new_h, new_w)


def _check_crop_ranges(area_range: tuple[float, float], aspect_ratio_range: tuple[float, float]) -> None:
    if not 0 < area_range[0] <= area_range[1] <= 1:
        raise ValueError(f"random_resized_crop: area_range must satisfy 0 < lo <= hi <= 1, got {area_range}")
    if not 0 < aspect_ratio_range[0] <= aspect_ratio_range[1]:
        raise ValueError(f"random_resized_crop: bad aspect_ratio_range {aspect_ratio_range}")


def _crop_box_from_uniforms(
    h: int,
    w: int,
    u: Sequence[float],
    area_range: tuple[float, float],
    aspect_ratio_range: tuple[float, float],
    max_attempts: int,
) -> Box:
    """The RandomResizedCrop box from ``2 * max_attempts + 2`` uniforms in [0, 1): log-uniform aspect
    ratios, uniform areas, then the integer offsets. Scalar Python maths: on ten candidates it is several
    times cheaper than NumPy's per-call overhead, and one vectorised draw replaces four Generator calls.
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


def random_crop_box(
    img_shape: Sequence[int],
    rng: np.random.Generator,
    area_range: tuple[float, float] = (0.56, 1.0),
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
    max_attempts: int = 10,
) -> Box:
    """The RandomResizedCrop box: the first of ``max_attempts`` random (area, aspect) candidates that
    fits, at a uniform integer offset; else the centred square of side min(h, w) (spec §4.3).
    Draws ``2 * max_attempts + 2`` uniforms from ``rng`` in one call.
    """
    h, w = _check_shape(img_shape)
    _check_crop_ranges(area_range, aspect_ratio_range)
    u = rng.random(2 * max_attempts + 2).tolist()
    return _crop_box_from_uniforms(h, w, u, area_range, aspect_ratio_range, max_attempts)


def random_resized_crop(
    keypoint: np.ndarray,
    img_shape: Sequence[int],
    rng: np.random.Generator,
    area_range: tuple[float, float] = (0.56, 1.0),
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[np.ndarray, Shape]:
    """Crop a random box (``random_crop_box``) and shift every coordinate by its origin.

    Absent joints move too and stop being exactly 0 (as in the reference); their zero score keeps
    them out of the heatmaps.
    """
    _check_clip(keypoint)
    x1, y1, x2, y2 = random_crop_box(img_shape, rng, area_range, aspect_ratio_range)
    return keypoint - np.array([x1, y1], dtype=keypoint.dtype), (y2 - y1, x2 - x1)


def flip(
    keypoint: np.ndarray,
    score: np.ndarray,
    img_shape: Sequence[int],
    flip_index: Sequence[int] = skeleton.FLIP_INDEX,
) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal flip (training Flip): every non-zero x becomes W - x, x = 0 stays 0, and joints
    (with their scores) swap left/right through ``flip_index``.

    W - x (not W - 1 - x) is the reference's training convention; the test-time heatmap flip mirrors
    pixel columns instead (spec §9 item 21, ``heatmaps.render(flip_double=True)``).
    """
    _check_clip(keypoint, score)
    if len(flip_index) != keypoint.shape[2]:
        raise ValueError(f"flip: flip_index has {len(flip_index)} entries for V={keypoint.shape[2]} joints")
    _, w = _check_shape(img_shape)
    x = keypoint[..., 0]
    new_x = np.where(x != 0, w - x, x)
    out = np.stack([new_x, keypoint[..., 1]], axis=-1).astype(keypoint.dtype, copy=False)
    order = np.asarray(flip_index)
    return out[:, :, order], score[:, :, order]


# --------------------------------------------------------------------------------------------------
# Pipelines

Rng = np.random.Generator | None
StepOut = tuple[np.ndarray, np.ndarray, Shape]
Step = Callable[[np.ndarray, np.ndarray, Shape, Rng], StepOut]


@dataclass(frozen=True)
class PipelineConfig:
    """Spatial pipeline settings; defaults are the FineGYM configs (spec §4.1).

    Sizes are (h, w). ``train_short_side`` is the keep-ratio resize before the random crop.
    """

    train_hw: tuple[int, int] = (56, 56)
    test_hw: tuple[int, int] = (64, 64)
    train_short_side: int = 64
    padding: float = 0.25
    threshold: float = 10
    hw_ratio: float | None = 1.0
    allow_imgpad: bool = True
    area_range: tuple[float, float] = (0.56, 1.0)
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3)
    flip_ratio: float = 0.5
    flip_index: tuple[int, ...] = field(default=skeleton.FLIP_INDEX)

    def __post_init__(self) -> None:
        for name in ("train_hw", "test_hw"):
            size = getattr(self, name)
            if len(size) != 2 or min(size) <= 0:
                raise ValueError(f"PipelineConfig.{name} must be a positive (h, w), got {size}")
        if self.train_short_side <= 0:
            raise ValueError(f"PipelineConfig.train_short_side must be positive, got {self.train_short_side}")
        if not 0.0 <= self.flip_ratio <= 1.0:
            raise ValueError(f"PipelineConfig.flip_ratio must be in [0, 1], got {self.flip_ratio}")


def preset_pipeline(dataset: str, **overrides: object) -> PipelineConfig:
    """The reference sizes per dataset: FineGYM trains 56×56 / tests 64×64, HMDB51 48×48 / 56×56
    (spec §4.1-4.2, §9 item 17). Any field can be overridden by keyword.
    """
    presets = {
        "finegym": PipelineConfig(train_hw=(56, 56), test_hw=(64, 64)),
        "hmdb51": PipelineConfig(train_hw=(48, 48), test_hw=(56, 56)),
    }
    if dataset not in presets:
        raise ValueError(f"preset_pipeline: unknown dataset {dataset!r}, expected one of {sorted(presets)}")
    return replace(presets[dataset], **overrides)


@dataclass(frozen=True)
class Compact:
    """Pipeline step: ``pose_compact`` (the crop quadruple is not needed for keypoints)."""

    padding: float
    threshold: float
    hw_ratio: float | None
    allow_imgpad: bool

    def __call__(self, kp: np.ndarray, score: np.ndarray, img_shape: Shape, rng: Rng) -> StepOut:
        kp, shape, _ = pose_compact(
            kp, img_shape, self.padding, self.threshold, self.hw_ratio, self.allow_imgpad
        )
        return kp, score, shape


@dataclass(frozen=True)
class Resize:
    """Pipeline step: ``resize``."""

    scale: tuple[int, int]  # (w, h), -1 = unbounded (keep ratio)
    keep_ratio: bool

    def __call__(self, kp: np.ndarray, score: np.ndarray, img_shape: Shape, rng: Rng) -> StepOut:
        kp, shape = resize(kp, img_shape, self.scale, self.keep_ratio)
        return kp, score, shape


@dataclass(frozen=True)
class RandomResizedCrop:
    """Pipeline step: ``random_resized_crop`` from the sample's Generator."""

    area_range: tuple[float, float]
    aspect_ratio_range: tuple[float, float]

    def __call__(self, kp: np.ndarray, score: np.ndarray, img_shape: Shape, rng: Rng) -> StepOut:
        if rng is None:
            raise ValueError("RandomResizedCrop needs a Generator (rng)")
        kp, shape = random_resized_crop(kp, img_shape, rng, self.area_range, self.aspect_ratio_range)
        return kp, score, shape


@dataclass(frozen=True)
class RandomFlip:
    """Pipeline step: ``flip`` with probability ``ratio`` (one draw from the sample's Generator)."""

    ratio: float
    flip_index: tuple[int, ...]

    def __call__(self, kp: np.ndarray, score: np.ndarray, img_shape: Shape, rng: Rng) -> StepOut:
        if rng is None:
            raise ValueError("RandomFlip needs a Generator (rng)")
        if rng.random() < self.ratio:
            kp, score = flip(kp, score, img_shape, self.flip_index)
        return kp, score, tuple(img_shape)


@dataclass(frozen=True)
class Pipeline:
    """A sequence of steps, called as ``(kp, score, (h, w), rng) -> (kp, score, (h, w))``.

    Keypoints are cast to float32 first (the reference's PoseDecode); ``rng`` may be None for a
    pipeline without random steps (the test pipeline).
    """

    steps: tuple[Step, ...]

    def __call__(
        self,
        keypoint: np.ndarray,
        score: np.ndarray,
        img_shape: Sequence[int],
        rng: np.random.Generator | None = None,
        *,
        persons: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, Shape]:
        """``persons`` keeps only the first person slots of the output (after every step, so the
        compact box still frames everyone)."""
        kp = np.asarray(keypoint, dtype=np.float32)
        sc = np.asarray(score, dtype=np.float32)
        _check_clip(kp, sc)
        shape = _check_shape(img_shape)
        for step in self.steps:
            kp, sc, shape = step(kp, sc, shape, rng)
        return kp[:persons].astype(np.float32, copy=False), sc[:persons], (int(shape[0]), int(shape[1]))


def _compact(cfg: PipelineConfig) -> Compact:
    return Compact(cfg.padding, cfg.threshold, cfg.hw_ratio, cfg.allow_imgpad)


@dataclass(frozen=True)
class FusedTrainPipeline:
    """The training chain (compact → keep-ratio resize → random resized crop → fixed resize → random
    flip) as one affine map of the coordinates, with the same call signature as ``Pipeline``.

    Every step only scales or shifts each axis, so the chain is ``x' = a·x + b`` per axis; the one
    non-affine detail is PoseCompact's shift of non-zero coordinates only, so exact zeros (absent joints)
    get their own offset, ``b0``, exactly where the staged chain leaves them at 0 before the crop moves
    them. Box and crop arithmetic is scalar Python on the reference's integer sizes, the randomness is
    one ``rng.random(2 * 10 + 3)`` draw (crop candidates, offsets, flip) — the same numbers, in the same
    order, as the staged ``staged_train_pipeline`` consumes — and the coordinates are touched by a
    handful of array operations for a whole batch of clips (``maps`` computes every clip's map,
    ``clipmap.apply_maps_planar`` / ``apply_maps`` apply them in a worker / on the training device; a single
    clip is a batch of one).

    Coordinates agree with the staged chain to float32 rounding (≈1e-5 px): a product of factors
    replaces the sequential float32 multiplications. One corner differs: the staged flip leaves a
    coordinate that lands exactly on x = 0 after the crop and resize at 0, the fused one maps it to W.
    """

    cfg: PipelineConfig
    max_attempts: int = 10

    def __post_init__(self) -> None:
        _check_crop_ranges(self.cfg.area_range, self.cfg.aspect_ratio_range)

    def __call__(
        self,
        keypoint: np.ndarray,
        score: np.ndarray,
        img_shape: Sequence[int],
        rng: np.random.Generator | None = None,
        *,
        persons: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, Shape]:
        """Returns new arrays (the inputs are never written); ``persons`` as in ``Pipeline``. One clip is
        a batch of one: ``maps`` and ``apply_maps_planar`` hold the maths."""
        if rng is None:
            raise ValueError("train pipeline needs a Generator (rng)")
        kp = np.asarray(keypoint, dtype=np.float32)
        sc = np.asarray(score, dtype=np.float32)
        _check_clip(kp, sc)
        m = kp.shape[0]
        rows = np.array(kp.transpose(3, 0, 1, 2), order="C")[None]  # our own planar copy, 1×2×M×T×V
        uniforms = rng.random((1, 2 * self.max_attempts + 3))
        coef, flipped = self.maps(rows, [m], [img_shape], uniforms)
        k = len(range(m)[:persons])
        out, out_score = apply_maps_planar(rows, sc[None], coef, flipped, [m], k, self.cfg.flip_index)
        return out[0], out_score[0], self.cfg.train_hw

    def maps(
        self,
        rows: np.ndarray,
        persons: Sequence[int],
        img_shapes: Sequence[Sequence[int]],
        uniforms: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every clip's map for a batch of B clips: coefficients B×3×2 float32 (scale, offset of non-zero
        coordinates, offset of zeros; [x, y] each) and the flip mask B, for ``clipmap.apply_maps``.

        ``rows`` B×2×M×L×V (float32, the x then the y plane of every clip; NaN/inf are zeroed in place)
        hold clip i's ``persons[i]`` person slots first and zeros after them (a padded slot has no
        non-zero coordinate, so it does not move the compact box); ``uniforms`` B×(2·max_attempts + 3)
        are each clip's draws, the numbers ``rng.random(2 * max_attempts + 3)`` gives ``__call__``.
        Why split from ``apply_maps``: the map needs every person's bounds (the loader's worker has
        them), applying it is a few array operations the training device can do on the clip as stored
        (``heatmaps_on="device"`` ships float16 clips and maps: half the bytes, and no per-clip work left
        in the worker but this).
        """
        if rows.ndim != 5 or rows.shape[1] != 2 or rows.dtype != np.float32:
            raise ValueError(f"field 'keypoint': expected float32 B×2×M×T×V, got {rows.dtype} {rows.shape}")
        b = rows.shape[0]
        if len(persons) != b or len(img_shapes) != b or len(uniforms) != b:
            raise ValueError(f"maps: {b} clips, {len(persons)} person counts, {len(img_shapes)} image shapes "
                             f"and {len(uniforms)} rows of uniforms disagree")
        return self.maps_from_bounds(nonzero_bounds(rows.reshape(b, 2, -1)), img_shapes, uniforms)

    def maps_from_bounds(
        self,
        bounds: Sequence[Bounds | None],
        img_shapes: Sequence[Sequence[int]],
        uniforms: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``maps`` from each clip's non-zero bounds (lo_x, lo_y, hi_x, hi_y), None where an axis has none:
        for callers that found the bounds another way (``clipmap.float16_bounds``)."""
        b = len(bounds)
        maps = [self._affine(bounds[i], img_shapes[i], uniforms[i].tolist()) for i in range(b)]
        coef = np.array([c for c, _ in maps], dtype=np.float32).reshape(b, 3, 2)
        return coef, np.array([flip for _, flip in maps], dtype=bool).reshape(b)

    def _affine(self, bounds: Bounds | None, img_shape: Sequence[int],
                u: list[float]) -> tuple[tuple[list[float], list[float], list[float]], bool]:
        """The clip's map ``x' = a·x + b`` per axis from its non-zero bounds and its uniforms: (scale,
        offset for non-zero coordinates, offset for zeros), each [x, y], and whether it flips. Scalar
        Python on the reference's integer sizes; the caller makes the float32 array."""
        cfg = self.cfg
        h, w = _check_shape(img_shape)
        box = _compact_box(bounds, h, w, cfg.padding, cfg.threshold, cfg.hw_ratio, cfg.allow_imgpad)
        x1, y1 = (0, 0) if box is None else box[:2]
        ch, cw = (h, w) if box is None else (box[3] - box[1], box[2] - box[0])
        if ch <= 0 or cw <= 0:
            raise ValueError(f"field 'img_shape': the compact box is empty, {(ch, cw)}")
        # keep-ratio resize to the short side (rescale_size with (-1, short): factor = short / min side);
        # the reference multiplies by float32(new / old) per axis
        factor = cfg.train_short_side / min(ch, cw)
        rh, rw = int(ch * factor + 0.5), int(cw * factor + 0.5)
        f1x, f1y = _F32_PAIR.unpack(_F32_PAIR.pack(rw / cw, rh / ch))  # rounded to float32
        attempts = self.max_attempts
        bx1, by1, bx2, by2 = _crop_box_from_uniforms(rh, rw, u, cfg.area_range, cfg.aspect_ratio_range,
                                                     attempts)
        th, tw = cfg.train_hw
        f2x, f2y = _F32_PAIR.unpack(_F32_PAIR.pack(tw / (bx2 - bx1), th / (by2 - by1)))
        # x' = ((x - x1)·f1 - bx1)·f2 for non-zero x, (0·f1 - bx1)·f2 for x = 0 (likewise y)
        scale = [f1x * f2x, f1y * f2y]
        offset = [(-x1 * f1x - bx1) * f2x, (-y1 * f1y - by1) * f2y]
        offset0 = [-bx1 * f2x, -by1 * f2y]
        flipped = u[2 * attempts + 2] < cfg.flip_ratio
        if flipped:  # W - x' for x' != 0
            scale[0], offset[0] = -scale[0], tw - offset[0]
            offset0[0] = tw - offset0[0] if offset0[0] != 0 else 0.0
        return (scale, offset, offset0), flipped


def staged_train_pipeline(cfg: PipelineConfig) -> Pipeline:
    """The training chain step by step, as the reference runs it: the readable specification the fused
    ``train_pipeline`` is checked against (same draws, same coordinates to float32 rounding)."""
    h, w = cfg.train_hw
    return Pipeline((
        _compact(cfg),
        Resize((-1, cfg.train_short_side), keep_ratio=True),
        RandomResizedCrop(cfg.area_range, cfg.aspect_ratio_range),
        Resize((w, h), keep_ratio=False),
        RandomFlip(cfg.flip_ratio, tuple(cfg.flip_index)),
    ))


def train_pipeline(cfg: PipelineConfig) -> FusedTrainPipeline:
    """compact → keep-ratio resize (short side) → random resized crop → fixed resize → random flip,
    fused into one coordinate transform (``FusedTrainPipeline``)."""
    return FusedTrainPipeline(cfg)


def test_pipeline(cfg: PipelineConfig) -> Pipeline:
    """compact → fixed resize to the test size (deterministic; test-time flip is done on heatmaps)."""
    h, w = cfg.test_hw
    return Pipeline((_compact(cfg), Resize((w, h), keep_ratio=False)))


# A module-level name starting with "test_" would be collected by pytest wherever it is imported.
test_pipeline.__test__ = False  # type: ignore[attr-defined]
