"""The training pipeline step by step, as the reference runs it: the oracle the library's fused
``intint.pose.transforms.FusedTrainPipeline`` is checked against (same draws, same coordinates to float32
rounding), and whose single steps are checked against the reference's golden vectors.

compact → keep-ratio resize (short side) → random resized crop → fixed resize → random flip, each a
``Pipeline`` step; the crop and the flip draw from the sample's Generator in the order the fused
pipeline consumes its uniforms (2 × 10 + 2 for the crop, then one for the flip).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from intint.pose import skeleton
from intint.pose.keypoint_ops import (
    Box,
    Shape,
    check_clip,
    check_crop_ranges,
    check_shape,
    crop_box_from_uniforms,
)
from intint.pose.transforms import Compact, Pipeline, PipelineConfig, Resize, Rng, StepOut


def random_crop_box(
    img_shape: Sequence[int],
    rng: np.random.Generator,
    area_range: tuple[float, float] = (0.56, 1.0),
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
    max_attempts: int = 10,
) -> Box:
    """The RandomResizedCrop box: the first of ``max_attempts`` random (area, aspect) candidates that
    fits, at a uniform integer offset; else the centred square of side min(h, w) (docs/method.md §4.3).
    Draws ``2 * max_attempts + 2`` uniforms from ``rng`` in one call.
    """
    h, w = check_shape(img_shape)
    check_crop_ranges(area_range, aspect_ratio_range)
    u = rng.random(2 * max_attempts + 2).tolist()
    return crop_box_from_uniforms(h, w, u, area_range, aspect_ratio_range, max_attempts)


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
    check_clip(keypoint)
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
    pixel columns instead (docs/method.md §9 item 21, ``heatmaps.render(flip_double=True)``).
    """
    check_clip(keypoint, score)
    if len(flip_index) != keypoint.shape[2]:
        raise ValueError(f"flip: flip_index has {len(flip_index)} entries for V={keypoint.shape[2]} joints")
    _, w = check_shape(img_shape)
    x = keypoint[..., 0]
    new_x = np.where(x != 0, w - x, x)
    out = np.stack([new_x, keypoint[..., 1]], axis=-1).astype(keypoint.dtype, copy=False)
    order = np.asarray(flip_index)
    return out[:, :, order], score[:, :, order]


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


def staged_train_pipeline(cfg: PipelineConfig) -> Pipeline:
    """The training chain step by step, as the reference runs it: the readable specification the fused
    ``train_pipeline`` is checked against (same draws, same coordinates to float32 rounding)."""
    h, w = cfg.train_hw
    return Pipeline((
        Compact.from_config(cfg),
        Resize((-1, cfg.train_short_side), keep_ratio=True),
        RandomResizedCrop(cfg.area_range, cfg.aspect_ratio_range),
        Resize((w, h), keep_ratio=False),
        RandomFlip(cfg.flip_ratio, tuple(cfg.flip_index)),
    ))
