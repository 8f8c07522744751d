"""``intint extract-poses``: a folder (or list file) of videos → a PYSKL annotation pickle that
``intint build-shards`` takes unchanged, with ``classes.txt`` and a rejects file beside it (docs/video.md).

The steps: list the videos and fix their labels (``intint.video.sources``) → take the videos the cache
folder already holds (``intint.video.cache``: a re-run resumes) → extract the rest in parallel with
whatever executor the caller passes (:func:`run_local`, a process pool here; Ray tasks from
``intint.train.video_tasks``) → split the extracted videos (``intint.video.splits``) → write the pickle,
``classes.txt`` and ``<name>.rejects.jsonl``. Every listed video ends either in the pickle or in the
rejects file with its reason. The pickle's content depends only on the videos, the estimator, the
class names, the fractions and the seed: never on the executor, the worker count or what was resumed.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from intint.store.build import read_class_names
from intint.store.shard_writer import die_with_parent
from intint.video.cache import PoseCache, cache_folder, cache_key
from intint.video.estimators import EstimatorSpec, check_available, silence_native_stderr
from intint.video.sources import VideoReject, VideoSources, list_videos
from intint.video.splits import DEFAULT_FRACTIONS, check_fractions, stratified_split
from intint.video.video_poses import VideoOutcome, extract_video

log = logging.getLogger(__name__)

CLASSES_FILE = "classes.txt"
SHOWN_REJECTS = 5  # reject lines repeated in the summary (the rejects file has them all)

# (video paths, estimator, workers) -> (index into the paths, outcome) for every video, as each finishes
RunVideos = Callable[[list[str], EstimatorSpec, int], Iterator[tuple[int, VideoOutcome]]]


@dataclass
class ExtractConfig:
    """``source``: a folder ``<class>/<clip>.<ext>`` or a list file of ``<path> <class>`` lines.
    ``output``: the annotation pickle (a local path); ``classes.txt``, ``<stem>.rejects.jsonl`` and the
    cache folder ``<stem>.cache`` go beside it. ``classes``: a class-name file fixing the labels
    (default: the sorted class names found). ``workers``: processes (None = all cores)."""

    source: str
    output: str
    classes: str | None = None
    split_fractions: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    seed: int = 0
    workers: int | None = None
    estimator: EstimatorSpec = field(default_factory=EstimatorSpec)
    progress: bool = True

    def check(self) -> None:
        if not self.output:
            raise ValueError("--output is required")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        check_fractions(self.split_fractions)


@dataclass
class ExtractSummary:
    """What an extraction did: ``listed == extracted + rejected``; ``resumed`` of those came from the
    cache; ``frames`` and ``found_frames`` count the extracted videos' frames (with a person found)."""

    output: str
    classes_file: str
    rejects_file: str
    listed: int
    extracted: int
    rejected: int
    resumed: int
    frames: int
    found_frames: int
    splits: dict[str, int]
    seconds: float
    rejects: list[VideoReject] = field(default_factory=list)

    def lines(self) -> list[str]:
        found = 100.0 * self.found_frames / self.frames if self.frames else 0.0
        out = [f"annotations: {self.output}",
               f"videos: {self.listed} listed = {self.extracted} extracted + {self.rejected} rejected "
               f"({self.resumed} taken from the cache)",
               f"frames: {self.frames}, a person found in {found:.1f} %",
               "splits: " + ", ".join(f"{k} {v}" for k, v in self.splits.items()),
               f"classes: {self.classes_file}",
               f"rejects: {self.rejects_file} ({self.rejected} lines)"]
        out += [f"  rejected {r.frame_dir}: {r.reason}" for r in self.rejects[:SHOWN_REJECTS]]
        if len(self.rejects) > SHOWN_REJECTS:
            out.append(f"  … {len(self.rejects) - SHOWN_REJECTS} more in the rejects file")
        out.append(f"extracted in {self.seconds:.1f} s")
        return out


def _pool_worker_init(parent_pid: int) -> None:
    """A pool worker dies with the extraction, keeps MediaPipe's native chatter off the console and
    OpenCV to one thread (the pool is the parallelism)."""
    die_with_parent(parent_pid)
    silence_native_stderr()
    from intint.video.frames import import_cv2

    import_cv2().setNumThreads(1)


def run_local(paths: list[str], spec: EstimatorSpec, workers: int) -> Iterator[tuple[int, VideoOutcome]]:
    """A pool of ``workers`` processes (one for one worker), each with its own estimator.

    Always worker processes, never this one: the estimator's native code then neither writes over the
    progress bar nor takes the driver down with it. Workers are spawned, not forked (a MediaPipe graph
    or OpenCV's threads in this process must not be copied into a child mid-state), so a script calling
    this needs the usual ``if __name__ == "__main__":`` guard.
    """
    if not paths:
        return
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(paths)), mp_context=ctx,
                             initializer=_pool_worker_init, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(extract_video, path, spec): i for i, path in enumerate(paths)}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield futures[future], future.result()
        except BrokenProcessPool:
            for future in pending:
                future.cancel()
            raise ChildProcessError("a pose-extraction worker process died (out of memory, or a crash in the "
                                    "decoder or estimator); the videos finished so far are cached: re-run to "
                                    "resume, with --workers 1 to find the video that kills it") from None


