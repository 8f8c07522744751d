"""Benchmark: reading and decoding shard samples (tar → checked ``Video``), CPU µs per sample.

Times ``shardstream.raw_samples`` + ``decode`` over a synthetic shard set built with the real builder
(the loader bench's data: float16 videos of 100–200 frames, M persons), for several sizes of the tar
reader's read chunk (``tar_reader._CHUNK``), against webdataset's own reader
(``tariterators.tar_file_iterator`` + ``group_by_keys``, members as bytes) feeding the same ``decode``,
in alternating rounds in one process: the VM's speed drifts within seconds, so each round times every
variant back to back and the script reports the median over rounds of each variant's ratio to the
baseline of that round.

    python benchmarks/bench_read.py [--persons 1 2] [--rounds 12] [--chunks 65536 262144 1048576] [--json]
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

import webdataset as wds
from webdataset import tariterators

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_loader import build_shards  # noqa: E402

from intint.store import shardio, shardstream, tar_reader  # noqa: E402


def reader(url: str, chunk: int | None) -> Callable[[], int]:
    """One pass over every shard of ``url``: raw samples + decode; ``chunk`` None = webdataset's reader."""
    shards = shardstream.shard_refs(url, "train")
    num_classes = shardio.read_manifest(url).num_classes
    peaks = [shardstream.read_peaks(s, shardio.peak_column("reference", "J")) for s in shards]

    def webdataset_samples(shard: shardstream.ShardRef) -> Any:
        stream = wds.gopen(shard.tar, "rb")
        try:
            members = ({**m, "__url__": shard.tar} for m in tariterators.tar_file_iterator(stream))
            yield from tariterators.group_by_keys(members)
        finally:
            stream.close()

    def one_pass() -> int:
        if chunk is not None:
            tar_reader._CHUNK = chunk
        n = 0
        for shard in shards:
            samples = (webdataset_samples(shard) if chunk is None
                       else shardstream.raw_samples(shard, lambda lost, message: None))
            for raw in samples:
                shardstream.decode(raw, shard.tar, num_classes, peaks[shard.index])
                n += 1
        return n

    return one_pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--persons", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--videos", type=int, default=512)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--frames", type=int, nargs=2, default=(100, 200))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--chunks", type=int, nargs="+", default=[1 << 16, 1 << 18, 1 << 20])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    default_chunk = tar_reader._CHUNK
    rows = []
    with tempfile.TemporaryDirectory(prefix="intint-bench-read-") as tmp:
        for persons in args.persons:
            url = build_shards(Path(tmp), persons, args)
            variants = {"webdataset": reader(url, None)} | {f"chunk {c}": reader(url, c) for c in args.chunks}
            for run in variants.values():
                run()  # warm: page cache, .npy header cache
            times: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, run in variants.items():
                    start = time.process_time()
                    n = run()
                    times[name].append((time.process_time() - start) / n * 1e6)
            for name in variants:
                ratios = [b / t for b, t in zip(times["webdataset"], times[name], strict=True)]
                rows.append({"persons": persons, "reader": name, "us_per_sample": round(min(times[name]), 1),
                             "us_per_sample_median": round(statistics.median(times[name]), 1),
                             "speedup_vs_webdataset_median": round(statistics.median(ratios), 3)})
    tar_reader._CHUNK = default_chunk
    if args.json:
        print(json.dumps(rows))
        return
    for row in rows:
        print(f"M={row['persons']} {row['reader']:>15}: {row['us_per_sample']:6.1f} µs/sample best, "
              f"{row['us_per_sample_median']:6.1f} median; ×{row['speedup_vs_webdataset_median']:.2f} "
              "vs webdataset's reader (median of paired rounds)")


if __name__ == "__main__":
    main()
