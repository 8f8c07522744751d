"""Test-time maths: late fusion, top-k / mean-class accuracy, confusion matrix, results JSON.

Pure NumPy on whole arrays (one row per video), so the same code scores a Ray evaluation job, a notebook or a
test. It follows the reference (docs/method.md §6.2, §6.4, §7): the rows are view-averaged probabilities
(softmax per view then the mean over views, ``intint.model.slowonly.average_views``); fusion is the plain sum
of the two pathways' probabilities (weights 1:1, no renormalisation); mean-class accuracy averages per-class
recall over every class that occurs in the labels *or* the predictions, so a class that is only ever
predicted counts as 0. The fusion weight chosen on the validation split is `intint.eval.fusion_tuning`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from intint.store import fsio

__all__ = [
    "as_scores",
    "as_labels",
    "fuse",
    "topk_accuracy",
    "mean_class_accuracy",
    "confusion_matrix",
    "pathway_metrics",
    "evaluate_scores",
    "write_results",
]


def _as_array(x: Any, name: str) -> np.ndarray:
    """NumPy view of a NumPy array or a (possibly GPU, bf16) torch tensor, without importing torch here."""
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().float().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object:
        raise TypeError(f"{name}: expected a numeric array, got dtype object")
    return arr


def as_scores(probs: Any, name: str = "probs") -> np.ndarray:
    """`probs` as a checked float64 N×C matrix of finite scores (ValueError naming `name` otherwise)."""
    arr = _as_array(probs, name).astype(np.float64, copy=False)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected N×C scores, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: {int((~np.isfinite(arr)).sum())} non-finite scores")
    return arr


def as_labels(labels: Any, n: int, num_classes: int, name: str = "labels") -> np.ndarray:
    """`labels` as checked int64 class ids, one per score row, each in [0, num_classes)."""
    arr = _as_array(labels, name)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name}: expected {n} labels (one per score row), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name}: expected integer class ids, got dtype {arr.dtype}")
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
        raise ValueError(
            f"{name}: {int(bad.sum())} labels outside [0, {num_classes}), first at row {int(np.argmax(bad))}"
            f" = {int(arr[bad][0])}"
        )
    return arr.astype(np.int64, copy=False)


def fuse(p_integrity: Any, p_intensity: Any, weights: Sequence[float] = (1.0, 1.0)) -> np.ndarray:
    """Late fusion: ``w0·p_integrity + w1·p_intensity``, not renormalised.

    The reference fuses with weights 1:1 (docs/method.md §7). Rows must be the same videos in the same
    order; the caller aligns them by key.
    """
    a = as_scores(p_integrity, "p_integrity")
    b = as_scores(p_intensity, "p_intensity")
    if a.shape != b.shape:
        raise ValueError(f"fuse: p_integrity {a.shape} and p_intensity {b.shape} differ in shape")
    if len(weights) != 2:
        raise ValueError(f"fuse: expected 2 weights (integrity, intensity), got {tuple(weights)}")
    return float(weights[0]) * a + float(weights[1]) * b


def topk_accuracy(probs: Any, labels: Any, k: int) -> float:
    """Fraction of videos whose label is among the ``k`` highest scores.

    Ties rank the lower class id first (as ``argmax`` does), so top-1 agrees with the confusion matrix and the
    result does not depend on a sort algorithm's tie order.
    """
    scores = as_scores(probs)
    y = as_labels(labels, scores.shape[0], scores.shape[1])
    if k < 1:
        raise ValueError(f"topk_accuracy: k must be >= 1, got {k}")
    if scores.shape[0] == 0:
        raise ValueError("topk_accuracy: no videos to score")
    own = scores[np.arange(len(y)), y][:, None]
    classes = np.arange(scores.shape[1])[None, :]
    rank = (scores > own).sum(axis=1) + ((scores == own) & (classes < y[:, None])).sum(axis=1)
    return float((rank < k).mean())


def confusion_matrix(pred: Any, labels: Any, num_classes: int) -> np.ndarray:
    """``num_classes×num_classes`` int64 counts, rows = true label, columns = predicted class."""
    p = _as_array(pred, "pred")
    if p.ndim != 1:
        raise ValueError(f"pred: expected one predicted class per video, got shape {p.shape}")
    p = as_labels(p, p.shape[0], num_classes, name="pred")
    y = as_labels(labels, p.shape[0], num_classes)
    flat = np.bincount(y * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _mean_class_from_confusion(cm: np.ndarray) -> float:
    occurs = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    totals = cm.sum(axis=1)[occurs]
    hits = np.diag(cm)[occurs]
    recall = np.divide(hits, totals, out=np.zeros(len(hits), dtype=np.float64), where=totals > 0)
    return float(recall.mean())


def mean_class_accuracy(probs: Any, labels: Any, num_classes: int) -> float:
    """Mean per-class recall over classes seen in labels or predictions (a predicted-only class adds 0)."""
    scores = as_scores(probs)
    if scores.shape[1] != num_classes:
        raise ValueError(
            f"mean_class_accuracy: scores have {scores.shape[1]} classes, expected {num_classes}"
        )
    if scores.shape[0] == 0:
        raise ValueError("mean_class_accuracy: no videos to score")
    return _mean_class_from_confusion(confusion_matrix(scores.argmax(axis=1), labels, num_classes))


def pathway_metrics(probs: Any, labels: Any, num_classes: int) -> dict[str, Any]:
    """``{top1, top5, mean_class, num_samples, confusion}`` for one score matrix (JSON-ready types)."""
    scores = as_scores(probs)
    if scores.shape[1] != num_classes:
        raise ValueError(f"scores have {scores.shape[1]} classes, expected num_classes={num_classes}")
    y = as_labels(labels, scores.shape[0], num_classes)
    cm = confusion_matrix(scores.argmax(axis=1), y, num_classes)
    return {
        "top1": topk_accuracy(scores, y, 1),
        "top5": topk_accuracy(scores, y, 5),
        "mean_class": _mean_class_from_confusion(cm),
        "num_samples": int(scores.shape[0]),
        "confusion": cm.tolist(),
    }


def evaluate_scores(
    p_integrity: Any | None,
    p_intensity: Any | None,
    labels: Any,
    num_classes: int,
    fusion_weights: Sequence[float] = (1.0, 1.0),
) -> dict[str, dict[str, Any]]:
    """Metrics per pathway and for their late fusion.

    Keys ``integrity``, ``intensity`` and ``fused`` (each from ``pathway_metrics``); a pathway given as
    ``None`` (one-pathway run) is left out, and so is ``fused``, which needs both.
    """
    results: dict[str, dict[str, Any]] = {}
    if p_integrity is None and p_intensity is None:
        raise ValueError("evaluate_scores: both pathways are None; nothing to evaluate")
    if p_integrity is not None:
        results["integrity"] = pathway_metrics(as_scores(p_integrity, "p_integrity"), labels, num_classes)
    if p_intensity is not None:
        results["intensity"] = pathway_metrics(as_scores(p_intensity, "p_intensity"), labels, num_classes)
    if p_integrity is not None and p_intensity is not None:
        results["fused"] = pathway_metrics(
            fuse(p_integrity, p_intensity, fusion_weights), labels, num_classes
        )
    return results


def write_results(results: Mapping[str, Any], path_or_url: str) -> None:
    """Write ``results`` as JSON atomically (``fsio.atomic_open``: temp name beside the target, then rename).

    A reader polling the file (a dashboard, a later job) never sees a half-written document.
    """
    text = json.dumps(results, indent=2, sort_keys=True, allow_nan=False) + "\n"
    with fsio.atomic_open(path_or_url) as f:
        f.write(text.encode("utf-8"))
