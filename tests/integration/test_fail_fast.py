"""A user's first mistakes with real storage fail fast (issue 15): a missing bucket, a misspelt shard path,
a GPU request on a CPU machine and S3 without an endpoint or credentials each end `python -m intint` within
seconds with exit code 1 and exactly one `error:` line, no traceback, and no bucket is ever created.

The storage is a real S3 API server (moto, `intint.testing.s3_server`); the commands run as subprocesses,
as a user runs them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from intint.testing.s3_server import S3Server

FAST_S = 10.0  # seconds a failing command may take on an idle machine, Python's start-up included


def time_limit() -> float:
    """FAST_S, stretched by how overloaded the machine is right now (a shared 2-core machine running other
    work makes a 4-CPU-second command take longer); a hang takes minutes either way."""
    return FAST_S * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
BUCKET = "intint-bkt"


@pytest.fixture(scope="module")
def server(s3: S3Server) -> S3Server:
    """The run's S3 server (`s3` in tests/conftest.py) with this module's bucket; the commands get its
    settings explicitly (`command_env`)."""
    s3.make_bucket(BUCKET)
    return s3


def command_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without any S3 settings, plus `extra` (no credential files, no instance metadata)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_S3"))}
    env.update({"AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true", "WANDB_MODE": "disabled"})
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


def fails_fast(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run `python -m intint ARGS`; assert exit code 1 within `time_limit()` seconds with one `error:` line on
    stderr and no traceback; returns that line."""
    limit, start = time_limit(), time.monotonic()
    done = subprocess.run([sys.executable, "-m", "intint", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    seconds = time.monotonic() - start
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output, output
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert seconds < max(limit, time_limit()), f"took {seconds:.1f} s: {output}"
    return lines[0]


def buckets(server: S3Server) -> list[str]:
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": server.endpoint}, key="test", secret="test",
                           skip_instance_cache=True)
    return sorted(fs.ls(""))


def test_build_shards_into_a_missing_bucket(server: S3Server, tmp_path: Path) -> None:
    line = fails_fast(["build-shards", "--synthetic", "8", "--num-classes", "2", "-o", "s3://nobucket/x",
                       "--workers", "1", "--no-progress"], command_env(server.env), tmp_path)
    assert "nobucket" in line and "does not exist" in line
    assert "nobucket" not in buckets(server)  # not created


def test_train_with_storage_in_a_missing_bucket(server: S3Server, tiny_shards: Path, tmp_path: Path) -> None:
    line = fails_fast(["train", "--preset", "tiny", "--shards", str(tiny_shards), "--storage-path",
                       "s3://nobucket/runs", "--name", "fast"], command_env(server.env), tmp_path)
    assert "--storage-path s3://nobucket/runs" in line and "does not exist" in line
    assert not {"nobucket", "nobucket2"} & set(buckets(server))


@pytest.mark.parametrize("where", ["local", "s3"])
def test_train_with_a_misspelt_shard_path(where: str, server: S3Server, tiny_shards: Path,
                                          tmp_path: Path) -> None:
    shards = str(tiny_shards) + "z" if where == "local" else f"s3://{BUCKET}/shardz"
    line = fails_fast(["train", "--preset", "tiny", "--shards", shards, "--storage-path",
                       str(tmp_path / "runs"), "--name", "fast"], command_env(server.env), tmp_path)
    assert line.startswith(f"error: no shard set at '{shards}'") and "check --shards" in line


def test_train_with_a_split_the_shard_set_lacks(tiny_shards: Path, tmp_path: Path) -> None:
    line = fails_fast(["train", "--preset", "tiny", "--shards", str(tiny_shards), "--storage-path",
                       str(tmp_path / "runs"), "--data.test-split", "test9"], command_env({}), tmp_path)
    assert "no split 'test9'" in line


def test_gpu_request_on_a_cpu_machine(tiny_shards: Path, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    line = fails_fast(["train", "--preset", "tiny", "--shards", str(tiny_shards), "--storage-path",
                       str(tmp_path / "runs"), "--use-gpu", "true"], command_env({}), tmp_path)
    assert "--use-gpu true asks for 2 GPUs" in line and "this machine has 0" in line
    assert not (tmp_path / "runs" / "tiny").exists()  # nothing recorded for a run that cannot start


def test_inspect_s3_without_endpoint_or_credentials(tmp_path: Path) -> None:
    line = fails_fast(["inspect", f"s3://{BUCKET}/x"], command_env({}), tmp_path)
    assert "credentials" in line and "AWS_ACCESS_KEY_ID" in line



# ------------------------------------------------------------------------------------- in-process checks


def test_use_gpu_is_auto_by_default_and_reads_like_a_switch() -> None:
    from intint.config import TrainConfig
    from intint.presets import finegym, hmdb51, parse_args, tiny

    assert TrainConfig().use_gpu == finegym().use_gpu == hmdb51().use_gpu == "auto"
    assert tiny().use_gpu is False  # the small CPU runs stay on CPU
    flags = {(): "auto", ("--use-gpu",): True, ("--use-gpu", "true"): True, ("--use-gpu", "False"): False,
             ("--use-gpu", "auto"): "auto"}
    for args, value in flags.items():
        assert parse_args(["--shards", "/s", *args], default_preset="finegym").use_gpu == value


def test_auto_trains_on_cpu_without_a_gpu_and_says_how(tiny_shards: Path, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    import dataclasses

    import torch

    from intint.presets import tiny
    from intint.train import preflight

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cfg = dataclasses.replace(tiny(), shards=str(tiny_shards), storage_path=str(tmp_path / "runs"),
                              use_gpu="auto")
    with caplog.at_level("INFO", logger="intint"):
        checked = preflight.check(cfg)
    assert checked.use_gpu is False and checked.num_workers == 2
    assert ("use_gpu auto: no GPU on this machine: training on CPU (1 CPUs per worker); "
            "2 workers × batch 4 = global batch 8, lr 0.05 × 8/8 = 0.05") in caplog.text
    assert list((tmp_path / "runs").iterdir()) == []  # the write probe is gone


def test_the_storage_probe_leaves_nothing_and_fsio_never_makes_a_bucket(server: S3Server) -> None:
    from intint.store import fsio
    from intint.train import preflight

    preflight.check_writable(f"s3://{BUCKET}/runs", "--storage-path")
    fs, _ = fsio.url_to_fs(f"s3://{BUCKET}/runs")
    fs.invalidate_cache()
    assert fs.ls(BUCKET) == []
    with pytest.raises(fsio.MissingBucketError, match="bucket 'nobucket2' does not exist"):
        fsio.makedirs("s3://nobucket2/x")
    with pytest.raises(fsio.MissingBucketError):
        fsio.atomic_write("s3://nobucket2/x/file.json", b"{}")
    assert not {"nobucket", "nobucket2"} & set(buckets(server))


def test_gpu_decisions_on_a_cluster_with_two_gpus(monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """What `use_gpu` becomes where there are GPUs (the counts stand in for a cluster's: CI has no GPU)."""
    import dataclasses

    from intint.presets import finegym
    from intint.train import preflight

    cluster = ({"GPU": 2.0, "CPU": 16.0}, "the Ray cluster")
    monkeypatch.setattr(preflight, "available_resources", lambda: cluster)
    cfg = dataclasses.replace(finegym(), cpus_per_worker=4)  # 4 workers × 16 videos, lr 0.4 for 64
    with caplog.at_level("INFO", logger="intint"):
        auto = preflight.check_resources(cfg)
    assert (auto.use_gpu, auto.num_workers) == (True, 2)  # one worker per GPU there is
    assert ("use_gpu auto: 2 GPU(s) on the Ray cluster: training on GPU, one per worker; "
            "2 workers × batch 16 = global batch 32, lr 0.4 × 32/64 = 0.2") in caplog.text
    with pytest.raises(preflight.PreflightError, match="asks for 4 GPUs .* the Ray cluster has 2: "
                                                        "pass --use-gpu auto or false, or --num-workers 2"):
        preflight.check_resources(dataclasses.replace(cfg, use_gpu=True))
    with pytest.raises(preflight.PreflightError, match="needs 4 workers × 8 CPUs and the Ray cluster has 16"):
        preflight.check_resources(dataclasses.replace(cfg, use_gpu=False, cpus_per_worker=8))
