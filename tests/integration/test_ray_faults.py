"""Faults during Ray Train runs (issues 4 and 13): a worker that raises, and a worker process killed with
SIGKILL mid-epoch (as the kernel's OOM killer would). Either way the worker group restarts from the last
checkpoint and the run finishes; the crashed partial epoch is not counted; nothing hangs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from job_helpers import REPO, load_job, tiny_train_args, unique_name

from intint.config import INJECT_FAILURE_ENV, loader_config, parse_args
from intint.loader import streams
from intint.model import checkpoint
from intint.train.loop import FAILURE_MARKER

pytestmark = pytest.mark.ray

T = TypeVar("T")
RUN_LIMIT_S = 600  # hard limit of the killed run (it takes ~1-2 min on a loaded 2-core machine)
TRAIN_WORKER_TITLE = "ray::RayTrainWorker"  # Ray's process title of a Train V2 worker actor
CHECKPOINT_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray's record of the registered checkpoints


def steps_per_epoch(args: list[str]) -> int:
    """Optimizer steps one rank takes per epoch of this run (the loader's batches × passes per epoch)."""
    cfg = parse_args(args, default_preset="finegym")
    return len(streams.train_loader(loader_config(cfg, "train", train=True), 0, cfg.num_workers)) * cfg.repeat


def check_resumed_once(run: Path, args: list[str], epochs: int) -> None:
    """The run finished all epochs after exactly one restart, counting each epoch's steps once."""
    results = json.loads((run / checkpoint.RESULTS_FILE).read_text())
    assert results["meta"]["resumes"] == 1 and results["meta"]["epochs"] == epochs
    states = [checkpoint.load_state(str(c)) for c in run.glob("checkpoint_*") if c.is_dir()]
    last = max(states, key=lambda state: state["epoch"])
    assert last["epoch"] == epochs - 1 and last["progress"]["resumes"] == 1
    assert last["progress"]["global_step"] == epochs * steps_per_epoch(args)  # crashed part not counted


def test_worker_crash_restarts_from_last_checkpoint(ray_session, tiny_shards: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INJECT_FAILURE_ENV, "1")  # rank 1 raises halfway through epoch 1, once
    name = unique_name("fault")
    args = tiny_train_args(tiny_shards, tmp_path, name, "--epochs", "2", "--wandb", "disabled",
                           "--max-failures", "1")
    load_job("train_finegym").main(args)
    marker = json.loads((tmp_path / name / FAILURE_MARKER).read_text())
    assert marker["epoch"] == 1 and marker["rank"] == 1
    check_resumed_once(tmp_path / name, args, epochs=2)


# ---------------------------------------------------------------------------------------------- SIGKILL


def process_table() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, command line) of every process now alive (from /proc)."""
    table = {}
    for folder in Path("/proc").glob("[0-9]*"):
        try:
            stat = (folder / "stat").read_text()
            cmdline = (folder / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        table[int(folder.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline.strip())
    return table


def descendants(root: int, table: dict[int, tuple[int, str]]) -> set[int]:
    """Every process below `root` in `table` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def train_workers() -> list[int]:
    """Ray Train worker processes of this test session's Ray (its raylet is a child of this process).

    A worker's loader processes are forks that carry the same title, so only those whose parent is not a
    train worker count."""
    table = process_table()
    mine = descendants(os.getpid(), table)
    titled = {pid for pid in mine if table[pid][1].startswith(TRAIN_WORKER_TITLE)}
    return sorted(pid for pid in titled if table[pid][0] not in titled)


def wait_for(what: Callable[[], T], deadline: float, driver: subprocess.Popen, log: Path, doing: str) -> T:
    """Poll `what` until it is truthy; fail (with the driver's log) if the driver ends or time runs out."""
    while time.monotonic() < deadline and driver.poll() is None:
        value = what()
        if value:
            return value
        time.sleep(0.2)
    ended = f"exited with {driver.returncode}" if driver.poll() is not None else "timed out"
    pytest.fail(f"{doing}: the driver {ended}\n{log_text(log)[-4000:]}")


def log_text(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


@contextmanager
def training_driver(args: list[str], log: Path, ray: Any) -> Iterator[subprocess.Popen]:
    """jobs/train_finegym.py in a child process attached to the session's Ray, output to `log`; killed on
    the way out if still running, so a hung run cannot outlive the test."""
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        driver = subprocess.Popen([sys.executable, str(REPO / "jobs" / "train_finegym.py"), *args], cwd=REPO,
                                  env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield driver
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=60)


def test_sigkilled_train_worker_restarts_from_last_checkpoint(ray_session, tiny_shards: Path,
                                                              tmp_path: Path) -> None:
    """SIGKILL of one Ray Train worker process while epoch 1 trains: Ray notices the dead actor, restarts
    the worker group from the epoch 0 checkpoint (max_failures=1), and the run finishes; the killed
    worker's loader processes do not outlive it."""
    epochs = 2
    name = unique_name("sigkill")
    args = tiny_train_args(tiny_shards, tmp_path, name, "--epochs", str(epochs), "--repeat", "4",
                           "--wandb", "disabled", "--max-failures", "1")
    run, log = tmp_path / name, tmp_path / "driver.log"
    deadline = time.monotonic() + RUN_LIMIT_S
    with training_driver(args, log, ray_session) as driver:
        # Ray writes its snapshot once a reported checkpoint is registered (a checkpoint folder alone may
        # still be uploading); rank 0's first progress line of epoch 1 then says that epoch is training.
        wait_for((run / CHECKPOINT_SNAPSHOT).exists, deadline, driver, log, "waiting for a checkpoint")
        wait_for(lambda: "] epoch 1 step " in log_text(log), deadline, driver, log, "waiting for epoch 1")
        victim = wait_for(train_workers, deadline, driver, log, "looking for the train workers")[0]
        loaders = descendants(victim, process_table())
        os.kill(victim, signal.SIGKILL)
        try:
            code = driver.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            pytest.fail(f"the run hung after its worker {victim} was killed\n{log_text(log)[-4000:]}")
    assert code == 0, log_text(log)[-4000:]
    check_resumed_once(run, args, epochs)
    table = process_table()
    orphans = sorted(pid for pid in loaders if table.get(pid, (0, ""))[1].startswith(TRAIN_WORKER_TITLE))
    assert not orphans, f"the killed worker's loader processes outlived it: {orphans}"
