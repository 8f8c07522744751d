"""Build a shard set from a PYSKL annotation file: validate → shuffle → assign to shards →
compute intensity → write, in parallel (process pool or Ray tasks).

Why the steps are ordered this way: validation and the shuffle run once in the driver, so the shard
plan (which video goes in which shard, in which order) depends only on the input, the selected
splits and the seed — never on the number of workers or on Ray — and every executor writes the same
bytes. Intensity is computed here, once per video and mode, instead of per sample per epoch as in the
reference (spec §10). The manifest is written last: its presence marks a finished build.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from intint.pose import annotations, intensity
from intint.pose.annotations import Sample, Validated
from intint.store import fsio, shardio

DEFAULT_SHARD_SIZE = 2000  # ≈ 100-200 MB tars on FineGYM/HMDB51-sized videos


@dataclass
class BuildConfig:
    """Everything that decides a shard set. Only ``output``, ``workers``, ``ray`` and ``progress``
    may differ between two builds that must be byte-identical; the rest is recorded in the manifest.

    ``input``: annotation file (path or fsspec URL). ``classes``: class-name file (one per line);
    without it ``num_classes`` (or max label + 1) names them ``class_0..``. ``splits``: subset to
    build (default all). ``shard_size``: videos per shard, or ``num_shards`` per split to fix the
    count (e.g. a multiple of ranks × loader workers). ``modes``: intensity modes to precompute.
    ``jba_accuracies``: accuracies behind ``JBA_weighted`` (default: the reference θ).
    ``workers``: processes (None = all cores). ``strict``: stop at the first bad sample.
    """

    input: str
    output: str
    classes: str | None = None
    num_classes: int | None = None
    dataset: str | None = None
    splits: tuple[str, ...] | None = None
    shard_size: int = DEFAULT_SHARD_SIZE
    num_shards: int | None = None
    seed: int = 0
    modes: tuple[str, ...] = intensity.MODES
    jba_accuracies: dict[str, float] | None = None
    workers: int | None = None
    ray: bool = False
    strict: bool = False
    overwrite: bool = False
    progress: bool = True

    def check(self) -> None:
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.num_shards is not None and self.num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {self.num_shards}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        bad = [m for m in self.modes if m not in intensity.MODES]
        if bad or not self.modes:
            raise ValueError(f"modes must be a non-empty subset of {intensity.MODES}, got {list(self.modes)}")


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


@dataclass
class SplitSummary:
    listed: int
    written: int
    rejected: int
    shards: int


@dataclass
class BuildSummary:
    """Totals that prove every input is accounted for: per split ``listed == written + rejected``,
    and ``inputs == written_inputs + rejected_inputs + unselected``."""

    output: str
    inputs: int
    written_inputs: int
    rejected_inputs: int
    unselected: int
    nonfinite: int
    rejects: int
    splits: dict[str, SplitSummary] = field(default_factory=dict)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [f"shard set: {self.output}",
               f"inputs: {self.inputs} annotations = {self.written_inputs} written + "
               f"{self.rejected_inputs} rejected + {self.unselected} only in unselected splits",
               f"non-finite joints made absent: {self.nonfinite}",
               f"rejects.jsonl: {self.rejects} lines"]
        for name, s in self.splits.items():
            out.append(f"  {name}: listed {s.listed} = written {s.written} + rejected {s.rejected} "
                       f"({s.shards} shards)")
        out.append(f"built in {self.seconds:.1f} s")
        return out


def read_class_names(url: str) -> list[str]:
    """Class names, one per line (trailing blank lines ignored; a blank line inside is an error)."""
    lines = fsio.read_bytes(url).decode("utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    names = [ln.strip() for ln in lines]
    blank = [i + 1 for i, n in enumerate(names) if not n]
    if blank or not names:
        raise ValueError(f"{url}: class-name file has blank line(s) {blank}" if blank
                         else f"{url}: no class names")
    return names


def split_sizes(n: int, shard_size: int, num_shards: int | None, split: str) -> list[int]:
    """Shard sizes of a split of ``n`` videos: as equal as possible (they differ by at most one),
    so ranks reading whole shards get equal work."""
    if n == 0:
        return []
    k = num_shards if num_shards is not None else math.ceil(n / shard_size)
    if k > n:
        raise ValueError(f"split {split!r} has {n} videos, too few for {k} shards (--num-shards)")
    base, extra = divmod(n, k)
    return [base + 1] * extra + [base] * (k - extra)


def split_rng(seed: int, split: str) -> np.random.Generator:
    """The shuffle RNG of one split: depends on the seed and the split's name only, so building a
    subset of the splits gives the same shards for those splits."""
    digest = hashlib.sha256(split.encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def plan(validated: Validated, cfg: BuildConfig) -> list[ShardTask]:
    """Shuffle each split with its seeded RNG and cut it into shards, in shard-index order."""
    tasks: list[ShardTask] = []
    for split, frame_dirs in validated.splits.items():
        order = split_rng(cfg.seed, split).permutation(len(frame_dirs))
        start = 0
        for index, size in enumerate(split_sizes(len(frame_dirs), cfg.shard_size, cfg.num_shards, split)):
            tar, arrow = shardio.shard_names(split, index)
            chosen = [validated.samples[frame_dirs[i]] for i in order[start:start + size]]
            tasks.append(ShardTask(split, index, fsio.join(cfg.output, tar), fsio.join(cfg.output, arrow),
                                   chosen, tuple(cfg.modes), cfg.jba_accuracies))
            start += size
    return tasks


def intensity_columns(modes: Sequence[str]) -> list[str]:
    return [shardio.curve_column(m, d) for m in modes for d in intensity.DEFINITIONS]


def sample_intensity(sample: Sample, modes: Sequence[str], jba_accuracies: Mapping[str, float] | None,
                     ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """All curves and peaks of one video; a curve of the wrong length or with NaN/inf is an error
    naming the sample and the column (it would silently misplace every training clip)."""
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


# ---------------------------------------------------------------------------------------- executors

def _bar(total: int, progress: bool) -> tqdm:
    return tqdm(total=total, unit="shard", desc="writing shards", disable=not progress, file=sys.stderr)


def run_local(tasks: list[ShardTask], workers: int, progress: bool) -> list[ShardResult]:
    """In this process (workers == 1), else a process pool over shards (fork where available: the
    workers inherit the imported modules instead of re-importing them)."""
    results: list[ShardResult] = []
    if workers <= 1 or len(tasks) <= 1:
        with _bar(len(tasks), progress) as bar:
            for task in tasks:
                results.append(write_shard_task(task))
                bar.update(1)
        return results
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
        # Submitting forks the workers; the progress bar (and tqdm's monitor thread) comes after,
        # so no thread of ours exists at fork time.
        pending: set[Future[ShardResult]] = {pool.submit(write_shard_task, t) for t in tasks}
        with _bar(len(tasks), progress) as bar:
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


def _ray_init(workers: int) -> bool:
    """Attach to RAY_ADDRESS when set, else start a private local instance; True if we started it."""
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        # Local Ray workers inherit this process's environment; put intint's folder on their
        # PYTHONPATH so they import it even when it is not installed. (A runtime_env would do the
        # same but costs seconds of runtime-env-agent start-up.)
        pkg_parent = str(Path(__file__).resolve().parents[2])
        previous = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, previous) if p)
        try:
            ray.init(address="local", num_cpus=workers, include_dashboard=False)
        finally:
            if previous is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = previous
    return True


def run_ray(tasks: list[ShardTask], workers: int, progress: bool) -> list[ShardResult]:
    """One Ray task per shard (1 CPU each); tasks write straight to the output URL."""
    import ray

    started = _ray_init(workers)
    try:
        remote = ray.remote(num_cpus=1)(write_shard_task)
        refs = {remote.remote(t): t for t in tasks}
        results: list[ShardResult] = []
        with _bar(len(tasks), progress) as bar:
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        results.append(ray.get(ref))
                    except ray.exceptions.RayTaskError as e:
                        t = refs[ref]
                        for other in pending:
                            ray.cancel(other)
                        raise RuntimeError(f"Ray task for shard {t.tar_url} failed: {e}") from e
                    bar.update(1)
        return results
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------------------------------- build


def _class_names(cfg: BuildConfig, raw: dict) -> list[str] | None:
    if cfg.classes is not None:
        names = read_class_names(cfg.classes)
        if cfg.num_classes is not None and cfg.num_classes != len(names):
            raise ValueError(
                f"num_classes {cfg.num_classes} disagrees with {len(names)} names in {cfg.classes}")
        return names
    if cfg.num_classes is not None:
        return [f"class_{i}" for i in range(cfg.num_classes)]
    return None


def _remove_stale(cfg: BuildConfig, old: shardio.Manifest | None, written: Iterable[str]) -> None:
    """After an overwrite, delete shard files the old manifest listed and this build did not write."""
    if old is None:
        return
    keep = set(written)
    fs, _ = fsio.url_to_fs(cfg.output)
    for info in old.splits.values():
        for e in info.shards:
            for name in (e.tar, e.arrow):
                if name not in keep:
                    _, path = fsio.url_to_fs(fsio.join(cfg.output, name))
                    if fs.exists(path):
                        fs.rm(path)


def build(cfg: BuildConfig, raw: dict | None = None, input_sha256: str | None = None) -> BuildSummary:
    """Build the shard set ``cfg`` describes and return its summary.

    ``raw`` passes an already-loaded annotation dict (e.g. the synthetic generator's) instead of
    reading ``cfg.input``; ``cfg.input`` then only labels it in the manifest.
    """
    t0 = time.perf_counter()
    cfg.check()
    if raw is None:
        data = fsio.read_bytes(cfg.input)
        input_sha256 = fsio.sha256_bytes(data)
        raw = annotations.check_top_level(annotations.safe_loads(data), source=cfg.input)
    old: shardio.Manifest | None = None
    if fsio.exists(shardio.manifest_url(cfg.output)):
        if not cfg.overwrite:
            raise FileExistsError(f"{cfg.output} already holds a shard set (manifest.json); pass overwrite "
                                  "(--overwrite) to replace it")
        old = shardio.read_manifest(cfg.output)
        fs, mpath = fsio.url_to_fs(shardio.manifest_url(cfg.output))
        fs.rm(mpath)  # an interrupted rebuild must not look finished

    classes = _class_names(cfg, raw)
    validated = annotations.validate(raw, num_classes=len(classes) if classes else None,
                                     splits=cfg.splits, strict=cfg.strict)
    if classes is None:
        top = max((s.label for s in validated.samples.values()), default=-1)
        classes = [f"class_{i}" for i in range(top + 1)]

    tasks = plan(validated, cfg)
    fsio.makedirs(cfg.output)
    workers = cfg.workers or os.cpu_count() or 1
    if fsio.is_process_local(cfg.output):
        if cfg.ray:
            raise ValueError(
                f"{cfg.output}: a memory:// shard set lives in this process; Ray tasks cannot write it")
        workers = 1
    results = (run_ray if cfg.ray else run_local)(tasks, workers, cfg.progress)
    results.sort(key=lambda r: (list(validated.splits).index(r.split), r.index))

    splits = {name: shardio.SplitInfo(num_samples=len(fds),
                                      shards=[r.entry for r in results if r.split == name])
              for name, fds in validated.splits.items()}
    for name, info in splits.items():
        written = sum(e.num_samples for e in info.shards)
        if written != info.num_samples:
            raise RuntimeError(f"split {name!r}: shards hold {written} videos, expected {info.num_samples}")
    shardio.write_rejects(cfg.output, validated.rejects)
    manifest = shardio.Manifest(
        dataset=cfg.dataset or Path(cfg.input.rstrip("/")).name.split(".")[0],
        classes=classes,
        splits=splits,
        intensity=shardio.IntensityInfo(modes=list(cfg.modes), definitions=list(intensity.DEFINITIONS),
                                        jba_weights=jba_weights(cfg.jba_accuracies)),
        build_args=build_args(cfg, input_sha256),
        rejects=len(validated.rejects),
    )
    shardio.write_manifest(cfg.output, manifest)
    _remove_stale(cfg, old, (n for r in results for n in (r.entry.tar, r.entry.arrow)))
    return _summary(cfg, validated, splits, time.perf_counter() - t0)


def jba_weights(accuracies: Mapping[str, float] | None) -> dict[str, Any]:
    """What ``JBA_weighted`` was built with: the accuracies and the normalised weights per mode."""
    acc = dict(intensity.REFERENCE_THETA if accuracies is None else accuracies)
    return {"accuracies": acc, **{m: intensity.weights_from_accuracies(acc, m) for m in intensity.MODES}}


def build_args(cfg: BuildConfig, input_sha256: str | None) -> dict[str, Any]:
    """The arguments that decide the content (not output/workers/ray/progress), for the manifest."""
    return {"input": cfg.input, "input_sha256": input_sha256, "classes": cfg.classes,
            "num_classes": cfg.num_classes, "splits": list(cfg.splits) if cfg.splits else None,
            "shard_size": cfg.shard_size, "num_shards": cfg.num_shards, "seed": cfg.seed,
            "modes": list(cfg.modes), "jba_accuracies": cfg.jba_accuracies, "strict": cfg.strict}


def _summary(cfg: BuildConfig, v: Validated, splits: Mapping[str, shardio.SplitInfo],
             seconds: float) -> BuildSummary:
    summary = BuildSummary(output=cfg.output, inputs=v.inputs, written_inputs=len(v.samples),
                           rejected_inputs=v.rejected_inputs, unselected=v.unselected, nonfinite=v.nonfinite,
                           rejects=len(v.rejects), seconds=seconds)
    for name, info in splits.items():
        summary.splits[name] = SplitSummary(listed=v.listed[name], written=info.num_samples,
                                            rejected=v.split_rejects[name], shards=len(info.shards))
        if v.listed[name] != info.num_samples + v.split_rejects[name]:
            raise RuntimeError(f"split {name!r}: listed {v.listed[name]} != written {info.num_samples} "
                               f"+ rejected {v.split_rejects[name]}")
    if v.inputs != len(v.samples) + v.rejected_inputs + v.unselected:
        raise RuntimeError(f"inputs {v.inputs} != written {len(v.samples)} + rejected {v.rejected_inputs} "
                           f"+ unselected {v.unselected}")
    return summary
