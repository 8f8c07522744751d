"""The test protocol on Ray Train (issue 14): a tiny 2-worker run that picks its best epoch on videos held out
of train records which weights it tested in results.json, keeps its last checkpoint (holding both the last
and the best weights), validated every epoch on exactly the held-out videos, and `evaluate --weights best`
on the run folder reproduces the tested numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from job_helpers import load_job, tiny_train_args, unique_name

from intint.loader.holdout import Holdout, kept_keys
from intint.model import checkpoint
from intint.presets import parse_args
from intint.store.shardstream import shard_refs
from intint.train import launch
from intint.train.protocol import select_epoch

pytestmark = pytest.mark.ray

EPOCHS = 3


def test_best_epoch_on_held_out_videos_is_recorded_and_the_last_checkpoint_kept(
        ray_session, tiny_shards: Path, tmp_path: Path) -> None:
    name = unique_name("protocol")
    args = tiny_train_args(tiny_shards, tmp_path, name, "--epochs", str(EPOCHS), "--wandb", "disabled",
                           "--select", "best", "--data.val-split", "None", "--data.val-fraction", "0.25",
                           "--data.test-split", "test")
    history = tmp_path / "history.jsonl"
    launch.run(parse_args(args, default_preset="finegym"), callbacks=[launch.history_callback(str(history))])
    run = tmp_path / name

    rows = [json.loads(line) for line in history.read_text().splitlines()]
    held = kept_keys(Holdout(0.25, 0, "val"), shard_refs(str(tiny_shards), "train"))
    assert [r["epoch"] for r in rows] == list(range(EPOCHS))
    assert {r["val_num_samples"] for r in rows} == {sum(len(k) for k in held.values())}  # the held-out videos

    results = json.loads((run / checkpoint.RESULTS_FILE).read_text())
    best = select_epoch("best", [r["fused_top1"] for r in rows])
    assert results["tested"] == {"epoch": best, "weights": "best", "selected_on": "train@heldout"}
    assert results["meta"]["split"] == "test" and results["meta"]["num_samples"] == 12

    ckpts = sorted(p for p in run.glob("checkpoint_*") if p.is_dir())
    epochs = [checkpoint.load_state(str(c))["epoch"] for c in ckpts]
    assert sorted(epochs) == [EPOCHS - 2, EPOCHS - 1]  # the newest two: the last epoch's always survives
    last = ckpts[epochs.index(EPOCHS - 1)]
    assert json.loads((last / checkpoint.RESULTS_FILE).read_text()) == results  # beside the tested weights
    assert ("best_model" in checkpoint.load_state(str(last))) == (best != EPOCHS - 1)

    out = tmp_path / "eval.json"
    load_job("evaluate").main(["--checkpoint", str(run), "--weights", "best", "--out", str(out),
                               "--loader-workers", "0"])
    again = json.loads(out.read_text())
    assert again["meta"]["checkpoint"] == str(last)
    assert again["fused"]["top1"] == pytest.approx(results["fused"]["top1"])  # same weights, same views
