"""Training on Ray Train end to end (issue 4): jobs/train_finegym.py trains the tiny preset on 2 workers,
keeps a checkpoint per epoch, tests the best one, writes W&B offline from rank 0 only, and
jobs/evaluate.py re-scores the run folder's tested checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from job_helpers import load_job, tiny_train_args, unique_name

from intint.model import checkpoint

pytestmark = pytest.mark.ray


def test_train_finegym_job_end_to_end(ray_session, tiny_shards: Path, tmp_path: Path) -> None:
    name = unique_name("e2e")
    args = tiny_train_args(tiny_shards, tmp_path, name, "--epochs", "2", "--wandb", "offline")
    load_job("train_finegym").main(args)
    run = tmp_path / name
    ckpts = sorted(p for p in run.glob("checkpoint_*") if p.is_dir())
    assert len(ckpts) == 2  # one per epoch, num_to_keep=2
    assert sorted(checkpoint.load_state(str(c))["epoch"] for c in ckpts) == [0, 1]
    assert json.loads((ckpts[0] / checkpoint.CONFIG_FILE).read_text())["name"] == name

    results = json.loads((run / checkpoint.RESULTS_FILE).read_text())
    for pathway in ("integrity", "intensity", "fused"):
        for metric in ("top1", "top5", "mean_class"):
            assert 0.0 <= results[pathway][metric] <= 1.0
        assert np.asarray(results[pathway]["confusion"]).sum() == 12  # every val video once
    assert results["meta"]["num_samples"] == 12 and results["meta"]["flip"] is True
    beside = [c for c in ckpts if (c / checkpoint.RESULTS_FILE).exists()]
    assert len(beside) == 1 and json.loads((beside[0] / checkpoint.RESULTS_FILE).read_text()) == results
    assert checkpoint.load_state(str(beside[0]))["epoch"] == results["tested"]["epoch"] == 1  # the last
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))  # W&B offline run from rank 0 only
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1

    out = tmp_path / "eval.json"
    load_job("evaluate").main(["--checkpoint", str(run), "--out", str(out), "--loader-workers", "0"])
    again = json.loads(out.read_text())
    assert again["meta"]["checkpoint"] == str(beside[0])  # a run folder resolves to its tested checkpoint
    assert again["fused"]["top1"] == pytest.approx(results["fused"]["top1"])  # same weights, same views
