"""Build a shard set from a PYSKL annotation file: validate → shuffle → assign to shards →
compute intensity → write, in parallel (a process pool here, or whatever executor the caller passes,
e.g. Ray tasks from ``intint.train.shard_tasks``).

Why the steps are ordered this way: validation and the shuffle run once in the driver, so the shard
plan (which video goes in which shard, in which order) depends only on the input, the selected
splits and the seed — never on the number of workers or on the executor — and every executor writes
the same bytes. Intensity is computed by the shard tasks (``intint.store.shard_writer``), once per
video and mode, instead of per sample per epoch as in the reference (docs/method.md §10). The manifest
is written last: its presence marks a finished build.

Everything is written into a staging folder inside the output and published only once complete
(``intint.store.staging``): a failed build leaves an existing set untouched, and ``overwrite`` deletes
only files the old, validated manifest names inside the output.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from intint.pose import annotations, intensity
from intint.pose.annotations import Validated
from intint.store import fsio, shardio, staging
from intint.store.annotation_file import read_annotations_and_sha256
from intint.store.shard_writer import RunTasks, ShardResult, ShardTask, run_local

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 2000  # ≈ 100-200 MB tars on FineGYM/HMDB51-sized videos


@dataclass
class BuildConfig:
    """Everything that decides a shard set. Only ``output``, ``workers`` and ``progress`` (and the
    executor passed to :func:`build`) may differ between two builds that must be byte-identical; the
    rest is recorded in the manifest.

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
    strict: bool = False
    overwrite: bool = False
    progress: bool = True

    def check(self) -> None:
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
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


def plan(validated: Validated, cfg: BuildConfig, folder: str | None = None) -> list[ShardTask]:
    """Shuffle each split with its seeded RNG and cut it into shards, in shard-index order; the tasks
    write into ``folder`` (default ``cfg.output``; the builder passes its staging folder)."""
    folder = cfg.output if folder is None else folder
    tasks: list[ShardTask] = []
    for split, frame_dirs in validated.splits.items():
        order = split_rng(cfg.seed, split).permutation(len(frame_dirs))
        start = 0
        for index, size in enumerate(split_sizes(len(frame_dirs), cfg.shard_size, cfg.num_shards, split)):
            tar, arrow = shardio.shard_names(split, index)
            chosen = [validated.samples[frame_dirs[i]] for i in order[start:start + size]]
            tasks.append(ShardTask(split, index, fsio.child(folder, tar), fsio.child(folder, arrow),
                                   chosen, tuple(cfg.modes), cfg.jba_accuracies))
            start += size
    return tasks


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


def build(cfg: BuildConfig, raw: dict | None = None, input_sha256: str | None = None,
          run_tasks: RunTasks = run_local) -> BuildSummary:
    """Build the shard set ``cfg`` describes and return its summary.

    ``raw`` passes an already-loaded annotation dict (e.g. the synthetic generator's) instead of
    reading ``cfg.input``; ``cfg.input`` then only labels it in the manifest. ``run_tasks`` runs the
    shard-writing tasks (default: this process or a process pool of ``cfg.workers``). Nothing at
    ``cfg.output`` changes until every new file is written (see the module docstring).
    """
    t0 = time.perf_counter()
    cfg.check()
    fsio.check_bucket(cfg.output)  # a misspelt bucket fails now, before the input is read, and is never made
    old = _old_set(cfg)
    if raw is None:
        raw, input_sha256 = read_annotations_and_sha256(cfg.input)
    classes = _class_names(cfg, raw)
    validated = annotations.validate(raw, num_classes=len(classes) if classes else None,
                                     splits=cfg.splits, strict=cfg.strict)
    if classes is None:
        top = max((s.label for s in validated.samples.values()), default=-1)
        classes = [f"class_{i}" for i in range(top + 1)]
    stage = staging.new_staging(cfg.output)
    tasks = plan(validated, cfg, stage.url)
    fsio.makedirs(cfg.output)
    staging.remove_temporaries(cfg.output)
    try:
        staging.create(stage)
        results = run_tasks(tasks, _workers(cfg, run_tasks), cfg.progress)
        results.sort(key=lambda r: (list(validated.splits).index(r.split), r.index))
        splits = _split_infos(validated, results)
        summary = _summary(cfg, validated, splits)
        shardio.write_rejects(stage.url, validated.rejects)
        manifest = _manifest(cfg, classes, splits, input_sha256, len(validated.rejects))
        shardio.write_manifest(stage.url, manifest)
        staging.publish(stage, (n for r in results for n in (r.entry.tar, r.entry.arrow)), old)
    finally:
        staging.discard(stage)
    summary.seconds = time.perf_counter() - t0
    return summary


