"""Benchmark: the sample-range reader (runs of samples through the sample index) against today's
whole-shard reader, samples/s per core, on local files and from a real S3 API server.

A synthetic shard set is built with the real builder (the loader bench's data: float16 videos of
100–200 frames). The work is split among ``--readers`` readers two ways, and every reader's share is read
in turn in this process (one core), decoded and checked as the loader does (``shard_videos``, with the
intensity peaks):

* **whole shards** (today's loader): reader ``r`` streams whole shards ``r, r + R, ...`` from the tar's
  start;
* **sample runs**: the set's samples in order are cut into ``R`` contiguous runs of equal size,
  shifted by half a shard so runs start and end inside shards; each reader reads its run with range
  reads through the sample index.

Each reader reads a shard's intensity peaks (and, for runs, its sample index) once, in the warm-up pass,
and keeps them, as a persistent loader worker does for the whole run.

Both read every sample once per pass. Each round runs the two back to back, in alternating order (the
VM's speed drifts within seconds), and the table gives the median over rounds of samples per CPU second
and per wall second (a reader is one thread: on S3 the wall figure includes waiting on requests), and of
each round's ratio range / whole. ``--verify``: with per-sample (range) and whole-shard (stream) SHA-256
checks.

    python benchmarks/bench_sample_reader.py [--videos 1024] [--shards 8] [--readers 8] [--rounds 7]
                                             [--verify] [--no-s3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_loader import build_shards  # noqa: E402

from intint.store import fsio, shardio  # noqa: E402
from intint.store.shardstream import (  # noqa: E402
    SampleIndex,
    ShardRef,
    read_index,
    read_peaks,
    shard_refs,
    shard_videos,
)

PEAK = shardio.peak_column("reference", "J")


def _ignore(n: int, message: str) -> None:
    raise RuntimeError(f"benchmark data is intact, yet: {message}")


def runs(shards: list[ShardRef], readers: int) -> list[list[tuple[ShardRef, int, int]]]:
    """The set's samples in shard order, cut into ``readers`` equal contiguous runs shifted by half a
    shard; each run as (shard, start, stop) pieces."""
    total = sum(s.num_samples for s in shards)
    shift = shards[0].num_samples // 2
    bounds = [(shift + total * r // readers) % total for r in range(readers)] + [shift]
    flat = [(s, i) for s in shards for i in range(s.num_samples)]
    out = []
    for r in range(readers):
        a, b = bounds[r], bounds[r + 1]
        positions = flat[a:b] if a < b else flat[a:] + flat[:b]
        pieces: list[tuple[ShardRef, int, int]] = []
        for shard, i in positions:
            if pieces and pieces[-1][0] is shard and pieces[-1][2] == i:
                pieces[-1] = (shard, pieces[-1][1], i + 1)
            else:
                pieces.append((shard, i, i + 1))
        out.append(pieces)
    return out


def whole_shard_pass(url: str, num_classes: int, readers: int, verify: bool) -> Callable[[], int]:
    shards = shard_refs(url, "train")
    peaks: dict[tuple[int, int], dict[str, int]] = {}  # (reader, shard) → its peaks, as a loader worker keeps

    def one_pass() -> int:
        n = 0
        for r in range(readers):
            for shard in shards[r::readers]:
                if (r, shard.index) not in peaks:
                    peaks[r, shard.index] = read_peaks(shard, PEAK)
                n += sum(1 for _ in shard_videos(shard, num_classes, peaks[r, shard.index], _ignore,
                                                 verify=verify))
        return n

    return one_pass


def sample_run_pass(url: str, num_classes: int, readers: int, verify: bool) -> Callable[[], int]:
    shards = shard_refs(url, "train")
    plan = runs(shards, readers)
    tables: dict[tuple[int, int], tuple[dict[str, int], SampleIndex]] = {}  # (reader, shard) → peaks, index

    def one_pass() -> int:
        n = 0
        for r, pieces in enumerate(plan):
            for shard, start, stop in pieces:
                if (r, shard.index) not in tables:
                    tables[r, shard.index] = read_peaks(shard, PEAK), read_index(shard)
                peaks, index = tables[r, shard.index]
                n += sum(1 for _ in shard_videos(shard, num_classes, peaks, _ignore, verify=verify,
                                                 start=start, stop=stop, index=index))
        return n

    return one_pass


def measure(url: str, args: argparse.Namespace, where: str) -> dict[str, Any]:
    num_classes = shardio.read_manifest(url).num_classes
    variants = {"whole shards": whole_shard_pass(url, num_classes, args.readers, args.verify),
                "sample runs": sample_run_pass(url, num_classes, args.readers, args.verify)}
    counts = {name: run() for name, run in variants.items()}  # warm: page cache, connections
    if len(set(counts.values())) != 1:
        raise RuntimeError(f"the readers read different sample counts: {counts}")
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, run in list(variants.items())[::1 if r % 2 else -1]:  # ABBA order: drift cancels out
            c0, w0 = time.process_time(), time.perf_counter()
            n = run()
            cpu[name].append(n / (time.process_time() - c0))
            wall[name].append(n / (time.perf_counter() - w0))
    ratio_cpu = [r / w for r, w in zip(cpu["sample runs"], cpu["whole shards"], strict=True)]
    ratio_wall = [r / w for r, w in zip(wall["sample runs"], wall["whole shards"], strict=True)]
    return {"where": where, "samples": counts["whole shards"], "readers": args.readers,
            "verify": args.verify,
            **{f"{name} cpu": round(statistics.median(v), 1) for name, v in cpu.items()},
            **{f"{name} wall": round(statistics.median(v), 1) for name, v in wall.items()},
            "ratio cpu": round(statistics.median(ratio_cpu), 3),
            "ratio wall": round(statistics.median(ratio_wall), 3)}


def upload(local: str, bucket_url: str) -> str:
    fs, path = fsio.url_to_fs(bucket_url)
    for name in fsio.list_names(local):
        fs.put_file(str(Path(local) / name), f"{path}/{name}")
    return bucket_url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=1024)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--readers", type=int, default=8)
    ap.add_argument("--frames", type=int, nargs=2, default=(100, 200))
    ap.add_argument("--persons", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--verify", action="store_true")
    ap.add_argument("--no-s3", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="intint-bench-sample-reader-") as tmp:
        local = build_shards(Path(tmp), args.persons, args)
        rows.append(measure(local, args, "local"))
        if not args.no_s3:
            from intint.testing.s3_server import s3_server

            with s3_server() as server:
                server.make_bucket("bench")
                rows.append(measure(upload(local, "s3://bench/set"), args, "s3 (moto)"))
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'where':<10} {'samples':>7} {'readers':>7} {'verify':>6} | samples/s per core: {'whole':>8} "
          f"{'runs':>8} {'ratio':>6} | samples/s wall: {'whole':>8} {'runs':>8} {'ratio':>6}")
    for row in rows:
        print(f"{row['where']:<10} {row['samples']:>7} {row['readers']:>7} {row['verify']!s:>6} | "
              f"{'':>20}{row['whole shards cpu']:>8} {row['sample runs cpu']:>8} {row['ratio cpu']:>6} | "
              f"{'':>16}{row['whole shards wall']:>8} {row['sample runs wall']:>8} {row['ratio wall']:>6}")


if __name__ == "__main__":
    main()
