"""Late fusion with its weight chosen on the validation split, so fusing never loses accuracy there.

The paper fuses the pathways with a plain 1:1 sum (docs/method.md §7). With one weak pathway that sum can
fall below the better pathway alone. The tuned fusion `w·p_integrity + (1−w)·p_intensity` picks `w` from
a grid over [0, 1] by *validation* top-1: ties go to the `w` nearest 0.5, then to the smaller `w`, so
the choice is deterministic. The grid always holds 0.5, scored as the 1:1 sum itself (the same ranking),
and its ends 0 and 1 are each pathway alone; the tuned fusion is therefore never below the 1:1 sum, nor
below either pathway, on validation.

Test labels cannot reach the choice: `choose_weight` takes validation scores and labels only, and the test
split enters `fuse_test` as probabilities, fused with the already chosen weight. A run without a validation
split of its own (validation = test) reports no tuned fusion, only the reason (`absent_reason`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from intint.eval import metrics

__all__ = ["GRID_POINTS", "CHOICE_FIELDS", "ValidationScores", "FusionChoice", "weight_grid", "choose_weight",
           "fuse_test", "tuned_metrics", "absent_reason"]

GRID_POINTS = 21  # w = 0, 0.05, ..., 1
# What `fused_tuned` records of the choice besides its test metrics (see `FusionChoice.record`).
CHOICE_FIELDS = ("weight", "chosen_on", "grid_points", "val_top1", "val_top1_equal")


@dataclass(frozen=True)
class ValidationScores:
    """Both pathways' probabilities on the validation split and its labels: all the choice may see."""

    integrity: Any  # N×C
    intensity: Any  # N×C
    labels: Any  # N class ids
    split: str  # the split's name, recorded with the choice


@dataclass(frozen=True)
class FusionChoice:
    """The chosen weight `w` (Integrity; Intensity gets 1 − w) and what it scored on validation."""

    weight: float
    split: str
    val_top1: float  # the tuned fusion's validation top-1
    val_top1_equal: float  # the 1:1 sum's validation top-1 (w = 0.5)
    grid_points: int

    def record(self) -> dict[str, Any]:
        """The JSON fields `fused_tuned` carries besides its metrics."""
        return {"weight": self.weight, "chosen_on": self.split, "grid_points": self.grid_points,
                "val_top1": self.val_top1, "val_top1_equal": self.val_top1_equal}


def weight_grid(points: int = GRID_POINTS) -> np.ndarray:
    """`points` evenly spaced weights i / (points − 1) over [0, 1]; odd, so 0.5 is exactly on the grid."""
    if points < 3 or points % 2 == 0:
        raise ValueError(f"fusion grid: need an odd number of points >= 3 (0.5 on the grid), got {points}")
    return np.arange(points, dtype=np.float64) / (points - 1)


def _fused(p_integrity: np.ndarray, p_intensity: np.ndarray, weight: float) -> np.ndarray:
    """`w·a + (1−w)·b`, with w = 0.5 computed as the 1:1 sum `a + b` (the paper's fusion, same ranking)."""
    if weight == 0.5:
        return metrics.fuse(p_integrity, p_intensity, (1.0, 1.0))
    return metrics.fuse(p_integrity, p_intensity, (weight, 1.0 - weight))


def _hits(scores: np.ndarray, labels: np.ndarray) -> int:
    """Top-1 hits, ties to the lower class id (as `metrics.topk_accuracy` ranks them)."""
    return int((scores.argmax(axis=1) == labels).sum())


def choose_weight(val: ValidationScores, points: int = GRID_POINTS) -> FusionChoice:
    """The grid weight with the best validation top-1 (ties: nearest 0.5, then the smaller weight)."""
    a = metrics.as_scores(val.integrity, "val p_integrity")
    b = metrics.as_scores(val.intensity, "val p_intensity")
    if a.shape != b.shape:
        raise ValueError(f"fusion tuning: validation p_integrity {a.shape} and p_intensity {b.shape} differ")
    if a.shape[0] == 0:
        raise ValueError(f"fusion tuning: validation split {val.split!r} has no videos")
    labels = metrics.as_labels(val.labels, a.shape[0], a.shape[1], "val labels")
    grid = weight_grid(points)
    half = (points - 1) // 2  # grid[half] == 0.5; |i − half| is grid point i's distance from 0.5
    hits = [_hits(_fused(a, b, float(w)), labels) for w in grid]
    best = min(range(points), key=lambda i: (-hits[i], abs(i - half), i))
    n = a.shape[0]
    return FusionChoice(weight=float(grid[best]), split=val.split, val_top1=hits[best] / n,
                        val_top1_equal=hits[half] / n, grid_points=points)


def fuse_test(val: ValidationScores, test_integrity: Any, test_intensity: Any,
              points: int = GRID_POINTS) -> tuple[np.ndarray, FusionChoice]:
    """Choose `w` on `val`, then fuse the test probabilities with it; test labels are not an argument."""
    choice = choose_weight(val, points)
    a = metrics.as_scores(test_integrity, "test p_integrity")
    b = metrics.as_scores(test_intensity, "test p_intensity")
    return _fused(a, b, choice.weight), choice


def tuned_metrics(val: ValidationScores, test_integrity: Any, test_intensity: Any, test_labels: Any,
                  num_classes: int, points: int = GRID_POINTS) -> dict[str, Any]:
    """`fused_tuned` of results.json: the test metrics of the validation-tuned fusion and its choice."""
    fused, choice = fuse_test(val, test_integrity, test_intensity, points)
    return {**metrics.pathway_metrics(fused, test_labels, num_classes), **choice.record()}


def absent_reason(val_split: str | None, test_split: str, pathways: Sequence[str]) -> str | None:
    """Why a run has no tuned fusion, or None when it can have one (two pathways, a distinct validation
    split)."""
    if len(pathways) < 2:
        return "one-pathway run: nothing to fuse"
    if not val_split:
        return "no validation split to choose the fusion weight on"
    if val_split == test_split:
        return (f"the validation split {val_split!r} is the test split: a weight chosen there would be "
                "chosen with test labels")
    return None
