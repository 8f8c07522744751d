"""Benchmark: two-pathway training samples/s through the streaming loader, against a reference-style
per-joint NumPy renderer measured in the same run.

For each persons-per-video M the script builds a synthetic shard set with the real builder, then for each
``heatmaps_on`` (workers, device) and DataLoader worker count runs ``train_loader`` (rank 0 of 1) for a
few seconds and counts what the training loop receives. Timing starts after a warm-up of workers × ring
slots batches (``--warmup-batches``; a rendering worker pages in its recycled batch buffers once per
lifetime), whose own rate is reported as ``warmup_samples_per_core_s``.

* ``samples_per_core_s``: samples per CPU second of the loader worker processes (the per-core figure
  the targets are stated in; robust to other jobs on a shared machine), with the median and best
  1-second windows; ``samples_per_s`` is the wall-clock rate;
* ``samples_per_core_s_incl_to_device``: the same with ``to_device(batch, "cpu")`` in the loop;
* ``worker_rss_mb`` / ``worker_private_mb``: the largest worker's resident / private memory.

A single-core in-process profile splits one sample's cost into read, decode, sampling + transforms,
render and IPC/collate. ``baseline_samples_per_s`` is the same per-sample path with the heatmaps drawn
the way the reference does (loops over frames × joints × persons, docs/method.md §5); the script checks
that both renderers agree (``baseline_max_abs_diff``).

    python benchmarks/bench_loader.py [--videos 512] [--frames 100 200] [--seconds 4] [--workers 1 2]
                                      [--persons 1 2] [--heatmaps-on workers device] [--json]

Each row records the load average: on a shared machine compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Run from a checkout without relying on an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loader_report import make_row, print_row  # noqa: E402

from intint.loader.batch_transport import BatchBuilder, unpack  # noqa: E402
from intint.loader.clip_maker import ClipMaker  # noqa: E402
from intint.loader.config import LoaderConfig  # noqa: E402
from intint.loader.device import to_device  # noqa: E402
from intint.loader.shared_ring import FREE, Ledger, WorkerBuffers  # noqa: E402
from intint.loader.streams import ring_slots, train_loader  # noqa: E402
from intint.pose.safe_pickle import ALLOWED_GLOBALS, RestrictedUnpickler  # noqa: E402
from intint.pose.transforms import PipelineConfig  # noqa: E402
from intint.render import heatmaps
from intint.store import build, shardio
from intint.store.shardstream import decode, raw_samples, read_peaks, shard_refs  # noqa: E402
from intint.testing import synthetic  # noqa: E402

EPS = 1e-3  # GeneratePoseTarget's score floor
WINDOW_S = 1.0  # worker CPU is also sampled per window: a shared host's speed drifts within seconds


# ------------------------------------------------------------------------------------ data


def annotations(videos: int, persons: int, frames: tuple[int, int], seed: int) -> dict[str, Any]:
    """Synthetic PYSKL annotations with exactly ``persons`` person slots per video.

    The generator draws 1..max_persons slots; for M = 2 a video drawn with one person gets a second,
    its horizontal mirror image (present in every frame), so every video renders two people.
    """
    raw = synthetic.make_annotations(videos, 10, splits={"train": 1.0}, seed=seed, frames=frames,
                                     max_persons=persons)
    for ann in raw["annotations"]:
        kp, score = ann["keypoint"], ann["keypoint_score"]
        while kp.shape[0] < persons:
            w = ann["img_shape"][1]
            mirror = kp[:1].copy()
            mirror[..., 0] = np.where(mirror[..., 0] != 0, w - mirror[..., 0], 0)
            kp = np.concatenate([kp, mirror])
            score = np.concatenate([score, score[:1]])
        ann["keypoint"], ann["keypoint_score"] = kp, score
    return raw


def build_shards(root: Path, persons: int, args: argparse.Namespace) -> str:
    out = root / f"m{persons}"
    raw = annotations(args.videos, persons, tuple(args.frames), args.seed)
    build.build(build.BuildConfig(input=f"synthetic-m{persons}", output=str(out), num_shards=args.shards,
                                  modes=("reference",), workers=1, progress=False, overwrite=True), raw=raw)
    return str(out)


# ------------------------------------------------------------------------------------ baseline renderer


def reference_render(keypoint: np.ndarray, score: np.ndarray, height: int, width: int,
                     sigma: float) -> np.ndarray:
    """GeneratePoseTarget(with_kp=True) as the reference writes it: for every frame, joint and person a
    ±3σ patch, combined by maximum, then FormatShape's transpose. Returns V×T×H×W float32."""
    persons, frames, joints, _ = keypoint.shape
    ret = np.zeros((frames, joints, height, width), dtype=np.float32)
    for t in range(frames):
        for v in range(joints):
            for m in range(persons):
                c = score[m, t, v]
                if c < EPS:
                    continue
                mu_x, mu_y = keypoint[m, t, v, 0], keypoint[m, t, v, 1]
                st_x, ed_x = max(int(mu_x - 3 * sigma), 0), min(int(mu_x + 3 * sigma) + 1, width)
                st_y, ed_y = max(int(mu_y - 3 * sigma), 0), min(int(mu_y + 3 * sigma) + 1, height)
                x = np.arange(st_x, ed_x, 1, np.float32)
                y = np.arange(st_y, ed_y, 1, np.float32)
                if not (len(x) and len(y)):
                    continue
                y = y[:, None]
                patch = np.exp(-((x - mu_x) ** 2 + (y - mu_y) ** 2) / 2 / sigma**2) * c
                region = ret[t, v, st_y:ed_y, st_x:ed_x]
                ret[t, v, st_y:ed_y, st_x:ed_x] = np.maximum(region, patch)
    return np.ascontiguousarray(ret.transpose(1, 0, 2, 3))


