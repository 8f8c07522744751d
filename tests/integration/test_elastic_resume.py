"""Elastic resume and reruns by name: a Ray Train run checkpointed mid-epoch on 2 workers and stopped by a
crash refuses a rerun with a changed config (in seconds, before Ray), then continues the same epoch with
`--resume --num-workers 1 --epochs 2`: the interrupted epoch trains on every video exactly once, the run is
extended by an epoch, and W&B continues the same run, its files in the run's folder.

What each rank trained on comes from the run's key record (`intint.train.key_record`, switched on by a
marker file in the run folder): the crashed run's batches up to its mid-epoch checkpoint, then the resumed
run's."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from job_helpers import load_job, tiny_train_args, unique_name

from intint.config import INJECT_FAILURE_ENV
from intint.model import checkpoint
from intint.store import shardio
from intint.train import tracking
from intint.train.key_record import KEY_RECORD_MARKER, read_key_records

pytestmark = pytest.mark.ray


def train_keys(shards: Path) -> list[str]:
    return [k for _, arrow, _ in shardio.shard_urls(str(shards), "train")
            for k in shardio.read_intensity(arrow, ["key"]).column("key").to_pylist()]


def test_a_run_resumed_mid_epoch_on_fewer_workers_sees_every_video_once(
        ray_session, tiny_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    job = load_job("train_finegym")
    name = unique_name("elastic")
    run = tmp_path / name
    run.mkdir()
    (run / KEY_RECORD_MARKER).write_text("")
    args = tiny_train_args(tiny_shards, tmp_path, name, "--epochs", "1", "--wandb", "offline",
                           "--data.val-split", "None", "--batch-size", "2")
    # 24 videos on 2 ranks × 1 reader: 6 batches of 2 per rank; a checkpoint after step 2, and rank 1
    # crashes halfway (after step 3, whose batches the resumed run must train on again)
    monkeypatch.setenv(INJECT_FAILURE_ENV, "0")
    with pytest.raises(Exception, match="injected failure"):
        job.main([*args, "--max-failures", "0", "--checkpoint-every-batches", "2"])
    monkeypatch.delenv(INJECT_FAILURE_ENV)

    capsys.readouterr()
    start = time.monotonic()
    with pytest.raises(SystemExit) as refused:
        job.run_job(lambda: job.main([*args, "--max-failures", "0", "--checkpoint-every-batches", "2",
                                     "--optim.lr", "0.2"]))
    assert refused.value.code == 1 and time.monotonic() - start < 10
    # (the shared test Ray's own actors may print on stderr meanwhile: only the error lines are ours)
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")] == [
        f"error: run '{name}' exists with a different config: optim.lr 0.05 → 0.2; pass --resume to continue "
        "it as recorded, or use a new --name"]

    job.main([*args, "--resume", "--num-workers", "1", "--checkpoint-every-batches", "100", "--epochs", "2"])

    # (the mid-epoch checkpoint's loader state itself is checked in tests/unit/test_sample_partition.py;
    # here the newest two checkpoints, both at epoch ends, are kept)
    records = read_key_records(str(run))
    assert max(r["step"] for r in records if r["attempt"] == 0) == 3  # trained on, then lost in the crash
    before = [r for r in records if r["attempt"] == 0 and r["step"] <= 2]
    after = [r for r in records if r["attempt"] == 1]
    assert {r["world"] for r in before} == {2} and {r["rank"] for r in before} == {0, 1}
    assert {r["world"] for r in after} == {1} and {r["epoch"] for r in before} == {0}
    for epoch in (0, 1):  # the interrupted epoch, then the added one: every video exactly once each
        seen = Counter(k for r in before + after if r["epoch"] == epoch for k in r["keys"])
        assert sorted(seen) == sorted(train_keys(tiny_shards)) and set(seen.values()) == {1}
    results = json.loads((run / checkpoint.RESULTS_FILE).read_text())
    assert results["meta"]["resumes"] == 1 and results["tested"]["epoch"] == 1
    assert json.loads((run / "config.json").read_text())["epochs"] == 2

    run_id = json.loads((run / tracking.RUN_ID_FILE).read_text())["id"]
    folders = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(f.endswith(f"-{run_id}") for f in folders)  # one W&B run, resumed
