"""Ablation sweep (issue 6) without Ray, on runs finished on disk: JBA weights from validation accuracies,
the fused table from saved probabilities, resumability bookkeeping. The sweep trained on Ray is
tests/integration/test_ablate_sweep.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from intint.ablation import plan
from intint.ablation import results_table as ablation_table
from intint.ablation import sweep as ablation
from intint.ablation.results_table import SplitPredictions
from intint.config import tiny

NUM_CLASSES = 4


# ---------------------------------------------------------------------------------------------- helpers


def _preds(rng: np.random.Generator, labels: np.ndarray, hit_rate: float) -> SplitPredictions:
    """Probabilities whose argmax is the label for about `hit_rate` of the videos."""
    n = len(labels)
    probs = rng.uniform(0.0, 0.2, (n, NUM_CLASSES)).astype(np.float32)
    hits = rng.uniform(size=n) < hit_rate
    target = np.where(hits, labels, (labels + 1) % NUM_CLASSES)
    probs[np.arange(n), target] += 0.5
    probs /= probs.sum(axis=1, keepdims=True)
    return SplitPredictions(probs, labels, np.array([f"k{i:03d}" for i in range(n)]))


def _fused_top1(a: SplitPredictions, b: SplitPredictions) -> float:
    return float(((a.probs + b.probs).argmax(axis=1) == a.labels).mean())


def _finish_run(ab: plan.AblationConfig, placement: str | None, preds: dict[str, SplitPredictions],
                weights: dict[str, float] | None = None) -> ablation.RunRecord:
    """What a finished run of the sweep leaves in its folder (predictions.npz, then done.json), without
    training; returns its record."""
    cfg = plan.run_config(ab, placement, weights)
    folder = Path(ab.sweep_folder) / cfg.name
    folder.mkdir(parents=True, exist_ok=True)
    ablation_table.save_predictions(str(folder / plan.PREDICTIONS_FILE), preds)
    metrics = {role: ablation_table.pathway_summary(p, NUM_CLASSES) for role, p in preds.items()}
    plan.write_json(str(folder / plan.DONE_FILE), {"run_id": cfg.name, "config": cfg.to_dict(),
                                                   "metrics": metrics, "wall_s": 0.0})
    return ablation.RunRecord(cfg.name, cfg.pathways, placement, str(folder), False, metrics)


def _fake_sweep(tmp_path: Path, placements: tuple[str, ...], hit_rates: dict[str, tuple[float, float]]
                ) -> tuple[plan.AblationConfig, ablation.Sweep]:
    """A sweep whose runs are finished on disk (predictions.npz, done.json) without training."""
    base = dataclasses.replace(tiny(), shards=str(tmp_path / "shards"), storage_path=str(tmp_path),
                               name="fake")
    ab = plan.AblationConfig(base=base, placements=placements)
    sweep = ablation.Sweep(ab, NUM_CLASSES, slots=1)
    rng = np.random.default_rng(0)
    labels = {"val": rng.integers(0, NUM_CLASSES, 40), "test": rng.integers(0, NUM_CLASSES, 30)}
    for placement in (None, *placements):
        name = plan.run_id(placement)
        if name not in hit_rates:
            continue
        val_rate, test_rate = hit_rates[name]
        preds = {"val": _preds(rng, labels["val"], val_rate), "test": _preds(rng, labels["test"], test_rate)}
        sweep.records[name] = _finish_run(ab, placement, preds)
    return ab, sweep


# ---------------------------------------------------------------------------------------------- unit


def _jba_weights(sweep: ablation.Sweep, role: str) -> tuple[dict[str, float], dict[str, float]]:
    """The J, B and A runs' fused (with Integrity) top-1 on `role`, and those normalised to sum 1."""
    integrity = sweep.records["integrity"].predictions()[role]
    fused = {g: _fused_top1(integrity, sweep.records[f"intensity-{g}"].predictions()[role]) for g in "JBA"}
    return fused, {g: v / sum(fused.values()) for g, v in fused.items()}