# ------------------------------------------------------------------------------------ measurements


def _children() -> list[int]:
    pids: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def worker_memory() -> tuple[float, float]:
    """Largest (RSS, private) memory in MB over this process' children (the DataLoader workers).

    RSS counts pages shared with the parent after fork (torch's libraries, the parent's heap); the
    private figure (Private_Clean + Private_Dirty of smaps_rollup) is what each worker adds.
    """
    rss, private = 0.0, 0.0
    for pid in _children():
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        kb = {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
        rss = max(rss, kb.get("Rss", 0) / 1024)
        private = max(private, (kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)) / 1024)
    return round(rss, 1), round(private, 1)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (page faults land in system time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_run(cfg: LoaderConfig, seconds: float, with_to_device: bool, warmup: int) -> dict[str, float]:
    """What the training loop receives in the steady state: after the first batch (worker start-up) and
    ``warmup`` more batches (rendering workers page in their ring of recycled batch buffers during their
    first batches, once per worker lifetime), samples per wall second, and per CPU second of the loader
    worker processes (the per-core figure, robust to other jobs sharing the machine) and of the main
    process. The warm-up batches' own rate is reported too (``warmup_samples_per_worker_cpu_s``)."""
    loader = train_loader(cfg, 0, 1)
    batches = iter(loader)
    next(batches)
    workers = _children()
    warm_cpu, warm_samples = sum(map(_cpu_seconds, workers)), 0
    for _ in range(warmup):
        try:
            warm_samples += len(next(batches)["key"])
        except StopIteration:
            batches = iter(loader)
    warm_cpu = sum(map(_cpu_seconds, workers)) - warm_cpu
    samples, batches_seen, memory = 0, 0, (0.0, 0.0)
    recycled_before = loader.recycled_batches
    start, worker_cpu, main_cpu = time.perf_counter(), sum(map(_cpu_seconds, workers)), time.process_time()
    window_start, window_cpu, window_samples, window_rates = start, worker_cpu, 0, []
    while (elapsed := time.perf_counter() - start) < seconds:
        if time.perf_counter() - window_start >= WINDOW_S:  # per-window rates: the host's speed drifts
            cpu_now = sum(map(_cpu_seconds, workers))
            if cpu_now > window_cpu:
                window_rates.append(window_samples / (cpu_now - window_cpu))
            window_start, window_cpu, window_samples = time.perf_counter(), cpu_now, 0
        try:
            batch = next(batches)
        except StopIteration:  # next epoch (persistent workers keep running)
            batches = iter(loader)
            continue
        if with_to_device:
            to_device(batch, "cpu", cfg)
        samples += len(batch["key"])
        window_samples += len(batch["key"])
        batches_seen += 1
        if memory == (0.0, 0.0) and elapsed > seconds / 2:
            memory = worker_memory()
    worker_cpu = sum(map(_cpu_seconds, workers)) - worker_cpu
    main_cpu = time.process_time() - main_cpu
    recycled = (loader.recycled_batches - recycled_before) / max(batches_seen, 1)
    del batches, loader
    return {"samples_per_s": samples / elapsed, "samples_per_worker_cpu_s": samples / max(worker_cpu, 1e-9),
            "samples_per_cpu_s": samples / max(worker_cpu + main_cpu, 1e-9),
            "main_cpu_ms_per_sample": main_cpu / max(samples, 1) * 1e3, "rss": memory[0],
            "private": memory[1], "recycled": recycled,
            "window_median": float(np.median(window_rates)) if window_rates else float("nan"),
            "window_best": max(window_rates, default=float("nan")),
            "warmup_samples_per_worker_cpu_s": warm_samples / warm_cpu if warm_cpu > 0 else float("nan")}


class _WireUnpickler(RestrictedUnpickler):
    """The DataLoader hand-off read back with an allow-list: arrays, plus torch's shared-memory tensor
    rebuilders (which take their storage from a passed file descriptor)."""

    allowed = {**ALLOWED_GLOBALS, **{
        (module, name): getattr(importlib.import_module(module), name) for module, name in (
            ("torch", "Size"), ("torch", "Tensor"), ("torch", "float16"), ("torch", "float32"),
            ("torch", "int64"), ("torch.storage", "UntypedStorage"),
            ("torch.multiprocessing.reductions", "rebuild_storage_fd"),
            ("torch.multiprocessing.reductions", "rebuild_tensor"),
            ("torch.multiprocessing.reductions", "rebuild_typed_storage"),
            ("multiprocessing.resource_sharer", "DupFd"))}}


def profile_pass(cfg: LoaderConfig, samples: int, warmup: int = 2) -> dict[str, Any]:
    """One core, in process: CPU seconds per sample in each stage of the worker path, and to_device,
    counted after ``warmup`` whole batches (the first renders page in the recycled buffer)."""
    stages = dict.fromkeys(("read", "decode", "sample_transform", "render", "ipc_collate"), 0.0)
    num_classes = shardio.read_manifest(cfg.shards).num_classes
    to_dev = 0.0
    maker = ClipMaker(cfg.active_pathways, cfg.clip_len, cfg.intensity_definition, cfg.jitter,
                      cfg.pipeline, cfg.max_persons, cfg.seed)
    done = 0
    # One recycled buffer, handed back after each batch: the steady state of a worker's ring.
    ledger = Ledger(1, 1)
    buffers = WorkerBuffers(ledger.flags, 0, 0, {}) if cfg.heatmaps_on == "workers" else None
    builder = BatchBuilder(cfg, cfg.batch_size, None, False, buffers)
    pending: list = []  # decoded videos of the batch being filled (the worker's batch-at-once path)
    full = 0  # samples that went through a whole batch
    shards = shard_refs(cfg.shards, cfg.split)
    while done < samples:
        for shard in shards:
            t = time.process_time()
            peaks = read_peaks(shard, cfg.peak_column) if cfg.needs_peaks else None
            stream = raw_samples(shard, lambda n, msg: None)
            stages["read"] += time.process_time() - t
            while done < samples:
                t0 = time.process_time()
                raw = next(stream, None)
                t1 = time.process_time()
                stages["read"] += t1 - t0
                if raw is None:
                    break
                pending.append(decode(raw, shard.tar, num_classes, peaks))
                stages["decode"] += time.process_time() - t1
                done += 1
                if len(pending) == cfg.batch_size:
                    times = _time_batch(cfg, maker, builder, pending)
                    for stage, seconds in times.items():
                        if stage == "to_device":
                            to_dev += seconds
                        else:
                            stages[stage] += seconds
                    full += len(pending)
                    pending = []
                    warmup -= 1
                    if warmup == 0:  # steady state from here: start counting afresh
                        stages = dict.fromkeys(stages, 0.0)
                        to_dev, done, full = 0.0, 0, 0
                    ledger.flags[0, 0] = FREE
                    builder = BatchBuilder(cfg, cfg.batch_size, None, False, buffers)
    per_sample = {k: v / (done if k in ("read", "decode") else max(full, 1)) for k, v in stages.items()}
    total = sum(per_sample.values())
    return {"stage_ms_per_sample": {k: round(v * 1e3, 4) for k, v in per_sample.items()},
            "stage_share": {k: round(v / total, 4) for k, v in per_sample.items()},
            "in_process_samples_per_cpu_s": 1 / total,
            "to_device_ms_per_sample": round(to_dev / max(full, 1) * 1e3, 4)}


def _time_batch(cfg: LoaderConfig, maker: ClipMaker, builder: BatchBuilder, videos: list) -> dict[str, float]:
    """CPU seconds of one batch's clip making, rendering, hand-off and ``to_device``."""
    t2 = time.process_time()
    clips = maker.train_batch(videos, 0, [v.key for v in videos])
    t3 = time.process_time()
    builder.add_batch(videos, clips)
    wire = builder.finish(0)
    t4 = time.process_time()
    # the DataLoader's hand-off, round-tripped in process: bytes this line just made
    received = unpack(_WireUnpickler(io.BytesIO(ForkingPickler.dumps(wire))).load())
    t5 = time.process_time()
    to_device(received, "cpu", cfg)
    t6 = time.process_time()
    return {"sample_transform": t3 - t2, "render": t4 - t3, "ipc_collate": t5 - t4, "to_device": t6 - t5}


def baseline_pass(cfg: LoaderConfig, samples: int) -> dict[str, float]:
    """The same per-sample path on one core (CPU time) with the reference-style loop renderer; also
    checks that it agrees with ``heatmaps.render`` on every clip it draws."""
    maker = ClipMaker(cfg.active_pathways, cfg.clip_len, cfg.intensity_definition, cfg.jitter,
                      cfg.pipeline, cfg.max_persons, cfg.seed)
    shard = shard_refs(cfg.shards, cfg.split)[0]
    num_classes = shardio.read_manifest(cfg.shards).num_classes
    peaks = read_peaks(shard, cfg.peak_column)
    raws = [r for _, r in zip(range(samples), raw_samples(shard, lambda n, msg: None), strict=False)]
    worst = 0.0
    start = time.process_time()
    drawn = []
    for raw in raws:
        video = decode(raw, shard.tar, num_classes, peaks)
        for clip in maker.train(video, 0, video.key).values():
            h, w = clip.size
            volume = reference_render(clip.keypoint, clip.score, h, w, cfg.sigma)
            drawn.append((clip, torch.from_numpy(volume)))
    elapsed = time.process_time() - start
    for clip, volume in drawn:
        ours = heatmaps.render(clip.keypoint, clip.score, *clip.size, sigma=cfg.sigma)
        worst = max(worst, float((ours - volume).abs().max()))
    return {"baseline_samples_per_cpu_s": len(raws) / elapsed, "baseline_max_abs_diff": worst}


# ------------------------------------------------------------------------------------ main


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=512)
    ap.add_argument("--shards", type=int, default=8, help="shards in the set (a multiple of worker counts)")
    ap.add_argument("--frames", type=int, nargs=2, default=(100, 200), help="range of video lengths T")
    ap.add_argument("--clip-len", type=int, default=48)
    ap.add_argument("--size", type=int, default=56, help="heatmap H = W")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=4.0, help="timed seconds per configuration")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--persons", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--heatmaps-on", nargs="+", default=["workers", "device"], choices=["workers", "device"])
    ap.add_argument("--warmup-batches", type=int, default=None,
                    help="batches received before timing (default: workers × ring slots per worker)")
    ap.add_argument("--profile-samples", type=int, default=256)
    ap.add_argument("--baseline-samples", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON list, a row per configuration")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)  # one core per process: the figures are per core

    pipe = PipelineConfig(train_hw=(args.size, args.size))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="intint-bench-loader-") as tmp:
        for persons in args.persons:
            url = build_shards(Path(tmp), persons, args)
            base_cfg = LoaderConfig(shards=url, batch_size=args.batch_size, clip_len=args.clip_len,
                                    pipeline=pipe, max_persons=max(2, persons), persistent_workers=True)
            baseline = baseline_pass(base_cfg, args.baseline_samples)
            for mode in args.heatmaps_on:
                profile = profile_pass(replace(base_cfg, heatmaps_on=mode), args.profile_samples)
                for workers in args.workers:
                    cfg = replace(base_cfg, heatmaps_on=mode, num_workers=workers)
                    load = os.getloadavg()[0]
                    warmup = workers * ring_slots(cfg) if args.warmup_batches is None else args.warmup_batches
                    alone = timed_run(cfg, args.seconds, with_to_device=False, warmup=warmup)
                    with_dev = timed_run(cfg, args.seconds, with_to_device=True, warmup=warmup)
                    row = make_row(mode, workers, persons, warmup, load, alone, with_dev, baseline,
                                   profile, args)
                    rows.append(row)
                    if not args.json:
                        print_row(row)
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
