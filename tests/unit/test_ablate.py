"""Ablation sweep (issue 6): JBA weights from validation accuracies, the fused table from saved probabilities,
resumability bookkeeping, and a tiny end-to-end sweep on Ray (Integrity trained once, J/B/random, a rerun that
trains nothing; optionally extended with A and JBA_weighted)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from intint.ablation import plan
from intint.ablation import results_table as ablation_table
from intint.ablation import sweep as ablation
from intint.ablation.results_table import SplitPredictions
from intint.config import TrainConfig, tiny
from intint.store import build
from intint.testing import synthetic

REPO = Path(__file__).resolve().parents[2]
NUM_CLASSES = 4


def load_job(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def _fake_sweep(tmp_path: Path, placements: tuple[str, ...], hit_rates: dict[str, tuple[float, float]]
                ) -> tuple[plan.AblationConfig, ablation.Sweep]:
    """A sweep whose runs are finished on disk (predictions.npz) without training: what the table reads."""
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
        folder = tmp_path / "fake" / name
        folder.mkdir(parents=True)
        val_rate, test_rate = hit_rates[name]
        preds = {"val": _preds(rng, labels["val"], val_rate), "test": _preds(rng, labels["test"], test_rate)}
        ablation_table.save_predictions(str(folder / plan.PREDICTIONS_FILE), preds)
        pathway = "integrity" if placement is None else "intensity"
        sweep.records[name] = ablation.RunRecord(name, pathway, placement, str(folder), True, {})
    return ab, sweep


# ---------------------------------------------------------------------------------------------- unit


def test_jba_weights_are_the_normalised_fused_validation_accuracies(tmp_path: Path) -> None:
    # Validation and test disagree on purpose: weights taken from the test split would differ.
    rates = {"integrity": (0.4, 0.9), "intensity-J": (0.9, 0.1), "intensity-B": (0.2, 0.9),
             "intensity-A": (0.6, 0.5)}
    ab, sweep = _fake_sweep(tmp_path, ("J", "B", "A", "JBA_weighted"), rates)
    learnt = sweep._learnt_weights()
    integrity = sweep.records["integrity"].predictions()
    fused = {g: _fused_top1(integrity["val"], sweep.records[f"intensity-{g}"].predictions()["val"])
             for g in "JBA"}
    wrong = {g: _fused_top1(integrity["test"], sweep.records[f"intensity-{g}"].predictions()["test"])
             for g in "JBA"}
    total = sum(fused.values())
    assert learnt["source"] == "validation" and learnt["split"] == "val"
    assert learnt["accuracies"] == pytest.approx(fused)
    assert learnt["weights"] == pytest.approx({g: v / total for g, v in fused.items()})
    assert sum(learnt["weights"].values()) == pytest.approx(1.0)
    assert learnt["weights"] != pytest.approx({g: v / sum(wrong.values()) for g, v in wrong.items()})
    # ... and they reach the JBA_weighted run's config (the loader recomputes its peaks from them).
    cfg = plan.run_config(ab, "JBA_weighted", learnt["weights"])
    assert cfg.jba_weights == pytest.approx(learnt["weights"]) and cfg.intensity_definition == "JBA_weighted"
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


# ---------------------------------------------------------------------------------------------- Ray
# Each tiny Ray Train run costs ~30-40 s here; the default sweep (Integrity + J, B, random) runs two at a
# time on a 4-CPU local Ray (oversubscribed on 2 cores, which exercises the concurrent scheduling). The
# JBA_weighted extension (+A, +JBA_weighted in the same sweep folder) needs two more runs: set
# INTINT_FULL_ABLATION_TEST=1.


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray shared by the sweep, its rerun and its extension."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    os.environ.setdefault("WANDB_SILENT", "true")
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=4, include_dashboard=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def sweep_args(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A shard set with distinct val and test splits, and the job arguments of a tiny 1-epoch sweep."""
    root = tmp_path_factory.mktemp("ablate")
    raw = synthetic.make_annotations(48, NUM_CLASSES, splits={"train": 0.5, "val": 0.25, "test": 0.25},
                                     seed=0, frames=(20, 40))
    shards = root / "shards"
    build.build(build.BuildConfig(input="synthetic", output=str(shards), num_classes=NUM_CLASSES,
                                  num_shards=2, workers=1, progress=False, modes=("reference",)), raw=raw)
    return root / "sweep", ["--preset", "tiny", "--shards", str(shards), "--storage-path", str(root),
                            "--name", "sweep", "--epochs", "1", "--num-workers", "2", "--loader-workers", "1",
                            "--wandb", "disabled", "--data.test-split", "test"]


