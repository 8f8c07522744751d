"""The loader's epoch plan at cluster scale, on paper: shards, readers and what each reader reads.

Pure arithmetic (``intint.loader.epoch_plan``, no I/O, no data): for FineGYM-, HMDB51- and Kinetics-sized
training splits built with ``--shard-size`` videos per shard, and 8, 64 and 512 GPUs with 4 loader workers
each (one reader per worker), prints a Markdown table of the readers, each reader's share of an epoch
(videos and MB), the shard stretches it reads (runs), the most readers one shard feeds, the batches every
rank yields and the samples repeated by the remainder rule. The sizes assume float16 keypoints and scores
of the persons × frames listed per dataset, plus 2 KB of JSON and tar headers per video (an assumption,
printed with the table). docs/scale.md shows its output.

    python benchmarks/scale_table.py [--gpus 8 64 512] [--workers 4] [--batch-size 16] [--shard-size 2000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

# Run from a checkout without relying on an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intint.loader import epoch_plan  # noqa: E402
from intint.store.build import split_sizes  # noqa: E402

# training videos, and the (persons, frames) of an average video assumed for the byte sizes
DATASETS = {"FineGYM": (20_484, (1, 150)), "HMDB51": (3_570, (2, 95)), "Kinetics-400": (240_436, (2, 300))}
JOINTS = 17
BYTES_PER_JOINT = 6  # float16 x, y and score
OVERHEAD = 2048  # JSON metadata and the tar headers of a video's three members


def video_bytes(persons: int, frames: int) -> int:
    return persons * frames * JOINTS * BYTES_PER_JOINT + OVERHEAD


def reader_stretches(order: np.ndarray, offsets: np.ndarray, split: epoch_plan.Split) -> np.ndarray:
    """Shard stretches each reader's run crosses (its range reads) in the epoch of ``order``."""
    shard, _ = epoch_plan.id_places(order, offsets)
    starts = np.flatnonzero(np.r_[True, shard[1:] != shard[:-1]])  # where a shard's stretch begins
    runs = []
    for j in range(split.layout.total_readers):
        lo, hi = split.bounds(j)
        inside = np.searchsorted(starts, hi, side="left") - np.searchsorted(starts, lo, side="right")
        runs.append(int(inside) + (1 if hi > lo else 0))
    return np.asarray(runs)


def row(name: str, videos: int, persons_frames: tuple[int, int], shard_size: int, gpus: int, workers: int,
        batch: int) -> str:
    counts = split_sizes(videos, shard_size, None, "train")
    split = epoch_plan.Split(epoch_plan.Layout(gpus, workers, batch), videos)
    order = epoch_plan.epoch_order(counts, seed=0, epoch=0)
    runs = reader_stretches(order, epoch_plan.shard_offsets(counts), split)
    shard, _ = epoch_plan.id_places(order, epoch_plan.shard_offsets(counts))
    owner = np.repeat(np.arange(split.layout.total_readers),
                      [split.run_length(j) for j in range(split.layout.total_readers)])
    feeds = max(len(np.unique(owner[shard == s])) for s in range(len(counts)))
    per_reader = -(-videos // split.layout.total_readers)
    mb = per_reader * video_bytes(*persons_frames) / 1e6
    return (f"| {name} | {videos:,} | {len(counts)} | {gpus} | {split.layout.total_readers:,} | "
            f"{split.per_reader}-{per_reader} | {mb:.2f} | {runs.min()}-{runs.max()} | {feeds} | "
            f"{split.batches_per_epoch} | {split.repeats} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[8, 64, 512])
    parser.add_argument("--workers", type=int, default=4, help="loader workers per GPU")
    parser.add_argument("--batch-size", type=int, default=16, help="videos per GPU per step")
    parser.add_argument("--shard-size", type=int, default=2000, help="videos per shard of the build")
    args = parser.parse_args(argv)
    print(f"Shards of {args.shard_size} videos, {args.workers} loader workers per GPU, batch "
          f"{args.batch_size} per GPU, remainder rule 'repeat'.\n")
    print("| dataset | train videos | shards | GPUs | readers | videos per reader | MB per reader | "
          "shards touched (runs) per reader | most readers on one shard | batches per GPU per epoch | "
          "repeats |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, (videos, persons_frames) in DATASETS.items():
        for gpus in args.gpus:
            print(row(name, videos, persons_frames, args.shard_size, gpus, args.workers, args.batch_size))
    print("\nMB per reader: videos per reader × (persons × frames × 17 joints × 6 B + 2 KB), assuming "
          + ", ".join(f"{n} {p} person(s) × {f} frames" for n, (_, (p, f)) in DATASETS.items()) + ".")


if __name__ == "__main__":
    main()
