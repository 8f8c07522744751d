"""Benchmark: what verifying each shard's SHA-256 as it streams (``LoaderConfig.verify_checksums``) costs.

The loader bench's synthetic shard set (``bench_loader.build_shards``: float16 videos of 100–200 frames,
M persons, built by the real builder) is read two ways in the same process, verification off and on in
alternating rounds (off/on, then on/off: the VM's speed drifts within seconds, so each round's pair is
compared with itself, and the figures are medians over rounds):

* **worker path, one core**: what a loader worker does per sample, in this process (``shard_videos`` →
  ``ClipMaker.train_batch`` → ``BatchBuilder`` into a recycled heatmap buffer, as a worker in its steady
  state; no hand-off to the main process), whole passes over the set, in CPU seconds: per-core loader
  throughput with the least noise from other jobs. ``cost`` = 1 - the median of the rounds' on/off ratios.
* **loader**: ``train_loader`` (rank 0 of 1) with ``--workers`` DataLoader workers for ``--seconds`` per
  run (``bench_loader.timed_run``: steady state after start-up and warm-up): samples per wall second and
  per CPU second of the worker processes (the per-core figure, less disturbed by other jobs on a shared
  machine), and the median of the rounds' on/off ratios per core (``workers_cost``): closer to training,
  noisier on a loaded machine.
* **reader**: ``raw_samples`` + ``decode`` of every shard, in process: CPU µs per sample with and without
  the hash, the check's own cost. ``hash_share`` sets it against the worker path's CPU µs per sample with
  verification off: the cost the other rows should show.

``heatmaps_on="workers"`` is the default loader; ``"device"`` ships keypoint clips, so a sample costs the
least there and the check weighs the most.

    python benchmarks/bench_checksum.py [--rounds 8] [--worker-rounds 4] [--seconds 2] [--workers 1]
                                        [--heatmaps-on workers device] [--persons 1 2] [--json]

The rule this measures for: verification is on by default where it costs under 5 % of loader throughput
(``LoaderConfig.verifies_checksums``: per ``heatmaps_on``; the script prints a verdict per mode from the
worker path's ``cost`` and ``hash_share``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_loader import build_shards, timed_run  # noqa: E402

from intint.loader.batch_transport import BatchBuilder  # noqa: E402
from intint.loader.clip_maker import ClipMaker  # noqa: E402
from intint.loader.config import LoaderConfig  # noqa: E402
from intint.loader.shared_ring import FREE, Ledger, WorkerBuffers  # noqa: E402
from intint.loader.streams import ring_slots  # noqa: E402
from intint.pose.transforms import PipelineConfig  # noqa: E402
from intint.store import shardio, shardstream  # noqa: E402

THRESHOLD = 0.05  # on by default below this share of loader throughput


def _alternating(rounds: int, run: Any) -> dict[bool, list[float]]:
    """``run(verify)`` → a per-sample figure, off and on in each round, the order flipped every round."""
    out: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for verify in ((False, True) if r % 2 == 0 else (True, False)):
            out[verify].append(run(verify))
    return out


def reader_rows(url: str, rounds: int) -> dict[str, float]:
    """CPU µs per sample of reading and decoding every shard, without and with the hash."""
    shards = shardstream.shard_refs(url, "train")
    num_classes = shardio.read_manifest(url).num_classes

    def one_pass(verify: bool) -> float:
        start, n = time.process_time(), 0
        for shard in shards:
            for raw in shardstream.raw_samples(shard, lambda lost, message: None, verify=verify):
                shardstream.decode(raw, shard.tar, num_classes, None)
                n += 1
        return (time.process_time() - start) / n * 1e6

    us = _alternating(2 * rounds, one_pass)
    off, on = statistics.median(us[False]), statistics.median(us[True])
    return {"reader_us_per_sample_off": round(off, 2), "reader_us_per_sample_on": round(on, 2),
            "reader_hash_us_per_sample": round(on - off, 2)}


def pipeline_rows(cfg: LoaderConfig, rounds: int) -> dict[str, Any]:
    """Samples per CPU second of a loader worker's per-sample work, in this process, off and on."""
    shards = shardstream.shard_refs(cfg.shards, cfg.split)
    num_classes = shardio.read_manifest(cfg.shards).num_classes
    peaks = {s.index: shardstream.read_peaks(s, cfg.peak_column) for s in shards}
    maker = ClipMaker(cfg.active_pathways, cfg.clip_len, cfg.intensity_definition, cfg.jitter, cfg.pipeline,
                      cfg.max_persons, cfg.seed)
    ledger = Ledger(1, 1)  # one recycled buffer, handed back after each batch: a worker's steady state
    buffers = WorkerBuffers(ledger.flags, 0, 0, {}) if cfg.heatmaps_on == "workers" else None

    def one_pass(verify: bool) -> float:
        start, n, batch = time.process_time(), 0, []
        for shard in shards:
            for video in shardstream.shard_videos(shard, num_classes, peaks[shard.index],
                                                  lambda lost, message: None, verify=verify):
                batch.append(video)
                if len(batch) == cfg.batch_size:
                    builder = BatchBuilder(cfg, cfg.batch_size, None, False, buffers)
                    builder.add_batch(batch, maker.train_batch(batch, 0, [v.key for v in batch]))
                    builder.finish(0)
                    ledger.flags[0, 0] = FREE
                    n, batch = n + len(batch), []
        return n / (time.process_time() - start)

    one_pass(False)  # first touch of the recycled buffer and the caches
    rates = _alternating(rounds, one_pass)
    ratios = [on / off for off, on in zip(rates[False], rates[True], strict=True)]
    ratio = statistics.median(ratios)
    return {"path_off_samples_per_s": round(statistics.median(rates[False]), 1),
            "path_on_samples_per_s": round(statistics.median(rates[True]), 1),
            "path_ratio": round(ratio, 4), "path_ratios": [round(x, 3) for x in ratios],
            "cost": round(1 - ratio, 4)}