def _check_rows(table: dict, placements: list[str]) -> None:
    assert [r["placement"] for r in table["rows"]] == placements
    for row in table["rows"]:
        for role in ("val", "test"):
            for pathway in ("fused", "intensity", "integrity"):
                assert all(0.0 <= row[role][pathway][m] <= 1.0 for m in ablation_table.METRICS)
            assert row[role]["fused"]["num_samples"] == 12
    # One Integrity run, fused with every row.
    assert [n for n, r in table["runs"].items() if r["pathway"] == "integrity"] == ["integrity"]
    assert len({r["test"]["integrity"]["top1"] for r in table["rows"]}) == 1


def _checkpoint_files(folder: Path) -> dict[Path, int]:
    """Every saved training state and its mtime: unchanged means no epoch was trained (or re-saved)."""
    return {p: p.stat().st_mtime_ns for p in folder.rglob("state.pt")}


@pytest.mark.ray
def test_tiny_sweep_end_to_end_and_rerun_trains_nothing(ray_local, sweep_args: tuple[Path, list[str]],
                                                        ) -> None:
    folder, args = sweep_args
    job = load_job("ablate")
    table = job.main([*args, "--placements", "J,B", "random"])
    _check_rows(table, ["random", "J", "B"])
    assert sorted(table["trained_now"]) == ["integrity", "intensity-B", "intensity-J", "intensity-random"]
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(table["trained_now"])
    assert table["splits"] == {"val": "val", "test": "test"} and table["jba_weights"] is None
    for name in ("table.json", "table.md", "table.png"):
        assert (folder / name).stat().st_size > 0

    before = _checkpoint_files(folder)
    again = job.main([*args, "--placements", "J,B", "random"])
    assert again["trained_now"] == [] and again["rows"] == table["rows"]
    assert _checkpoint_files(folder) == before  # nothing resumed, nothing retrained


@pytest.mark.ray
@pytest.mark.skipif(os.environ.get("INTINT_FULL_ABLATION_TEST") != "1",
                    reason="two more Ray runs (~1-2 min); set INTINT_FULL_ABLATION_TEST=1")
def test_jba_weighted_run_gets_the_normalised_validation_accuracies(
        ray_local, sweep_args: tuple[Path, list[str]]) -> None:
    folder, args = sweep_args
    job = load_job("ablate")
    if not (folder / "intensity-B" / plan.DONE_FILE).exists():
        job.main([*args, "--placements", "J,B", "random"])
    # An interrupted run (no done.json) is continued: Ray resumes it from its checkpoint, nothing retrains.
    before = json.loads((folder / "table.json").read_text())
    (folder / "intensity-B" / plan.DONE_FILE).unlink()
    checkpoints_b = _checkpoint_files(folder / "intensity-B")
    table = job.main([*args, "--placements", "J,B,A,JBA_weighted,random"])
    _check_rows(table, ["random", "J", "B", "A", "JBA_weighted"])
    assert sorted(table["trained_now"]) == ["intensity-A", "intensity-B", "intensity-JBA_weighted"]
    assert _checkpoint_files(folder / "intensity-B") == checkpoints_b
    old_b = next(r for r in before["rows"] if r["placement"] == "B")
    new_b = next(r for r in table["rows"] if r["placement"] == "B")
    assert new_b["test"]["intensity"] == pytest.approx(old_b["test"]["intensity"])
    jba = table["jba_weights"]
    by = {r["placement"]: r for r in table["rows"]}
    val_acc = {g: by[g]["val"]["fused"]["top1"] for g in "JBA"}
    assert jba["source"] == "validation" and jba["accuracies"] == pytest.approx(val_acc)
    assert jba["weights"] == pytest.approx({g: v / sum(val_acc.values()) for g, v in val_acc.items()})
    done = json.loads((folder / "intensity-JBA_weighted" / plan.DONE_FILE).read_text())
    assert TrainConfig.from_dict(done["config"]).jba_weights == pytest.approx(jba["weights"])
