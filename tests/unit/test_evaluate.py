"""Evaluation maths against hand-computed values on small arrays."""

from __future__ import annotations

import json
import math

import fsspec
import numpy as np
import pytest
import torch

from intint.eval.metrics import (
    average_views,
    confusion_matrix,
    evaluate_scores,
    fuse,
    mean_class_accuracy,
    topk_accuracy,
    write_results,
)


def test_average_views_is_mean_of_per_view_softmax():
    # view 0: equal logits → (1/2, 1/2); view 1: logits (ln 3, 0) → (3/4, 1/4); mean → (5/8, 3/8)
    logits = np.array([[[0.0, 0.0], [math.log(3.0), 0.0]]])
    np.testing.assert_allclose(average_views(logits), [[0.625, 0.375]], rtol=0, atol=1e-12)
    # not the softmax of the mean logit, which would be softmax(ln3/2, 0) = (0.634, 0.366)
    shifted = average_views(logits + np.array([[[1000.0], [-1000.0]]]))
    np.testing.assert_allclose(shifted, [[0.625, 0.375]], rtol=0, atol=1e-12)


def test_average_views_accepts_torch_tensors():
    logits = torch.tensor([[[2.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]])
    probs = average_views(logits)
    e = math.exp(2.0)
    np.testing.assert_allclose(probs, [[e / (e + 2), 1 / (e + 2), 1 / (e + 2)], [1 / 3] * 3], atol=1e-6)


def test_fuse_is_weighted_sum_without_renormalisation():
    a = np.array([[0.2, 0.8], [0.9, 0.1]])
    b = np.array([[0.6, 0.4], [0.3, 0.7]])
    np.testing.assert_allclose(fuse(a, b), [[0.8, 1.2], [1.2, 0.8]])
    np.testing.assert_allclose(fuse(a, b, weights=(2.0, 0.5)), [[0.7, 1.8], [1.95, 0.55]])
    with pytest.raises(ValueError, match="differ in shape"):
        fuse(a, b[:1])


def test_topk_accuracy_hand_computed():
    probs = np.array(
        [
            [0.10, 0.60, 0.20, 0.10],  # label 1: rank 0
            [0.50, 0.10, 0.30, 0.10],  # label 2: rank 1
            [0.40, 0.30, 0.20, 0.10],  # label 3: rank 3
            [0.45, 0.45, 0.05, 0.05],  # label 1: tied with class 0, which ranks first
        ]
    )
    labels = np.array([1, 2, 3, 1])
    assert topk_accuracy(probs, labels, 1) == 0.25
    assert topk_accuracy(probs, labels, 2) == 0.75
    assert topk_accuracy(probs, labels, 3) == 0.75
    assert topk_accuracy(probs, labels, 4) == 1.0
    assert topk_accuracy(probs, labels, 5) == 1.0
    assert isinstance(topk_accuracy(probs, labels, 1), float)


def test_confusion_matrix_rows_are_labels():
    cm = confusion_matrix(np.array([0, 1, 1, 1, 3]), np.array([0, 0, 1, 1, 2]), num_classes=4)
    expected = np.array([[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(cm, expected)
    with pytest.raises(ValueError, match=r"labels: 1 labels outside \[0, 4\)"):
        confusion_matrix(np.array([0, 1]), np.array([0, 4]), num_classes=4)


def _one_hot_scores(pred: list[int], num_classes: int) -> np.ndarray:
    return np.eye(num_classes)[pred] * 0.9 + 0.01


def test_mean_class_accuracy_counts_predicted_only_class_as_zero():
    labels = np.array([0, 0, 1, 1, 2])
    probs = _one_hot_scores([0, 1, 1, 1, 3], num_classes=6)
    # recall: class 0 = 1/2, class 1 = 2/2, class 2 = 0/1, class 3 (only predicted) = 0; 4, 5 never occur
    assert mean_class_accuracy(probs, labels, 6) == pytest.approx((0.5 + 1.0 + 0.0 + 0.0) / 4)
    # the same predictions without the stray class-3 prediction average over three classes only
    probs_no_stray = _one_hot_scores([0, 1, 1, 1, 0], num_classes=6)
    assert mean_class_accuracy(probs_no_stray, labels, 6) == pytest.approx(1.5 / 3)


def test_evaluate_scores_per_pathway_and_fused():
    labels = np.array([0, 1, 2])
    p_integrity = np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8]])  # right, wrong, right
    p_intensity = np.array([[0.2, 0.7, 0.1], [0.0, 0.9, 0.1], [0.3, 0.3, 0.4]])  # wrong, right, right
    # fused: [0.9, 0.9, 0.2] (tie → class 0, right), [0.5, 1.3, 0.2] right, [0.4, 0.4, 1.2] right
    res = evaluate_scores(p_integrity, p_intensity, labels, num_classes=3)
    assert set(res) == {"integrity", "intensity", "fused"}
    assert res["integrity"]["top1"] == pytest.approx(2 / 3)
    assert res["intensity"]["top1"] == pytest.approx(2 / 3)
    assert res["fused"]["top1"] == 1.0
    assert res["fused"]["top5"] == 1.0
    assert res["integrity"]["mean_class"] == pytest.approx((1 + 0 + 1) / 3)
    assert res["fused"]["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert res["integrity"]["num_samples"] == 3
    for entry in res.values():
        assert all(type(entry[k]) is float for k in ("top1", "top5", "mean_class"))
    # weighting the integrity pathway 0 leaves the intensity result
    weighted = evaluate_scores(p_integrity, p_intensity, labels, 3, fusion_weights=(0.0, 1.0))
    assert weighted["fused"]["top1"] == pytest.approx(2 / 3)


def test_evaluate_scores_one_pathway_has_no_fused_entry():
    res = evaluate_scores(None, np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]), num_classes=2)
    assert set(res) == {"intensity"}
    assert res["intensity"]["top1"] == 0.5
    with pytest.raises(ValueError, match="expected 2 labels"):
        evaluate_scores(np.eye(2), None, np.array([0]), num_classes=2)
    with pytest.raises(ValueError, match="expected num_classes=3"):
        evaluate_scores(np.eye(2), None, np.array([0, 1]), num_classes=3)


def test_write_results_is_atomic_json(tmp_path):
    res = evaluate_scores(np.eye(3), np.eye(3)[::-1], np.array([0, 1, 2]), num_classes=3)
    target = tmp_path / "run" / "results.json"
    write_results(res, str(target))
    assert json.loads(target.read_text()) == res
    write_results({"integrity": {"top1": 0.5}}, str(target))  # overwrite in place
    assert json.loads(target.read_text()) == {"integrity": {"top1": 0.5}}
    assert [p.name for p in target.parent.iterdir()] == ["results.json"]  # no temp files left


def test_write_results_to_fsspec_url():
    url = "memory://intint-test-eval/out/results.json"
    write_results({"fused": {"top1": 1.0, "top5": 1.0, "mean_class": 1.0}}, url)
    with fsspec.open(url, "r") as f:
        assert json.load(f)["fused"]["top1"] == 1.0
    fs = fsspec.filesystem("memory")
    assert fs.ls("/intint-test-eval/out", detail=False) == ["/intint-test-eval/out/results.json"]
    fs.rm("/intint-test-eval", recursive=True)
