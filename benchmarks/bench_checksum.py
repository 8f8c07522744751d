"""Benchmark: what verifying each shard's SHA-256 as it streams (``LoaderConfig.verify_checksums``) costs.

The loader bench's synthetic shard set (``bench_loader.build_shards``: float16 videos of 100–200 frames,
M persons, built by the real builder) is read two ways in the same process:

* **loader**: ``train_loader`` (rank 0 of 1) for ``--seconds`` per run, verification off and on, in
  alternating rounds (off/on, then on/off: the VM's speed drifts within seconds, so each round's pair is
  compared with itself). Figures: samples per wall second and per CPU second of the loader's worker
  processes (the per-core figure, robust to other jobs on a shared machine), steady state after start-up
  and warm-up (``bench_loader.timed_run``); per configuration the median of each mode and the median of
  the rounds' on/off ratios. ``heatmaps_on="workers"`` is the default loader; ``"device"`` ships keypoint
  clips, so a sample costs the least there and the check weighs the most.
* **reader**: ``raw_samples`` + ``decode`` of every shard on one core, in process, with and without the
  hash: CPU µs per sample, the check's cost with nothing else around it.

    python benchmarks/bench_checksum.py [--rounds 4] [--seconds 3] [--heatmaps-on workers device]
                                        [--workers 1] [--persons 1 2] [--json]

The issue's rule: verification is on by default when it costs under 5 % of loader throughput.
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

from intint.loader.config import LoaderConfig  # noqa: E402
from intint.loader.streams import ring_slots  # noqa: E402
from intint.pose.transforms import PipelineConfig  # noqa: E402
from intint.store import shardio, shardstream  # noqa: E402

THRESHOLD = 0.05  # on by default below this share of loader throughput


def reader_pass(url: str, verify: bool) -> tuple[int, float]:
    """Samples read and decoded from every shard, and the CPU seconds it took (this process)."""
    shards = shardstream.shard_refs(url, "train")
    num_classes = shardio.read_manifest(url).num_classes
    start, n = time.process_time(), 0
    for shard in shards:
        for raw in shardstream.raw_samples(shard, lambda lost, message: None, verify=verify):
            shardstream.decode(raw, shard.tar, num_classes, None)
            n += 1
    return n, time.process_time() - start


def reader_rows(url: str, rounds: int) -> dict[str, float]:
    per_sample: dict[bool, list[float]] = {False: [], True: []}
    for r in range(2 * rounds):
        for verify in ((False, True) if r % 2 == 0 else (True, False)):
            n, seconds = reader_pass(url, verify)
            per_sample[verify].append(seconds / n * 1e6)
    off, on = statistics.median(per_sample[False]), statistics.median(per_sample[True])
    return {"reader_us_per_sample_off": round(off, 2), "reader_us_per_sample_on": round(on, 2),
            "reader_hash_us_per_sample": round(on - off, 2)}


def loader_rows(cfg: LoaderConfig, rounds: int, seconds: float) -> dict[str, Any]:
    """Alternating rounds of the training loader with verification off and on."""
    warmup = cfg.num_workers * ring_slots(cfg) if cfg.heatmaps_on == "workers" else 8
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    ratios_core, ratios_wall = [], []
    for r in range(rounds):
        pair = {}
        for verify in ((False, True) if r % 2 == 0 else (True, False)):
            pair[verify] = timed_run(replace(cfg, verify_checksums=verify), seconds, False, warmup)
            runs[verify].append(pair[verify])
        ratios_core.append(pair[True]["samples_per_worker_cpu_s"] / pair[False]["samples_per_worker_cpu_s"])
        ratios_wall.append(pair[True]["samples_per_s"] / pair[False]["samples_per_s"])

    def median(verify: bool, key: str) -> float:
        return round(statistics.median(run[key] for run in runs[verify]), 1)

    ratio = statistics.median(ratios_core)
    return {"off_samples_per_s": median(False, "samples_per_s"),
            "on_samples_per_s": median(True, "samples_per_s"),
            "off_samples_per_core_s": median(False, "samples_per_worker_cpu_s"),
            "on_samples_per_core_s": median(True, "samples_per_worker_cpu_s"),
            "ratio_per_core": round(ratio, 4), "ratio_wall": round(statistics.median(ratios_wall), 4),
            "ratios_per_core": [round(x, 4) for x in ratios_core], "cost": round(1 - ratio, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=512)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--frames", type=int, nargs=2, default=(100, 200), help="range of video lengths T")
    ap.add_argument("--persons", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--heatmaps-on", nargs="+", default=["workers", "device"], choices=["workers", "device"])
    ap.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON list, a row per configuration")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one core per process: the figures are per core

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="intint-bench-checksum-") as tmp:
        for persons in args.persons:
            url = build_shards(Path(tmp), persons, args)
            tar_mb = sum(Path(t).stat().st_size for t, _, _ in shardio.shard_urls(url, "train")) / 1e6
            reader = reader_rows(url, args.rounds)
            base = LoaderConfig(shards=url, num_workers=args.workers, max_persons=max(2, persons),
                                pipeline=PipelineConfig(train_hw=(56, 56)), persistent_workers=True)
            for mode in args.heatmaps_on:
                row = {"heatmaps_on": mode, "persons": persons, "workers": args.workers,
                       "tar_bytes_per_sample": round(tar_mb * 1e6 / args.videos),
                       **loader_rows(replace(base, heatmaps_on=mode), args.rounds, args.seconds), **reader,
                       "load_avg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
                rows.append(row)
                if not args.json:
                    _print_row(row)
    if args.json:
        print(json.dumps(rows))
    else:
        worst = max(row["cost"] for row in rows)
        verdict = "on by default" if worst < THRESHOLD else "off by default"
        print(f"largest cost {worst:.1%} of loader throughput per core "
              f"(threshold {THRESHOLD:.0%}): {verdict}")


def _print_row(row: dict[str, Any]) -> None:
    print(f"heatmaps_on={row['heatmaps_on']:7s} M={row['persons']} workers={row['workers']}: "
          f"off {row['off_samples_per_core_s']:.1f} / on {row['on_samples_per_core_s']:.1f} samples per "
          f"worker-core-s (wall {row['off_samples_per_s']:.1f} / {row['on_samples_per_s']:.1f} samples/s); "
          f"on/off {row['ratio_per_core']:.4f} per core (rounds {row['ratios_per_core']}), "
          f"{row['ratio_wall']:.4f} wall; cost {row['cost']:.1%}. Reader alone: "
          f"{row['reader_us_per_sample_off']:.1f} → {row['reader_us_per_sample_on']:.1f} µs/sample "
          f"(hash {row['reader_hash_us_per_sample']:.1f} µs for {row['tar_bytes_per_sample']} bytes); "
          f"load {row['load_avg_1m']}", flush=True)


if __name__ == "__main__":
    main()
