"""The ablation sweep over seeds (issue 14), without Ray: `--seeds` parsing, each seed's folder and shards,
and the table over seeds (mean ± sd per cell, differences to Random with paired standard errors pooled
over videos × seeds, the validation-tuned fusion beside the 1:1 one) from runs finished on disk."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from intint.ablation import plan, seed_table
from intint.ablation import results_table as ablation_table
from intint.ablation import sweep as ablation
from intint.ablation.results_table import SplitPredictions
from intint.config import tiny
from intint.eval import fusion_tuning
from intint.train import preflight

NUM_CLASSES = 4


def _preds(rng: np.random.Generator, labels: np.ndarray, hit_rate: float) -> SplitPredictions:
    """Probabilities whose argmax is the label for about `hit_rate` of the videos."""
    n = len(labels)
    probs = rng.uniform(0.0, 0.2, (n, NUM_CLASSES)).astype(np.float32)
    hits = rng.uniform(size=n) < hit_rate
    target = np.where(hits, labels, (labels + 1) % NUM_CLASSES)
    probs[np.arange(n), target] += 0.5
    probs /= probs.sum(axis=1, keepdims=True)
    return SplitPredictions(probs, labels, np.array([f"k{i:03d}" for i in range(n)]))


def _seed_sweep(tmp_path: Path, seed: int, rates: dict[str, float]) -> tuple[plan.AblationConfig, dict]:
    """One seed's sweep finished on disk (predictions.npz, done.json per run, as `execute` leaves them),
    then its table as `run_one` writes it."""
    data = dataclasses.replace(tiny().data, val_split="val", test_split="test")  # tuned: needs val != test
    base = dataclasses.replace(tiny(), shards=str(tmp_path / "shards"), storage_path=str(tmp_path),
                               name="abl", data=data)
    ab = plan.AblationConfig(base=seed_table.per_seed_base(base, seed), placements=("random", "J", "B"))
    sweep = ablation.Sweep(ab, NUM_CLASSES, slots=1)
    rng = np.random.default_rng(seed)
    labels = {"val": rng.integers(0, NUM_CLASSES, 40), "test": rng.integers(0, NUM_CLASSES, 50)}
    for placement in (None, *ab.placements):
        cfg = plan.run_config(ab, placement)
        folder = Path(ab.sweep_folder) / cfg.name
        folder.mkdir(parents=True, exist_ok=True)
        rate = rates[cfg.name]
        preds = {role: _preds(rng, labels[role], rate) for role in plan.ROLES}
        ablation_table.save_predictions(str(folder / plan.PREDICTIONS_FILE), preds)
        metrics = {role: ablation_table.pathway_summary(p, NUM_CLASSES) for role, p in preds.items()}
        sweep.records[cfg.name] = ablation.RunRecord(cfg.name, cfg.pathways, placement, str(folder), False,
                                                     metrics)
    table = ablation.build_table(ab, sweep, wall_s=1.0)
    ablation.write_outputs(table, ab.sweep_folder)
    return ab, json.loads((Path(ab.sweep_folder) / plan.TABLE_JSON).read_text())


def _hits(ab: plan.AblationConfig, run: str) -> dict[str, SplitPredictions]:
    return ablation_table.load_predictions(str(Path(ab.sweep_folder) / run / plan.PREDICTIONS_FILE))


def test_seeds_option_is_not_the_seed_field() -> None:
    ab = plan.parse_args(["--shards", "/s", "--seed", "3", "--seeds", "2"])
    assert (ab.base.seed, ab.seeds) == (3, 2)
    one = plan.parse_args(["--shards", "/s", "--seed", "3"])  # not read as an abbreviated --seeds
    assert (one.base.seed, one.seeds) == (3, 1)
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        plan.AblationConfig(base=tiny(), placements=("J",), seeds=0)


def test_each_seed_has_its_folder_seed_and_shards() -> None:
    base = dataclasses.replace(tiny(), shards="/data/demo-seed-{seed}/shards", storage_path="/runs",
                               name="abl", seed=0)
    cfg = seed_table.per_seed_base(base, 2)
    assert (cfg.seed, cfg.shards, cfg.name) == (2, "/data/demo-seed-2/shards", "abl/seed-2")
    ab = plan.AblationConfig(base=cfg, placements=("J",))
    assert ab.sweep_folder == "/runs/abl/seed-2"
    assert plan.run_config(ab, "J").storage_path == "/runs/abl/seed-2"
    shared = dataclasses.replace(base, shards="/data/one")
    assert seed_table.per_seed_base(shared, 1).shards == "/data/one"  # no {seed}: every seed reads it


def test_table_over_seeds_pools_videos_and_seeds(tmp_path: Path) -> None:
    rates = {"integrity": 0.5, "intensity-random": 0.3, "intensity-J": 0.8, "intensity-B": 0.6}
    sweeps = {s: _seed_sweep(tmp_path, s, rates) for s in (0, 1, 2)}
    tables = {s: t for s, (_, t) in sweeps.items()}
    hits = {s: seed_table.table_hits(t, (1.0, 1.0)) for s, t in tables.items()}
    table = seed_table.combine(tables, hits)

    assert table["seeds"] == [0, 1, 2] and [r["placement"] for r in table["rows"]] == ["random", "J", "B"]
    j_row = next(r for r in table["rows"] if r["placement"] == "J")
    per_seed = [next(r for r in tables[s]["rows"] if r["placement"] == "J")["test"]["fused"]["top1"]
                for s in (0, 1, 2)]
    assert j_row["top1"]["fused"]["values"] == pytest.approx(per_seed)
    assert j_row["top1"]["fused"]["mean"] == pytest.approx(np.mean(per_seed))
    assert j_row["top1"]["fused"]["sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert {"fused", "fused_tuned", "intensity", "integrity"} <= set(j_row["top1"])

    # The J-vs-random difference: every seed's per-video differences pooled, paired standard error.
    diffs = []
    for ab, _ in sweeps.values():
        integrity, rnd, own = (_hits(ab, run)["test"] for run in ("integrity", "intensity-random",
                                                                   "intensity-J"))
        diffs.append(((integrity.probs + own.probs).argmax(1) == own.labels).astype(float)
                     - ((integrity.probs + rnd.probs).argmax(1) == rnd.labels).astype(float))
    pooled = np.concatenate(diffs)
    j = table["random_vs_intensity"]["J"]["fused"]
    assert j["delta"] == pytest.approx(pooled.mean())
    assert j["se"] == pytest.approx(pooled.std(ddof=1) / np.sqrt(pooled.size))
    assert j["deltas"] == pytest.approx([d.mean() for d in diffs])
    assert set(table["random_vs_intensity"]["J"]) == {"fused", "fused_tuned", "intensity"}


def test_tuned_column_uses_the_weight_chosen_on_validation(tmp_path: Path) -> None:
    rates = {"integrity": 0.7, "intensity-random": 0.3, "intensity-J": 0.6, "intensity-B": 0.4}
    ab, table = _seed_sweep(tmp_path, 0, rates)
    hits = seed_table.table_hits(table, (1.0, 1.0))
    integrity, own = _hits(ab, "integrity"), _hits(ab, "intensity-J")
    choice = fusion_tuning.choose_weight(fusion_tuning.ValidationScores(
        integrity["val"].probs, own["val"].probs, integrity["val"].labels, "val"))
    w = choice.weight
    fused = (integrity["test"].probs + own["test"].probs if w == 0.5
             else w * integrity["test"].probs + (1 - w) * own["test"].probs)
    assert np.array_equal(hits["J"]["fused_tuned"], fused.argmax(1) == integrity["test"].labels)
    row = next(r for r in table["rows"] if r["placement"] == "J")
    assert hits["J"]["fused_tuned"].mean() == pytest.approx(row["fused_tuned"]["test"]["top1"])


def test_seeds_table_files(tmp_path: Path) -> None:
    rates = {"integrity": 0.5, "intensity-random": 0.3, "intensity-J": 0.8, "intensity-B": 0.6}
    tables = {s: _seed_sweep(tmp_path, s, rates)[1] for s in (0, 1)}
    table = seed_table.combine(tables, {s: seed_table.table_hits(t, (1.0, 1.0)) for s, t in tables.items()})
    urls = seed_table.write_outputs(table, str(tmp_path / "abl"), plan.write_json)
    md = Path(urls["markdown"]).read_text()
    assert "| Joint |" in md and "Int&Int tuned top-1" in md and "Int&Int (1:1) vs Random" in md
    j = table["rows"][1]["top1"]["fused"]
    assert f"{100 * j['mean']:.1f} ± {100 * j['sd']:.1f}" in md
    assert Path(urls["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(Path(urls["json"]).read_text())["seeds"] == [0, 1]


def test_preflight_checks_every_seeds_shard_set(tmp_path: Path, tiny_shards: Path) -> None:
    (tmp_path / "seed-0").mkdir()
    (tmp_path / "seed-0" / "shards").symlink_to(tiny_shards)
    base = dataclasses.replace(tiny(), shards=str(tmp_path / "seed-{seed}" / "shards"),
                               storage_path=str(tmp_path / "runs"), name="abl")
    one = ablation.checked(plan.AblationConfig(base=base, placements=("J",)))
    assert one.base.shards.endswith("seed-{seed}/shards") and one.base.name == "abl"  # template kept
    with pytest.raises(preflight.PreflightError, match="seed-1"):  # seed 1 has no shard set
        ablation.checked(plan.AblationConfig(base=base, placements=("J",), seeds=2))
