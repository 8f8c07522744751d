"""Fusion that never hurts (issue 14): the fusion weight is chosen on the validation split only, is never
below the paper's 1:1 sum on validation, and is reported beside it (results.json, ablation table, demo)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from intint.ablation import results_table
from intint.ablation.results_table import SplitPredictions
from intint.config import tiny
from intint.demo import run as demo_run
from intint.eval import fusion_tuning
from intint.eval.distributed import evaluate_test, flat_metrics, predict_split
from intint.eval.fusion_tuning import ValidationScores, choose_weight, fuse_test, tuned_metrics
from intint.eval.metrics import evaluate_scores, fuse, topk_accuracy
from intint.eval.models import build_model, num_classes_of

# Two-class scores where the Integrity pathway is right by a small margin and the Intensity pathway wrong by
# a large one: only w >= 0.9 on Integrity gets such a video right (0.1 + 0.45 w > 0.9 − 0.45 w).
WEAK_RIGHT, STRONG_WRONG = np.array([0.55, 0.45]), np.array([0.1, 0.9])


def _split(n: int, integrity_right: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`n` videos of class 0 where one pathway is weakly right and the other strongly wrong."""
    right, wrong = np.tile(WEAK_RIGHT, (n, 1)), np.tile(STRONG_WRONG, (n, 1))
    labels = np.zeros(n, np.int64)
    return (right, wrong, labels) if integrity_right else (wrong, right, labels)


def test_the_weight_is_the_validation_choice_even_where_test_would_choose_another() -> None:
    val_int, val_ins, val_labels = _split(6, integrity_right=True)  # validation wants w near 1
    test_int, test_ins, test_labels = _split(5, integrity_right=False)  # test would want w near 0
    val = ValidationScores(val_int, val_ins, val_labels, "val")

    choice = choose_weight(val)
    assert choice.weight == pytest.approx(0.9)  # the best on validation nearest 0.5 (0.9, 0.95 and 1 tie)
    assert (choice.val_top1, choice.val_top1_equal, choice.split) == (1.0, 0.0, "val")
    on_test = {float(w): topk_accuracy(fuse(test_int, test_ins, (w, 1 - w)), test_labels, 1)
               for w in fusion_tuning.weight_grid()}
    assert max(on_test, key=on_test.get) < 0.5 and max(on_test.values()) == 1.0  # test would pick w ≤ 0.1

    tuned = tuned_metrics(val, test_int, test_ins, test_labels, num_classes=2)
    assert tuned["weight"] == choice.weight and tuned["chosen_on"] == "val"
    assert tuned["top1"] == on_test[choice.weight] == 0.0  # the honest (bad) number, not the test-picked one
    # The choice sees no test labels: any labels give the same weight and the same fused test scores.
    fused, again = fuse_test(val, test_int, test_ins)
    assert again == choice
    np.testing.assert_array_equal(fused, fuse(test_int, test_ins, (choice.weight, 1 - choice.weight)))


def test_ties_go_to_the_weight_nearest_one_half_then_the_smaller() -> None:
    same = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([0, 0, 1])
    assert choose_weight(ValidationScores(same, same, labels, "val")).weight == 0.5  # every w scores alike
    # Label 1 everywhere: video 0 is right only for w > 0.5, video 1 only for w < 0.5, neither at 0.5.
    a = np.array([[0.0, 1.0], [1.0, 0.0]])
    b = a[:, ::-1].copy()
    choice = choose_weight(ValidationScores(a, b, np.array([1, 1]), "val"))
    assert (choice.weight, choice.val_top1, choice.val_top1_equal) == (0.45, 0.5, 0.0)


def test_the_grid_holds_one_half_exactly_and_refuses_even_sizes() -> None:
    grid = fusion_tuning.weight_grid(21)
    assert len(grid) == 21 and grid[0] == 0.0 and grid[-1] == 1.0 and grid[10] == 0.5
    for points in (2, 20, 1):
        with pytest.raises(ValueError, match="odd number of points"):
            fusion_tuning.weight_grid(points)


def test_no_tuned_fusion_without_a_validation_split_of_its_own() -> None:
    both = ("integrity", "intensity")
    assert fusion_tuning.absent_reason("val", "test", both) is None
    assert "is the test split" in fusion_tuning.absent_reason("val", "val", both)
    assert "no validation split" in fusion_tuning.absent_reason(None, "test", both)
    assert "one-pathway" in fusion_tuning.absent_reason("val", "test", ("intensity",))


_probs = st.integers(1, 40).flatmap(lambda n: st.integers(2, 6).flatmap(lambda c: st.tuples(
    hnp.arrays(np.float64, (n, c), elements=st.one_of(st.sampled_from([0.0, 0.25, 0.5, 1.0]),
                                                      st.floats(0.0, 1.0))),
    hnp.arrays(np.float64, (n, c), elements=st.one_of(st.sampled_from([0.0, 0.25, 0.5, 1.0]),
                                                      st.floats(0.0, 1.0))),
    hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))))


# Only w = 0.5 gets both videos right: the first needs w >= 0.5, the second w <= 0.5 (ties go to class 0).
ONLY_HALF = (np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([0, 0]))


