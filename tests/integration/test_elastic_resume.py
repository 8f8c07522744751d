"""Elastic resume (issue 17): a Ray Train run checkpointed mid-epoch on 2 workers, stopped by a crash,
continues the same epoch with `--resume --num-workers 1`, and the epoch trains on every video exactly once.

What each rank trained on comes from the run's key record (`intint.train.key_record`, switched on by a
marker file in the run folder): the crashed run's batches up to its mid-epoch checkpoint, then the resumed
run's."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from job_helpers import load_job, tiny_train_args, unique_name

from intint.config import INJECT_FAILURE_ENV
from intint.model import checkpoint
from intint.store import shardio
from intint.train.key_record import KEY_RECORD_MARKER, read_key_records

pytestmark = pytest.mark.ray


def train_keys(shards: Path) -> list[str]:
    return [k for _, arrow, _ in shardio.shard_urls(str(shards), "train")
            for k in shardio.read_intensity(arrow, ["key"]).column("key").to_pylist()]


def test_a_run_resumed_mid_epoch_on_fewer_workers_sees_every_video_once(
        ray_session, tiny_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = load_job("train_finegym")
    name = unique_name("elastic")
    run = tmp_path / name
    run.mkdir()
    (run / KEY_RECORD_MARKER).write_text("")
    args = tiny_train_args(tiny_shards, tmp_path, name, "--epochs", "1", "--wandb", "disabled",
                           "--data.val-split", "None", "--batch-size", "2")
    # 24 videos on 2 ranks × 1 reader: 6 batches of 2 per rank; a checkpoint after step 2, and rank 1
    # crashes halfway (after step 3, whose batches the resumed run must train on again)
    monkeypatch.setenv(INJECT_FAILURE_ENV, "0")
    with pytest.raises(Exception, match="injected failure"):
        job.main([*args, "--max-failures", "0", "--checkpoint-every-batches", "2"])
    monkeypatch.delenv(INJECT_FAILURE_ENV)
    job.main([*args, "--resume", "--num-workers", "1", "--checkpoint-every-batches", "100"])

    states = [checkpoint.load_state(str(c)) for c in run.glob("checkpoint_*") if c.is_dir()]
    mid = [s for s in states if s.get("mid_epoch")]
    assert len(mid) == 1 and mid[0]["progress"]["global_step"] == 2
    assert [(s["world_size"], s["batches"]) for s in mid[0]["loader"]["segments"]] == [(2, 2)]
    records = read_key_records(str(run))
    assert max(r["step"] for r in records if r["attempt"] == 0) == 3  # trained on, then lost in the crash
    before = [r for r in records if r["attempt"] == 0 and r["step"] <= 2]
    after = [r for r in records if r["attempt"] == 1]
    assert {r["world"] for r in before} == {2} and {r["rank"] for r in before} == {0, 1}
    assert {r["world"] for r in after} == {1} and {r["epoch"] for r in before + after} == {0}
    seen = Counter(k for r in before + after for k in r["keys"])
    assert sorted(seen) == sorted(train_keys(tiny_shards)) and set(seen.values()) == {1}
    results = json.loads((run / checkpoint.RESULTS_FILE).read_text())
    assert results["meta"]["resumes"] == 1 and results["tested"]["epoch"] == 0
