"""Evaluation maths against hand-computed values on small arrays; models built and loaded from checkpoints."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch

from intint import config
from intint.eval.metrics import (
    confusion_matrix,
    evaluate_scores,
    fuse,
    mean_class_accuracy,
    topk_accuracy,
    write_results,
)
from intint.eval.models import build_model, load_model, slowonly_config
from intint.model import checkpoint


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


# ---------------------------------------------------------------------------- models from the run config


def test_model_is_sized_by_the_run_config():
    cfg = config.tiny()
    net = slowonly_config(cfg.model, 7)
    assert (net.num_classes, net.stage_blocks, net.base_channels, net.dropout) == (
        7, tuple(cfg.model.stage_blocks), cfg.model.base_channels, cfg.model.dropout)
    model = build_model(dataclasses.replace(cfg, pathways="intensity"), 7)
    assert model.pathways == ("intensity",)
    assert model.recognizer("intensity").cfg == net


def _save_checkpoint(folder: Path, with_best: bool, num_classes: int | None = 3) -> dict[str, dict]:
    """A checkpoint of the tiny preset whose `model` and `best_model` weights differ; returns both."""
    cfg = config.tiny()
    torch.manual_seed(0)
    weights = {"last": build_model(cfg, 3).state_dict(), "best": build_model(cfg, 3).state_dict()}
    state = {"model": weights["last"], "epoch": 4}
    if num_classes is not None:
        state["num_classes"] = num_classes
    if with_best:
        state["best_model"] = weights["best"]
    checkpoint.save(str(folder), state, cfg.to_dict())
    return weights


def _same_weights(model: torch.nn.Module, state: dict) -> bool:
    own = model.state_dict()
    return own.keys() == state.keys() and all(torch.equal(own[k], v) for k, v in state.items())


def test_load_model_gives_the_weights_asked_for(tmp_path):
    weights = _save_checkpoint(tmp_path, with_best=True)
    assert not _same_weights(build_model(config.tiny(), 3), weights["best"])  # the two weight sets differ
    for choice in ("last", "best"):
        trained = load_model(str(tmp_path), choice, "cpu")
        assert _same_weights(trained.model, weights[choice]), choice
        assert not trained.model.training
        assert (trained.num_classes, trained.epoch, trained.device) == (3, 4, torch.device("cpu"))
        assert trained.cfg.to_dict() == config.tiny().to_dict()
    with pytest.raises(ValueError, match="'best' or 'last'"):
        load_model(str(tmp_path), "first", "cpu")


def test_best_weights_of_the_best_epoch_are_the_checkpoints_own(tmp_path):
    # a checkpoint saved at its best epoch holds no separate best_model
    weights = _save_checkpoint(tmp_path, with_best=False)
    assert _same_weights(load_model(str(tmp_path), "best", "cpu").model, weights["last"])


def test_load_model_takes_the_class_count_from_the_config_when_the_state_has_none(tmp_path):
    _save_checkpoint(tmp_path, with_best=False, num_classes=None)
    cfg = dataclasses.replace(config.tiny(), num_classes=3)
    trained = load_model(str(tmp_path), "last", "cpu", cfg=cfg)
    assert trained.num_classes == 3 and trained.cfg is cfg