def worker_rows(cfg: LoaderConfig, rounds: int, seconds: float) -> dict[str, Any]:
    """Alternating runs of the training loader's worker processes, verification off and on."""
    warmup = cfg.num_workers * ring_slots(cfg) if cfg.heatmaps_on == "workers" else 8
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    ratios = []
    for r in range(rounds):
        pair = {}
        for verify in ((False, True) if r % 2 == 0 else (True, False)):
            pair[verify] = timed_run(replace(cfg, verify_checksums=verify), seconds, False, warmup)
            runs[verify].append(pair[verify])
        ratios.append(pair[True]["samples_per_worker_cpu_s"] / pair[False]["samples_per_worker_cpu_s"])

    def median(verify: bool, key: str) -> float:
        return round(statistics.median(run[key] for run in runs[verify]), 1)

    ratio = statistics.median(ratios)
    return {"off_samples_per_s": median(False, "samples_per_s"),
            "on_samples_per_s": median(True, "samples_per_s"),
            "off_samples_per_core_s": median(False, "samples_per_worker_cpu_s"),
            "on_samples_per_core_s": median(True, "samples_per_worker_cpu_s"),
            "ratio_per_core": round(ratio, 4), "ratios_per_core": [round(x, 3) for x in ratios],
            "workers_cost": round(1 - ratio, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=512)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--frames", type=int, nargs=2, default=(100, 200), help="range of video lengths T")
    ap.add_argument("--persons", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--heatmaps-on", nargs="+", default=["workers", "device"], choices=["workers", "device"])
    ap.add_argument("--rounds", type=int, default=8, help="alternating pairs of worker-path, reader passes")
    ap.add_argument("--worker-rounds", type=int, default=4, help="alternating pairs of loader runs")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader worker processes (0: no such runs)")
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per loader run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON list, a row per configuration")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one core per process: the figures are per core

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="intint-bench-checksum-") as tmp:
        for persons in args.persons:
            url = build_shards(Path(tmp), persons, args)
            tar_bytes = sum(Path(t).stat().st_size for t, _, _ in shardio.shard_urls(url, "train"))
            reader = reader_rows(url, args.rounds)
            base = LoaderConfig(shards=url, num_workers=args.workers, max_persons=max(2, persons),
                                pipeline=PipelineConfig(train_hw=(56, 56)), persistent_workers=True)
            for mode in args.heatmaps_on:
                cfg = replace(base, heatmaps_on=mode)
                path = pipeline_rows(cfg, args.rounds)
                loader = worker_rows(cfg, args.worker_rounds, args.seconds) if args.workers else {}
                share = reader["reader_hash_us_per_sample"] * path["path_off_samples_per_s"] / 1e6
                row = {"heatmaps_on": mode, "persons": persons, "workers": args.workers,
                       "tar_bytes_per_sample": tar_bytes // args.videos, **path, **loader, **reader,
                       "hash_share": round(share, 4), "load_avg_1m": round(os.getloadavg()[0], 2),
                       "cpus": os.cpu_count()}
                rows.append(row)
                if not args.json:
                    _print_row(row)
    if args.json:
        print(json.dumps(rows))
        return
    for mode in args.heatmaps_on:
        mine = [row for row in rows if row["heatmaps_on"] == mode]
        cost, share = max(row["cost"] for row in mine), max(row["hash_share"] for row in mine)
        verdict = "under" if max(cost, share) < THRESHOLD else "not under"
        print(f"heatmaps_on={mode}: largest cost {cost:.1%} measured on the worker path, {share:.1%} from "
              f"the hash time: {verdict} {THRESHOLD:.0%} of loader throughput per core")


def _print_row(row: dict[str, Any]) -> None:
    workers = ""
    if "ratio_per_core" in row:
        workers = (f" {row['workers']} worker process(es): off {row['off_samples_per_core_s']:.1f} / on "
                   f"{row['on_samples_per_core_s']:.1f} samples per worker-core-s (wall "
                   f"{row['off_samples_per_s']:.1f} / {row['on_samples_per_s']:.1f} samples/s), on/off "
                   f"{row['ratio_per_core']:.3f} per core (rounds {row['ratios_per_core']});")
    print(f"heatmaps_on={row['heatmaps_on']:7s} M={row['persons']}: worker path on one core: off "
          f"{row['path_off_samples_per_s']:.1f} / on {row['path_on_samples_per_s']:.1f} samples/s, on/off "
          f"{row['path_ratio']:.4f} (rounds {row['path_ratios']}), cost {row['cost']:.1%};{workers} reader: "
          f"{row['reader_us_per_sample_off']:.1f} → {row['reader_us_per_sample_on']:.1f} µs/sample (hash "
          f"{row['reader_hash_us_per_sample']:.1f} µs for {row['tar_bytes_per_sample']} bytes: "
          f"{row['hash_share']:.1%} of a worker-path sample); load {row['load_avg_1m']}", flush=True)


if __name__ == "__main__":
    main()
