"""A user's whole path on object storage, against a real S3 API server (moto): build the shards into a
bucket, verify them there, train the tiny preset on 2 Ray workers with both the shards and the run's
storage on s3://, and evaluate the run from the bucket. Everything of the run (checkpoints, results,
per-video probabilities, the W&B offline run) ends up in the bucket; nothing in the working folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import fsspec
import pytest
from job_helpers import REPO, load_job, unique_name

pytestmark = pytest.mark.ray


def _intint(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "intint", *args], capture_output=True, text=True, cwd=REPO,
                          env=os.environ.copy(), timeout=120)


def test_build_verify_train_evaluate_on_s3(s3: Any, ray_session, tmp_path: Path, monkeypatch) -> None:
    bucket = unique_name("e2e")
    s3.make_bucket(bucket)
    shards, runs = f"s3://{bucket}/shards", f"s3://{bucket}/runs"
    built = _intint("build-shards", "--synthetic", "48", "--num-classes", "4", "--num-shards", "4",
                    "-o", shards, "--modes", "reference", "--no-progress", "--workers", "1")
    assert built.returncode == 0, built.stderr
    verified = _intint("inspect", shards, "--verify")
    assert verified.returncode == 0 and "OK" in verified.stdout, verified.stdout + verified.stderr

    monkeypatch.chdir(tmp_path)  # anything written to the working folder would show up here
    name = unique_name("s3run")
    load_job("train_finegym").main(["--preset", "tiny", "--shards", shards, "--storage-path", runs,
                                    "--name", name, "--num-workers", "2", "--loader-workers", "1",
                                    "--epochs", "1", "--wandb", "offline"])
    fs = fsspec.filesystem("s3")
    run = f"{runs}/{name}"
    results = json.loads(fs.cat_file(f"{run}/results.json"))
    assert results["meta"]["num_samples"] == 12  # every val video of the synthetic set, once
    assert 0.0 <= results["fused"]["top1"] <= 1.0
    assert fs.glob(f"{run}/checkpoint_*/state.pt")
    assert fs.glob(f"{run}/wandb/offline-run-*/run-*.wandb")  # the worker's offline W&B run, copied over
    assert fs.exists(f"{run}/results.probs.parquet") and fs.exists(f"{run}/config.json")

    out = f"{run}/eval-again.json"
    load_job("evaluate").main(["--checkpoint", run, "--out", out, "--loader-workers", "0"])
    again = json.loads(fs.cat_file(out))
    assert again["fused"]["top1"] == pytest.approx(results["fused"]["top1"])  # same weights, same views
    assert not [p for p in tmp_path.rglob("*") if p.is_file()], "the run wrote into the working folder"
