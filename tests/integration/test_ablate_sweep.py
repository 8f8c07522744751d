"""The ablation sweep on Ray (issue 6), end to end through jobs/ablate.py on the tiny shard set: Integrity
trained once, J and random, a rerun that trains nothing; optionally extended with A and JBA_weighted.

Each tiny Ray Train run costs ~30-40 s here; the default sweep (Integrity + J, random) runs two at a
time on the 4-CPU local Ray (oversubscribed on 2 cores, which exercises the concurrent scheduling). The
JBA_weighted extension (+A, +JBA_weighted in the same sweep folder) needs two more runs: set
INTINT_FULL_ABLATION_TEST=1."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from job_helpers import load_job

from intint.ablation import plan
from intint.ablation import results_table as ablation_table
from intint.config import TrainConfig

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def sweep_args(tiny_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The sweep folder and the job arguments of a tiny 1-epoch sweep (distinct val and test splits)."""
    root = tmp_path_factory.mktemp("ablate")
    return root / "sweep", ["--preset", "tiny", "--shards", str(tiny_shards), "--storage-path", str(root),
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


def test_tiny_sweep_end_to_end_and_rerun_trains_nothing(ray_session, sweep_args: tuple[Path, list[str]],
                                                        ) -> None:
    folder, args = sweep_args
    job = load_job("ablate")
    table = job.main([*args, "--placements", "J", "random"])
    _check_rows(table, ["random", "J"])
    assert sorted(table["trained_now"]) == ["integrity", "intensity-J", "intensity-random"]
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(table["trained_now"])
    assert table["splits"] == {"val": "val", "test": "test"} and table["jba_weights"] is None
    for name in ("table.json", "table.md", "table.png"):
        assert (folder / name).stat().st_size > 0

    before = _checkpoint_files(folder)
    again = job.main([*args, "--placements", "J", "random"])
    assert again["trained_now"] == [] and again["rows"] == table["rows"]
    assert _checkpoint_files(folder) == before  # nothing resumed, nothing retrained


@pytest.mark.skipif(os.environ.get("INTINT_FULL_ABLATION_TEST") != "1",
                    reason="two more Ray runs (~1-2 min); set INTINT_FULL_ABLATION_TEST=1")
def test_jba_weighted_run_gets_the_normalised_validation_accuracies(
        ray_session, sweep_args: tuple[Path, list[str]]) -> None:
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