@settings(max_examples=300, deadline=None)
@given(_probs)
@example(ONLY_HALF)
def test_tuned_fusion_is_never_below_the_equal_sum_or_either_pathway_on_validation(case) -> None:
    a, b, labels = case
    num_classes = a.shape[1]
    choice = choose_weight(ValidationScores(a, b, labels, "val"))
    paper = evaluate_scores(a, b, labels, num_classes)  # the 1:1 sum, as results.json's `fused`
    assert choice.val_top1_equal == paper["fused"]["top1"]
    assert choice.val_top1 >= paper["fused"]["top1"]
    assert choice.val_top1 >= max(paper["integrity"]["top1"], paper["intensity"]["top1"])
    fused = fuse(a, b, (1.0, 1.0) if choice.weight == 0.5 else (choice.weight, 1 - choice.weight))
    assert choice.val_top1 == topk_accuracy(fused, labels, 1)  # the score it reports is the fusion's own


# ---------------------------------------------------------------------------------------- where it shows


def test_flat_metrics_report_the_tuned_fusion_and_its_weight() -> None:
    one = {"top1": 0.5, "top5": 1.0, "mean_class": 0.25}
    flat = flat_metrics({"fused": one, "fused_tuned": {**one, "weight": 0.35}, "meta": {}}, "test/")
    assert flat["test/fused_tuned_top1"] == 0.5 and flat["test/fused_tuned_weight"] == 0.35
    assert "test/fused_tuned_weight" not in flat_metrics({"fused": one}, "test/")


def _preds(probs: np.ndarray, labels: np.ndarray) -> SplitPredictions:
    return SplitPredictions(probs.astype(np.float32), labels, np.array([f"k{i}" for i in range(len(labels))]))


def test_ablation_table_has_a_tuned_column_beside_the_equal_fusion() -> None:
    val_int, val_ins, val_labels = _split(4, integrity_right=True)
    test_int, test_ins, test_labels = _split(3, integrity_right=True)
    integrity = {"val": _preds(val_int, val_labels), "test": _preds(test_int, test_labels)}
    intensity = {"val": _preds(val_ins, val_labels), "test": _preds(test_ins, test_labels)}
    row = {"label": "Joint", "test": results_table.pair_metrics(integrity["test"], intensity["test"], 2)}
    row["fused_tuned"] = results_table.tuned_pair(integrity, intensity, 2, {"val": "val", "test": "test"})
    assert row["fused_tuned"]["weight"] == pytest.approx(0.9) and row["fused_tuned"]["chosen_on"] == "val"
    assert row["test"]["fused"]["top1"] == 0.0 and row["fused_tuned"]["test"]["top1"] == 1.0
    table = {"rows": [row], "splits": {"val": "val", "test": "test"}}
    header, body = results_table.table_cells(table)
    assert header[1:3] == ["Int&Int top-1", "Int&Int tuned top-1"]
    assert body[0][1:3] == ["0.0", "100.0 (w 0.90)"]
    assert "chosen per row on split `val`" in results_table.tuned_note(table)

    same = results_table.tuned_pair(integrity, intensity, 2, {"val": "test", "test": "test"})
    assert "is the test split" in same["absent"]
    _, body = results_table.table_cells({"rows": [{**row, "fused_tuned": same}]})
    assert body[0][2] == "–"


def test_demo_table_lists_the_tuned_fusion_with_its_weight() -> None:
    one = {"top1": 0.5, "top5": 0.9, "mean_class": 0.25}
    rows = demo_run.results_table({"integrity": one, "intensity": one, "fused": one,
                                   "fused_tuned": {**one, "weight": 0.35}})
    assert [r[0] for r in rows] == ["Integrity", "Intensity", "Fused", "Fused (tuned, w 0.35)"]


def test_testing_a_model_tunes_on_validation_and_says_why_when_it_cannot(tiny_shards: Path) -> None:
    """`evaluate_test` (what training and `intint evaluate` call): the weight comes from the validation
    predictions made with the test views; with validation = test there is no tuned fusion, and a reason."""
    cfg = dataclasses.replace(tiny(), shards=str(tiny_shards), loader_workers=0)
    cfg.data = dataclasses.replace(cfg.data, val_split="val", test_split="test")
    torch.manual_seed(0)
    num_classes = num_classes_of(cfg)
    model = build_model(cfg, num_classes)
    device = torch.device("cpu")
    results = evaluate_test(model, cfg, rank=0, world_size=1, device=device, num_classes=num_classes)
    val = predict_split(model, cfg, "val", rank=0, world_size=1, device=device, num_clips=cfg.eval_num_clips,
                        flip=cfg.eval_flip)
    expected = choose_weight(ValidationScores(val.probs["integrity"], val.probs["intensity"], val.labels,
                                              "val"))
    tuned = results["fused_tuned"]
    assert (tuned["weight"], tuned["chosen_on"]) == (expected.weight, "val")
    assert tuned["val_top1"] == expected.val_top1
    assert tuned["num_samples"] == results["fused"]["num_samples"] == results["meta"]["num_samples"]
    assert "fused_tuned_absent" not in results["meta"]

    cfg.data = dataclasses.replace(cfg.data, test_split="val")
    same = evaluate_test(model, cfg, rank=0, world_size=1, device=device, num_classes=num_classes)
    assert "fused_tuned" not in same and "is the test split" in same["meta"]["fused_tuned_absent"]
