"""Write the shards of a build: one task per shard computes its videos' intensity curves and writes
its tar and intensity table; an executor runs the tasks.

A task (:class:`ShardTask`) is plain, picklable data, so any executor can run ``write_shard_task``
wherever it likes and return the :class:`ShardResult` for the manifest. The builder takes the
executor as an argument (:data:`RunTasks`): :func:`run_local` (this process or a process pool) is the
default; the Ray executor lives in ``intint.train.shard_tasks``, the only stage that talks to Ray.
Every executor writes the same bytes, because the plan is fixed before any task runs.

Pool workers die with the build: each one asks the kernel for SIGKILL when its parent dies
(``prctl(PR_SET_PDEATHSIG)`` on Linux; elsewhere a thread watches ``os.getppid()``), so a build killed
by SIGTERM or SIGKILL leaves no orphaned worker writing into its output.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from intint.pose import intensity
from intint.pose.annotations import Sample
from intint.store import shardio


@dataclass
class ShardTask:
    """One shard to write; picklable, so it travels to pool workers and Ray tasks as is."""

    split: str
    index: int
    tar_url: str
    arrow_url: str
    samples: list[Sample]
    modes: tuple[str, ...]
    jba_accuracies: dict[str, float] | None


@dataclass
class ShardResult:
    split: str
    index: int
    entry: shardio.ShardEntry


# (tasks, workers, progress) -> one result per task, in any order
RunTasks = Callable[[list[ShardTask], int, bool], list[ShardResult]]


def intensity_columns(modes: Sequence[str]) -> list[str]:
    return [shardio.curve_column(m, d) for m in modes for d in intensity.DEFINITIONS]


def sample_intensity(sample: Sample, modes: Sequence[str], jba_accuracies: Mapping[str, float] | None,
                     ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """All curves and peaks of one video; a curve of the wrong length or with NaN/inf is an error
    naming the sample and the column (it would silently misplace every training clip). Validation
    bounds coordinates (``intint.pose.annotations``), so a validated sample never produces one: this
    stops the build only on a bug, never on a sample."""
    curves: dict[str, np.ndarray] = {}
    peaks: dict[str, int] = {}
    for mode in modes:
        result = intensity.compute(sample.keypoint, sample.keypoint_score, mode, jba_accuracies,
                                   frame_dir=sample.frame_dir)
        for name in intensity.DEFINITIONS:
            curve = result[name]
            if curve.shape != (sample.total_frames,):
                raise ValueError(f"sample {sample.frame_dir!r}, intensity column "
                                 f"{shardio.curve_column(mode, name)!r}: expected {sample.total_frames} "
                                 f"values, got shape {curve.shape}")
        stacked = np.stack([result[name] for name in intensity.DEFINITIONS])  # D×T
        finite = np.isfinite(stacked).all(axis=1)
        if not finite.all():
            bad = [shardio.curve_column(mode, n) for n, ok in zip(intensity.DEFINITIONS, finite, strict=True)
                   if not ok]
            raise ValueError(f"sample {sample.frame_dir!r}, intensity column(s) {bad}: non-finite values")
        # First argmax of every curve at once: the same rule as intensity.peak (checked in tests).
        first_max = np.argmax(stacked, axis=1)
        for name, curve, top in zip(intensity.DEFINITIONS, stacked, first_max, strict=True):
            col = shardio.curve_column(mode, name)
            curves[col] = curve
            peaks[col] = int(top)
    return curves, peaks


def write_shard_task(task: ShardTask) -> ShardResult:
    """Compute the intensity of a shard's videos and write its tar and table (runs in a worker)."""
    rows = [sample_intensity(s, task.modes, task.jba_accuracies) for s in task.samples]
    sha = shardio.write_shard(task.tar_url, task.arrow_url, task.samples, [c for c, _ in rows],
                              [p for _, p in rows], intensity_columns(task.modes))
    tar_name, arrow_name = shardio.shard_names(task.split, task.index)
    return ShardResult(task.split, task.index,
                       shardio.ShardEntry(tar=tar_name, arrow=arrow_name, num_samples=len(task.samples),
                                          sha256=sha))


def progress_bar(total: int, progress: bool) -> tqdm:
    """The executors' progress bar over shards (on stderr; off when ``progress`` is False)."""
    return tqdm(total=total, unit="shard", desc="writing shards", disable=not progress, file=sys.stderr)


def run_local(tasks: list[ShardTask], workers: int, progress: bool) -> list[ShardResult]:
    """In this process (workers == 1), else a process pool over shards (fork where available: the
    workers inherit the imported modules instead of re-importing them)."""
    results: list[ShardResult] = []
    if workers <= 1 or len(tasks) <= 1:
        with progress_bar(len(tasks), progress) as bar:
            for task in tasks:
                results.append(write_shard_task(task))
                bar.update(1)
        return results
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx,
                             initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        # Submitting forks the workers; the progress bar (and tqdm's monitor thread) comes after,
        # so no thread of ours exists at fork time.
        pending: set[Future[ShardResult]] = {pool.submit(write_shard_task, t) for t in tasks}
        with progress_bar(len(tasks), progress) as bar:
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        results.append(fut.result())
                        bar.update(1)
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise
    return results


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """Pool-worker initializer: end this process as soon as ``parent_pid`` (the build) is gone.

    On Linux the kernel sends SIGKILL at the parent's death (``PR_SET_PDEATHSIG``), checked once
    against a parent that died before the request; elsewhere (or if ``prctl`` is unavailable) a
    daemon thread polls ``os.getppid()``.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0:
                if os.getppid() != parent_pid:
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), name="intint-parent-watch",
                     daemon=True).start()


def _exit_when_orphaned(parent_pid: int, period: float = 0.5) -> None:
    """Poll until this process's parent is no longer ``parent_pid``, then exit at once."""
    while os.getppid() == parent_pid:
        time.sleep(period)
    os._exit(1)