def _outcomes(cfg: ExtractConfig, sources: VideoSources, run_videos: RunVideos,
              ) -> tuple[list[VideoOutcome], int]:
    """Every job's outcome (cached or extracted now, stored as it arrives) and how many were cached."""
    cache = PoseCache(cache_folder(cfg.output))
    keys = [cache_key(job.path, cfg.estimator) for job in sources.jobs]
    outcomes: list[VideoOutcome | None] = [cache.load(k) for k in keys]
    todo = [i for i, o in enumerate(outcomes) if o is None]
    resumed = len(keys) - len(todo)
    workers = cfg.workers or os.cpu_count() or 1
    if todo:
        log.info("extracting poses from %d videos with %d worker(s) (%d already in %s)", len(todo),
                 min(workers, len(todo)), resumed, cache.folder)
    with tqdm(total=len(keys), initial=resumed, unit="video", desc="extracting poses", file=sys.stderr,
              disable=not cfg.progress or not todo) as bar:
        done = run_videos([sources.jobs[i].path for i in todo], cfg.estimator, workers) if todo else iter(())
        for k, outcome in done:
            i = todo[k]
            cache.store(keys[i], outcome)
            outcomes[i] = outcome
            bar.update(1)
    missing = [sources.jobs[i].frame_dir for i, o in enumerate(outcomes) if o is None]
    if missing:
        raise RuntimeError(f"the executor returned no outcome for {len(missing)} videos, e.g. {missing[:3]}")
    return outcomes, resumed  # type: ignore[return-value]


def _write_outputs(cfg: ExtractConfig, raw: dict[str, Any], classes: list[str],
                   rejects: list[VideoReject]) -> tuple[str, str]:
    """The pickle, ``classes.txt`` and the rejects file, each written atomically."""
    from intint.store import fsio

    folder = os.path.dirname(os.path.abspath(cfg.output))
    classes_file = os.path.join(folder, CLASSES_FILE)
    rejects_file = os.path.splitext(cfg.output)[0] + ".rejects.jsonl"
    fsio.atomic_write(cfg.output, pickle.dumps(raw, protocol=4))
    fsio.atomic_write(classes_file, ("\n".join(classes) + "\n").encode("utf-8"))
    fsio.atomic_write(rejects_file, "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n"
                                            for r in rejects).encode("utf-8"))
    return classes_file, rejects_file


def extract(cfg: ExtractConfig, run_videos: RunVideos = run_local) -> ExtractSummary:
    """Run the extraction ``cfg`` describes (see the module docstring); returns what it did."""
    start = time.perf_counter()
    cfg.check()
    check_available(cfg.estimator)
    names = read_class_names(cfg.classes) if cfg.classes else None
    sources = list_videos(cfg.source, names)
    os.makedirs(os.path.dirname(os.path.abspath(cfg.output)), exist_ok=True)
    outcomes, resumed = _outcomes(cfg, sources, run_videos)
    annotations: list[dict[str, Any]] = []
    rejects = list(sources.rejects)
    by_class: dict[str, list[str]] = {}
    for job, outcome in zip(sources.jobs, outcomes, strict=True):
        if outcome.poses is None:
            rejects.append(VideoReject(job.frame_dir, outcome.reason or "rejected"))
            continue
        annotations.append(outcome.poses.annotation(job.frame_dir, sources.label(job)))
        by_class.setdefault(job.class_name, []).append(job.frame_dir)
    splits = stratified_split(by_class, cfg.split_fractions, cfg.seed)
    classes_file, rejects_file = _write_outputs(
        cfg, {"split": splits, "annotations": annotations}, sources.classes, rejects)
    if not annotations:
        raise ValueError(f"{cfg.source}: none of its {len(sources.jobs)} videos could be extracted (the "
                         f"reasons are in {rejects_file})")
    return ExtractSummary(
        output=cfg.output, classes_file=classes_file, rejects_file=rejects_file,
        listed=len(sources.jobs) + len(sources.rejects), extracted=len(annotations), rejected=len(rejects),
        resumed=resumed, frames=sum(a["total_frames"] for a in annotations),
        found_frames=sum(o.poses.found for o in outcomes if o.poses is not None),
        splits={k: len(v) for k, v in splits.items()}, seconds=time.perf_counter() - start, rejects=rejects)
