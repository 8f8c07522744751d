"""Rerunning a run by name (issue 15): a changed config is refused in seconds, before Ray trains anything;
`--resume --epochs N` extends a finished run, training the new epoch, and W&B resumes the same run, its
files in the run's folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from job_helpers import load_job, tiny_train_args, unique_name

from intint.model import checkpoint
from intint.train import tracking

pytestmark = pytest.mark.ray


def checkpoints(run: Path) -> dict[int, dict]:
    """Epoch → state of the run's checkpoints."""
    states = [checkpoint.load_state(str(c)) for c in run.glob("checkpoint_*") if c.is_dir()]
    return {state["epoch"]: state for state in states}


def test_a_changed_rerun_is_refused_and_resume_extends_the_run(ray_session, tiny_shards: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    job = load_job("train_finegym")
    name = unique_name("rerun")
    run = tmp_path / name
    args = tiny_train_args(tiny_shards, tmp_path, name, "--wandb", "offline", "--data.val-split", "None")
    job.main([*args, "--epochs", "1"])
    assert sorted(checkpoints(run)) == [0]

    capsys.readouterr()
    start = time.monotonic()
    with pytest.raises(SystemExit) as refused:
        job.run_job(lambda: job.main([*args, "--epochs", "1", "--optim.lr", "0.2"]))
    assert refused.value.code == 1 and time.monotonic() - start < 10
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: run '{name}' exists with a different config: optim.lr 0.05 → 0.2; pass --resume to continue "
        "it as recorded, or use a new --name"]
    assert sorted(checkpoints(run)) == [0]  # nothing trained

    job.main([*args, "--resume", "--epochs", "2"])
    states = checkpoints(run)
    assert sorted(states) == [0, 1] and states[1]["progress"]["resumes"] == 1
    results = json.loads((run / checkpoint.RESULTS_FILE).read_text())
    assert results["meta"]["epochs"] == 2 and results["tested"]["epoch"] == 1
    # The extended epoch trained (a finished cosine schedule restored as it was would run it at lr 0).
    assert not all(torch.equal(states[0]["model"][k], v) for k, v in states[1]["model"].items()
                   if k.endswith("conv.weight"))
    assert json.loads((run / "config.json").read_text())["epochs"] == 2

    run_id = json.loads((run / tracking.RUN_ID_FILE).read_text())["id"]
    folders = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(f.endswith(f"-{run_id}") for f in folders)  # one W&B run, resumed
    assert all((run / "wandb" / f / f"run-{run_id}.wandb").is_file() for f in folders)
