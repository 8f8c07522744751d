"""Benchmark: a rendering loader worker's per-batch CPU cost, a baseline revision against the working tree.

What one ``heatmaps_on="workers"`` loader worker does per training batch after decoding: sampling and
keypoint transforms (``ClipMaker.train_batch``), rendering both pathways' float16 heatmaps into a recycled
ring buffer (``BatchBuilder.add_batch``, including the reset of that buffer's previous batch) and the wire
batch (``finish``). The baseline revision's whole ``intint`` package is extracted from git into a
throw-away package (``revisions.py``: imports renamed, flat or subpackage layout), so both run in one
process on the same decoded videos (the loader bench's synthetic shards, built by the working tree),
batch by batch in alternation: on this VM the host's speed drifts by up to ~1.7× within seconds, and
finely interleaved rounds cancel most of it.
Prints samples per CPU second of each and the median per-batch ratio with its quartiles.

    PYTHONPATH=. python benchmarks/bench_worker.py --baseline-rev fc1b41f [--persons 2] [--rounds 40]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_loader  # noqa: E402
from revisions import extract_revision, load_modules  # noqa: E402


def worker_step(package: str, shards: str, batch_size: int) -> Callable[[], None]:
    """One batch of a rendering worker's work with ``package``'s code, on that package's decoded videos."""
    mod = load_modules(package, ("transforms", "config", "clips", "bufferpool", "wire", "shardstream",
                                 "shardio"))
    stream = mod["shardstream"]
    cfg = mod["config"].LoaderConfig(shards=shards, batch_size=batch_size, clip_len=48, max_persons=2,
                                     pipeline=mod["transforms"].PipelineConfig(train_hw=(56, 56)),
                                     heatmaps_on="workers")
    classes = mod["shardio"].read_manifest(shards).num_classes
    videos = []
    for shard in stream.shard_refs(shards, cfg.split):
        peaks = stream.read_peaks(shard, cfg.peak_column) if cfg.needs_peaks else None
        videos += [stream.decode(raw, shard.tar, classes, peaks)
                   for raw in stream.raw_samples(shard, lambda n, msg: None)]
    maker = mod["clips"].ClipMaker(cfg.active_pathways, cfg.clip_len, cfg.intensity_definition, cfg.jitter,
                                   cfg.pipeline, cfg.max_persons, cfg.seed)
    ledger = mod["bufferpool"].Ledger(1, 2)  # two ring slots, handed back after every batch
    buffers = mod["bufferpool"].WorkerBuffers(ledger.flags, 0, 0, {})
    batches = itertools.cycle([videos[i : i + batch_size] for i in range(0, len(videos) - batch_size + 1,
                                                                         batch_size)])

    def step() -> None:
        batch = next(batches)
        clips = maker.train_batch(batch, 0, [v.key for v in batch])
        builder = mod["wire"].BatchBuilder(cfg, batch_size, None, False, buffers)
        builder.add_batch(batch, clips)
        builder.finish(0)
        ledger.flags[0, :] = mod["bufferpool"].FREE

    for _ in range(4):  # page in both ring slots
        step()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-rev", required=True)
    ap.add_argument("--persons", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=30, help="rounds of 2 batches of each, alternating")
    ap.add_argument("--videos", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="intint-bench-worker-") as tmp:
        base = extract_revision(args.baseline_rev, Path(tmp))
        for persons in args.persons:
            shard_args = argparse.Namespace(videos=args.videos, shards=8, frames=(100, 200), seed=0)
            shards = bench_loader.build_shards(Path(tmp), persons, shard_args)
            # two workers of each, built in the order A B B A and run A B B A / B A A B: where a worker's
            # buffers land in memory moves its speed by up to ~10 % here, whatever its code
            old = [worker_step(base, shards, args.batch_size)]
            new = [worker_step("intint", shards, args.batch_size)]
            new.append(worker_step("intint", shards, args.batch_size))
            old.append(worker_step(base, shards, args.batch_size))
            spent = [0.0, 0.0]
            ratios = []
            for r in range(args.rounds):
                took = [0.0, 0.0]
                order = [(0, old[0]), (1, new[0]), (1, new[1]), (0, old[1])]
                for side, step in order if r % 2 else order[::-1]:
                    start = time.process_time()
                    step()
                    took[side] += time.process_time() - start
                spent = [spent[0] + took[0], spent[1] + took[1]]
                ratios.append(took[0] / took[1])
            quart = statistics.quantiles(ratios, n=4)
            samples = 2 * args.rounds * args.batch_size
            print(f"M={persons}: samples per CPU-s {args.baseline_rev} {samples / spent[0]:.0f}, "
                  f"working tree {samples / spent[1]:.0f}; per-round speed-up median "
                  f"{statistics.median(ratios):.3f} (quartiles {quart[0]:.3f}-{quart[2]:.3f})", flush=True)


if __name__ == "__main__":
    main()