def test_jba_weighted_run_gets_the_normalised_fused_validation_accuracies(tmp_path: Path) -> None:
    # Validation and test disagree on purpose: weights taken from the test split would differ.
    rates = {"integrity": (0.4, 0.9), "intensity-J": (0.9, 0.1), "intensity-B": (0.2, 0.9),
             "intensity-A": (0.6, 0.5)}
    ab, finished = _fake_sweep(tmp_path, ("J", "B", "A", "JBA_weighted"), rates)
    val_accuracies, from_val = _jba_weights(finished, "val")
    _, from_test = _jba_weights(finished, "test")
    assert from_val != pytest.approx(from_test)
    jba_preds = finished.records["intensity-J"].predictions()

    # A JBA_weighted run recorded with the test split's weights is not what the sweep asks for: refused.
    _finish_run(ab, "JBA_weighted", jba_preds, from_test)
    refused = ablation.Sweep(ab, NUM_CLASSES, slots=1)
    refused.run()
    assert "jba_weights" in str(refused.failures["intensity-JBA_weighted"])

    # Recorded with the normalised fused validation accuracies: it is the sweep's own run, reused.
    _finish_run(ab, "JBA_weighted", jba_preds, from_val)
    sweep = ablation.Sweep(ab, NUM_CLASSES, slots=1)
    sweep.run()
    assert sweep.failures == {}
    table = ablation.build_table(ab, sweep, wall_s=1.0)
    assert table["trained_now"] == [] and [r["placement"] for r in table["rows"]] == ["J", "B", "A",
                                                                                       "JBA_weighted"]
    learnt = table["jba_weights"]
    assert learnt["source"] == "validation" and learnt["split"] == "val"
    assert learnt["accuracies"] == pytest.approx(val_accuracies)
    assert learnt["weights"] == pytest.approx(from_val)
    assert sum(learnt["weights"].values()) == pytest.approx(1.0)
    # ... and they reach the JBA_weighted run's config (the loader recomputes its peaks from them).
    cfg = plan.run_config(ab, "JBA_weighted", learnt["weights"])
    assert cfg.jba_weights == pytest.approx(from_val) and cfg.intensity_definition == "JBA_weighted"
    assert (cfg.pathways, cfg.name, cfg.wandb_group) == ("intensity", "intensity-JBA_weighted", "fake")


def test_weight_rules() -> None:
    weights = ablation_table.jba_weights_from_validation({"J": 0.5, "B": 0.25, "A": 0.25})
    assert weights == {"J": 0.5, "B": 0.25, "A": 0.25}
    assert plan.parse_weights("J=2,B=1,A=1") == {"J": 2.0, "B": 1.0, "A": 1.0}
    with pytest.raises(ValueError, match="all have validation accuracy 0"):
        ablation_table.jba_weights_from_validation({"J": 0.0, "B": 0.0, "A": 0.0})
    with pytest.raises(ValueError, match="exactly J, B and A"):
        plan.parse_weights("J=1,B=1")
    with pytest.raises(ValueError, match=r"add \['A'\]"):
        plan.AblationConfig(base=tiny(), placements=("J", "B", "JBA_weighted"))
    plan.AblationConfig(base=tiny(), placements=("JBA_weighted",), jba_weights={"J": 1, "B": 1, "A": 2})
    assert plan.parse_placements(["paper"]) == plan.DEFAULT_PLACEMENTS
    assert plan.parse_placements(["J,B", "random", "J"]) == ("J", "B", "random")
    with pytest.raises(ValueError, match="placements"):
        plan.AblationConfig(base=tiny(), placements=("joint",))


def test_concurrent_slots_follow_cluster_resources() -> None:
    cfg = dataclasses.replace(tiny(), num_workers=2, cpus_per_worker=1)
    assert ablation.concurrent_slots(cfg, {"CPU": 2.0}) == 1
    assert ablation.concurrent_slots(cfg, {"CPU": 9.0}) == 4
    assert ablation.concurrent_slots(cfg, {"CPU": 9.0}, limit=3) == 3
    assert ablation.concurrent_slots(cfg, {"CPU": 1.0}) == 1  # too small: one at a time (Ray queues)
    gpu = dataclasses.replace(cfg, use_gpu=True, num_workers=4, cpus_per_worker=4)
    assert ablation.concurrent_slots(gpu, {"CPU": 64.0, "GPU": 8.0}) == 2


