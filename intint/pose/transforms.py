"""The train and test pipelines of the keypoint clips (docs/method.md §4).

* test: compact → fixed resize to the test size, a ``Pipeline`` of steps (deterministic; the
  test-time flip is done on heatmaps);
* train: compact → keep-ratio resize (short side) → random resized crop → fixed resize → random flip,
  fused into one affine map of the coordinates (``FusedTrainPipeline``), whose ``maps`` the loader
  also uses batched. The step-by-step chain it reproduces lives with the tests
  (``tests/reference/staged_pipeline.py``).

The single operations (compact box, resizes, crop box) are in ``intint.pose.keypoint_ops``.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from intint.pose import skeleton
from intint.pose.keypoint_maps import Bounds, apply_maps_planar, nonzero_bounds
from intint.pose.keypoint_ops import (
    Shape,
    check_clip,
    check_crop_ranges,
    check_shape,
    compact_box,
    crop_box_from_uniforms,
    pose_compact,
    resize,
)

# Two Python floats rounded to float32 (the reference's float32 scale factors): one pack/unpack is
# cheaper than float(np.float32(x)) twice, and this runs for every training clip.
_F32_PAIR = struct.Struct("=ff")

Rng = np.random.Generator | None
StepOut = tuple[np.ndarray, np.ndarray, Shape]
Step = Callable[[np.ndarray, np.ndarray, Shape, Rng], StepOut]


@dataclass(frozen=True)
class PipelineConfig:
    """Spatial pipeline settings; defaults are the FineGYM configs (docs/method.md §4.1).

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


@dataclass(frozen=True)
class Compact:
    """Pipeline step: ``pose_compact`` (the crop quadruple is not needed for keypoints)."""

    padding: float
    threshold: float
    hw_ratio: float | None
    allow_imgpad: bool

    @classmethod
    def from_config(cls, cfg: PipelineConfig) -> Compact:
        return cls(cfg.padding, cfg.threshold, cfg.hw_ratio, cfg.allow_imgpad)

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


class _ClipPipeline(ABC):
    """The call of every pipeline: ``(kp, score, (h, w), rng) -> (kp, score, (h, w))``.

    Keypoints and scores are cast to float32 first (the reference's PoseDecode) and checked; the
    inputs are never written. ``rng`` may be None for a pipeline without random steps (the test
    pipeline). ``persons`` keeps only the first person slots of the output (after every step, so the
    compact box still frames everyone).
    """

    def __call__(
        self,
        keypoint: np.ndarray,
        score: np.ndarray,
        img_shape: Sequence[int],
        rng: np.random.Generator | None = None,
        *,
        persons: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, Shape]:
        kp = np.asarray(keypoint, dtype=np.float32)
        sc = np.asarray(score, dtype=np.float32)
        check_clip(kp, sc)
        return self._run(kp, sc, img_shape, rng, persons)

    @abstractmethod
    def _run(self, kp: np.ndarray, sc: np.ndarray, img_shape: Sequence[int], rng: Rng,
             persons: int | None) -> tuple[np.ndarray, np.ndarray, Shape]:
        """The pipeline's own work on checked float32 clips."""


@dataclass(frozen=True)
class Pipeline(_ClipPipeline):
    """A sequence of steps, each called as ``(kp, score, (h, w), rng) -> (kp, score, (h, w))``."""

    steps: tuple[Step, ...]

    def _run(self, kp: np.ndarray, sc: np.ndarray, img_shape: Sequence[int], rng: Rng,
             persons: int | None) -> tuple[np.ndarray, np.ndarray, Shape]:
        shape = check_shape(img_shape)
        for step in self.steps:
            kp, sc, shape = step(kp, sc, shape, rng)
        return kp[:persons].astype(np.float32, copy=False), sc[:persons], (int(shape[0]), int(shape[1]))


@dataclass(frozen=True)
class FusedTrainPipeline(_ClipPipeline):
    """The training chain (compact → keep-ratio resize → random resized crop → fixed resize → random
    flip) as one affine map of the coordinates, with the same call signature as ``Pipeline``.

    Every step only scales or shifts each axis, so the chain is ``x' = a·x + b`` per axis; the one
    non-affine detail is PoseCompact's shift of non-zero coordinates only, so exact zeros (absent joints)
    get their own offset, ``b0``, exactly where the staged chain leaves them at 0 before the crop moves
    them. Box and crop arithmetic is scalar Python on the reference's integer sizes, the randomness is
    one ``rng.random(2 * 10 + 3)`` draw (crop candidates, offsets, flip) — the same numbers, in the same
    order, as the staged chain (``tests/reference/staged_pipeline.py``) consumes — and the coordinates are
    touched by a handful of array operations for a whole batch of clips (``maps`` computes every clip's
    map, ``keypoint_maps.apply_maps_planar`` / ``loader.device.apply_maps`` apply them in a worker / on
    the training device; a single clip is a batch of one).

    Coordinates agree with the staged chain to float32 rounding (≈1e-5 px): a product of factors
    replaces the sequential float32 multiplications. One corner differs: the staged flip leaves a
    coordinate that lands exactly on x = 0 after the crop and resize at 0, the fused one maps it to W.
    """

    cfg: PipelineConfig
    max_attempts: int = 10

    def __post_init__(self) -> None:
        check_crop_ranges(self.cfg.area_range, self.cfg.aspect_ratio_range)

    def _run(self, kp: np.ndarray, sc: np.ndarray, img_shape: Sequence[int], rng: Rng,
             persons: int | None) -> tuple[np.ndarray, np.ndarray, Shape]:
        """One clip is a batch of one: ``maps`` and ``apply_maps_planar`` hold the maths."""
        if rng is None:
            raise ValueError("train pipeline needs a Generator (rng)")
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
        coordinates, offset of zeros; [x, y] each) and the flip mask B, for ``loader.device.apply_maps``.

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
        for callers that found the bounds another way (``keypoint_maps.float16_bounds``)."""
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
        h, w = check_shape(img_shape)
        box = compact_box(bounds, h, w, cfg.padding, cfg.threshold, cfg.hw_ratio, cfg.allow_imgpad)
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
        bx1, by1, bx2, by2 = crop_box_from_uniforms(rh, rw, u, cfg.area_range, cfg.aspect_ratio_range,
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


def train_pipeline(cfg: PipelineConfig) -> FusedTrainPipeline:
    """compact → keep-ratio resize (short side) → random resized crop → fixed resize → random flip,
    fused into one coordinate transform (``FusedTrainPipeline``)."""
    return FusedTrainPipeline(cfg)


def test_pipeline(cfg: PipelineConfig) -> Pipeline:
    """compact → fixed resize to the test size (deterministic; test-time flip is done on heatmaps)."""
    h, w = cfg.test_hw
    return Pipeline((Compact.from_config(cfg), Resize((w, h), keep_ratio=False)))


# A module-level name starting with "test_" would be collected by pytest wherever it is imported.
test_pipeline.__test__ = False  # type: ignore[attr-defined]