def _manifest(cfg: BuildConfig, classes: list[str], splits: dict[str, shardio.SplitInfo],
              input_sha256: str | None, rejects: int) -> shardio.Manifest:
    return shardio.Manifest(
        dataset=cfg.dataset or Path(cfg.input.rstrip("/")).name.split(".")[0],
        classes=classes,
        splits=splits,
        intensity=shardio.IntensityInfo(modes=list(cfg.modes), definitions=list(intensity.DEFINITIONS),
                                        jba_weights=jba_weights(cfg.jba_accuracies)),
        build_args=build_args(cfg, input_sha256),
        rejects=rejects,
    )


def _old_set(cfg: BuildConfig) -> shardio.Manifest | None:
    """The validated manifest of a shard set already at ``cfg.output`` (None if there is none); without
    ``overwrite`` an existing set is an error. A manifest that fails validation (e.g. names a file
    outside the set) is replaced, but none of the files it lists is deleted."""
    if not fsio.exists(shardio.manifest_url(cfg.output)):
        return None
    if not cfg.overwrite:
        raise FileExistsError(f"{cfg.output} already holds a shard set (manifest.json); pass overwrite "
                              "(--overwrite) to replace it")
    try:
        return shardio.read_manifest(cfg.output)
    except ValueError as e:  # ShardFormatError, bad JSON or UTF-8
        log.warning("%s: the old manifest is invalid (%s); replacing it without deleting any file it lists",
                    cfg.output, e)
        return None


def _workers(cfg: BuildConfig, run_tasks: RunTasks) -> int:
    """Parallel shard writers: ``cfg.workers`` or all cores; 1 for a memory:// output, which only this
    process can see (so only the local executor can write it)."""
    if not fsio.is_process_local(cfg.output):
        return cfg.workers or os.cpu_count() or 1
    if run_tasks is not run_local:
        raise ValueError(f"{cfg.output}: a memory:// shard set lives in this process; tasks in other "
                         "processes (--ray) cannot write it")
    return 1


def _split_infos(validated: Validated, results: list[ShardResult]) -> dict[str, shardio.SplitInfo]:
    """The manifest's per-split shard lists, checked to hold every video the split will write."""
    splits = {name: shardio.SplitInfo(num_samples=len(fds),
                                      shards=[r.entry for r in results if r.split == name])
              for name, fds in validated.splits.items()}
    for name, info in splits.items():
        written = sum(e.num_samples for e in info.shards)
        if written != info.num_samples:
            raise RuntimeError(f"split {name!r}: shards hold {written} videos, expected {info.num_samples}")
    return splits


def jba_weights(accuracies: Mapping[str, float] | None) -> dict[str, Any]:
    """What ``JBA_weighted`` was built with: the accuracies and the normalised weights per mode."""
    acc = dict(intensity.REFERENCE_THETA if accuracies is None else accuracies)
    return {"accuracies": acc, **{m: intensity.weights_from_accuracies(acc, m) for m in intensity.MODES}}


def build_args(cfg: BuildConfig, input_sha256: str | None) -> dict[str, Any]:
    """The arguments that decide the content (not output/workers/progress), for the manifest."""
    return {"input": cfg.input, "input_sha256": input_sha256, "classes": cfg.classes,
            "num_classes": cfg.num_classes, "splits": list(cfg.splits) if cfg.splits else None,
            "shard_size": cfg.shard_size, "num_shards": cfg.num_shards, "seed": cfg.seed,
            "modes": list(cfg.modes), "jba_accuracies": cfg.jba_accuracies, "strict": cfg.strict}


def _summary(cfg: BuildConfig, v: Validated, splits: Mapping[str, shardio.SplitInfo]) -> BuildSummary:
    """The build's totals, checked to account for every input before anything is published."""
    summary = BuildSummary(output=cfg.output, inputs=v.inputs, written_inputs=len(v.samples),
                           rejected_inputs=v.rejected_inputs, unselected=v.unselected, nonfinite=v.nonfinite,
                           rejects=len(v.rejects))
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