def test_table_fuses_every_row_with_the_one_integrity_run(tmp_path: Path) -> None:
    rates = {"integrity": (0.5, 0.5), "intensity-random": (0.3, 0.3), "intensity-J": (0.8, 0.8),
             "intensity-B": (0.6, 0.7)}
    ab, sweep = _fake_sweep(tmp_path, ("J", "random", "B"), rates)
    table = ablation.build_table(ab, sweep, wall_s=1.0)
    assert [r["placement"] for r in table["rows"]] == ["random", "J", "B"]  # the paper's row order
    integrity = sweep.records["integrity"].predictions()["test"]
    for row in table["rows"]:
        own = sweep.records[row["run"]].predictions()["test"]
        assert row["test"]["fused"]["top1"] == pytest.approx(_fused_top1(integrity, own))
        own_top1 = float((own.probs.argmax(1) == own.labels).mean())
        assert row["test"]["intensity"]["top1"] == pytest.approx(own_top1)
        for metrics in row["test"].values():
            assert all(0.0 <= metrics[m] <= 1.0 for m in ablation_table.METRICS)
    assert len({r["test"]["integrity"]["top1"] for r in table["rows"]}) == 1  # one Integrity column
    rvi = table["random_vs_intensity"]
    by = {r["placement"]: r["test"]["fused"]["top1"] for r in table["rows"]}
    assert rvi["best_on_test"]["fused_delta"] == pytest.approx(max(by["J"], by["B"]) - by["random"])
    assert rvi["mean_fused_delta"] == pytest.approx((by["J"] + by["B"]) / 2 - by["random"])
    # Paired standard error of the J-vs-random difference, from the per-video hits of both rows.
    rnd = sweep.records["intensity-random"].predictions()["test"]
    own_j = sweep.records["intensity-J"].predictions()["test"]
    diff = (((integrity.probs + own_j.probs).argmax(1) == own_j.labels).astype(float)
            - ((integrity.probs + rnd.probs).argmax(1) == rnd.labels).astype(float))
    assert rvi["per_placement"]["J"]["fused_delta"] == pytest.approx(diff.mean())
    assert rvi["per_placement"]["J"]["fused_se"] == pytest.approx(diff.std(ddof=1) / np.sqrt(diff.size))

    urls = ablation.write_outputs(table, str(tmp_path / "fake"))
    md = Path(urls["markdown"]).read_text()
    assert all(f"| {label} |" in md for label in ("Random", "Joint", "Bone"))
    assert f"{100 * by['J']:.1f}" in md
    assert Path(urls["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(Path(urls["json"]).read_text())["rows"] == json.loads(json.dumps(table["rows"]))
    assert "Joint" in ablation_table.render_text(table, use_rich=False)


def test_pairs_must_score_the_same_videos() -> None:
    rng = np.random.default_rng(1)
    a = _preds(rng, np.array([0, 1, 2]), 1.0)
    b = SplitPredictions(a.probs, a.labels, np.array(["k000", "k001", "zzz"]))
    with pytest.raises(ValueError, match="zzz"):
        ablation_table.pair_metrics(a, b, NUM_CLASSES, where="run X")


def test_finished_run_is_reused_and_a_changed_config_is_refused(tmp_path: Path) -> None:
    rates = {"integrity": (0.5, 0.5), "intensity-J": (0.8, 0.8)}
    ab, sweep = _fake_sweep(tmp_path, ("J",), rates)
    cfg = plan.run_config(ab, "J")
    done = {"run_id": cfg.name, "config": cfg.to_dict(), "metrics": {"test": {"top1": 0.5}}, "wall_s": 3.0}
    (Path(sweep.records["intensity-J"].folder) / plan.DONE_FILE).write_text(json.dumps(done))
    rec = ablation.execute(cfg, ab.splits, NUM_CLASSES)
    assert rec.trained is False and rec.metrics == done["metrics"]
    moved = dataclasses.replace(cfg, shards="/elsewhere", wandb="offline", loader_workers=3)
    assert ablation.execute(moved, ab.splits, NUM_CLASSES).trained is False
    with pytest.raises(ValueError, match="epochs"):
        ablation.execute(dataclasses.replace(cfg, epochs=7), ab.splits, NUM_CLASSES)
