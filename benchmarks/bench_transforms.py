"""Benchmark: per-sample CPU cost of clip sampling + keypoint transforms (the loader's hot path).

Times, in one process and one run, the current ``intint.loader.clip_maker.ClipMaker.train`` path (both
pathways: clip_rng, index sampling, fancy-index gather, train pipeline, person truncation) against the same
path built from a baseline revision's transforms and sampling modules (its whole ``intint`` package
extracted from git into a throw-away package by ``revisions.py``, flat or subpackage layout, so no
working-tree file changes), plus the samplers and the train pipeline on their own. Figures are µs per call,
best of ``--repeats`` rounds (the least disturbed by other load).

    PYTHONPATH=. python benchmarks/bench_transforms.py [--baseline-rev 016514e] [--samples 2000]
                                                 [--batch-baseline-rev a8a67e2]

Torch runs on one thread, as in a loader worker. The last line times ``ClipMaker.train_batch`` (the
loader's batch-at-a-time path) of ``--batch-baseline-rev`` against the working tree's, in alternating rounds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from revisions import extract_revision, load_modules  # noqa: E402

from intint.loader.clip_maker import ClipMaker  # noqa: E402
from intint.pose import sampling, transforms  # noqa: E402
from intint.store.shardstream import Video  # noqa: E402


def make_videos(n: int, persons: int, seed: int) -> list[Video]:
    """Synthetic videos shaped like FineGYM's: T in [60, 300], 17 joints, a few absent joints."""
    rng = np.random.default_rng(seed)
    videos = []
    for i in range(n):
        t = int(rng.integers(60, 300))
        kp = rng.uniform(100, 500, size=(persons, t, 17, 2)).astype(np.float32)
        kp[rng.random((persons, t, 17)) < 0.05] = 0.0
        score = rng.uniform(0.2, 1.0, size=(persons, t, 17)).astype(np.float32)
        peak = int(rng.integers(0, t))
        videos.append(Video(f"k{i:05d}", f"fd{i}", 0, kp, score, (720, 1280), peak, "bench"))
    return videos


def baseline_train(videos: list[Video], old_s: ModuleType, old_t: ModuleType, epoch: int,
                   max_persons: int) -> None:
    """The baseline ClipMaker.train body, written against the baseline modules."""
    pipe = old_t.train_pipeline(old_t.PipelineConfig())
    for video in videos:
        total = video.keypoint.shape[1]
        for pathway in ("integrity", "intensity"):
            rng = old_s.clip_rng(0, epoch, video.key, pathway)
            if pathway == "integrity":
                idx = old_s.uniform_indices(total, 48, 1, test_mode=False, rng=rng)
            else:
                idx = old_s.intensity_indices(total, video.peak, 48, 1, jitter=0, rng=rng)
            kp, score, _ = pipe(video.keypoint[:, idx], video.keypoint_score[:, idx], video.img_shape, rng)
            kp[:max_persons], score[:max_persons]


def best_us(fn: Callable[[], None], calls: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / calls * 1e6


def per_call_rows(videos: list[Video], maker: ClipMaker, old_s: ModuleType, old_t: ModuleType,
                  max_persons: int) -> list[tuple[str, Callable[[], None], Callable[[], None]]]:
    """(name, baseline call, working-tree call) of each per-call figure, over ``videos``."""
    n = len(videos)
    clip = videos[0].keypoint[:, :48].copy()
    clip_score = videos[0].keypoint_score[:, :48].copy()
    old_pipe, new_pipe = old_t.train_pipeline(old_t.PipelineConfig()), transforms.train_pipeline(
        transforms.PipelineConfig())
    gen = np.random.default_rng(0)

    def lengths() -> list[int]:
        return [v.keypoint.shape[1] for v in videos]

    return [
        ("two-pathway train sample (ClipMaker.train)",
         lambda: baseline_train(videos, old_s, old_t, 1, max_persons),
         lambda: [maker.train(v, 1, v.key) for v in videos]),
        ("clip_rng (per clip)",
         lambda: [old_s.clip_rng(0, 1, v.key, "integrity") for v in videos],
         lambda: [sampling.clip_rng(0, 1, v.key, "integrity", out=maker._rngs["integrity"]) for v in videos]),
        ("uniform_indices train (per clip)",
         lambda: [old_s.uniform_indices(t, 48, test_mode=False, rng=gen) for t in lengths()],
         lambda: [sampling.uniform_indices(t, 48, test_mode=False, rng=gen) for t in lengths()]),
        ("intensity_indices (per clip)",
         lambda: [old_s.intensity_indices(v.keypoint.shape[1], v.peak, 48) for v in videos],
         lambda: [sampling.intensity_indices(v.keypoint.shape[1], v.peak, 48) for v in videos]),
        ("uniform_indices test, 10 clips (per video)",
         lambda: [old_s.uniform_indices(v.keypoint.shape[1], 48, 10, test_mode=True) for v in videos],
         lambda: [sampling.uniform_indices(v.keypoint.shape[1], 48, 10, test_mode=True) for v in videos]),
        ("train pipeline, M=2 L=48 clip (per clip)",
         lambda: [old_pipe(clip, clip_score, (720, 1280), gen) for _ in range(n)],
         lambda: [new_pipe(clip, clip_score, (720, 1280), gen, persons=max_persons) for _ in range(n)]),
    ]


def batch_against_revision(videos: list[Video], maker: ClipMaker, old: dict[str, ModuleType],
                           args: argparse.Namespace) -> None:
    """``ClipMaker.train_batch`` of the batch baseline revision against the working tree's, in alternating
    rounds in one process; prints µs per sample, best and median."""
    n = len(videos)
    chunks = [videos[i:i + 16] for i in range(0, n, 16)]
    old_maker = old["clips"].ClipMaker(("integrity", "intensity"), 48, "J", 0,
                                       old["transforms"].PipelineConfig(), args.max_persons, 0)

    def mapped(batch: dict) -> None:
        for clips in batch.values():
            if hasattr(clips, "mapped"):  # since "clips cross as stored": the maps are applied apart
                clips.mapped()

    variants = {"old": lambda: [old_maker.train_batch(c, 2, [v.key for v in c]) for c in chunks],
                "new": lambda: [maker.train_batch(c, 2, [v.key for v in c]) for c in chunks],
                "new+mapped": lambda: [mapped(maker.train_batch(c, 2, [v.key for v in c])) for c in chunks]}
    rounds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            rounds[name].append(best_us(run, n, 1))
    best = {name: min(r) for name, r in rounds.items()}
    median = {name: sorted(r)[args.repeats // 2] for name, r in rounds.items()}
    print(f"train_batch at {args.batch_baseline_rev} vs working tree, {args.repeats} alternating rounds, "
          f"µs per sample best (median): {best['old']:.1f} ({median['old']:.1f}) → {best['new']:.1f} "
          f"({median['new']:.1f}) as a device-mode worker runs it (maps left to the device), "
          f"{best['new+mapped']:.1f} ({median['new+mapped']:.1f}) with the maps applied as a "
          "workers-mode worker does")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-rev", default="016514e", help="git revision of the baseline modules")
    ap.add_argument("--samples", type=int, default=2000, help="videos per timed round")
    ap.add_argument("--persons", type=int, default=2, help="person slots stored per video")
    ap.add_argument("--max-persons", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-baseline-rev", default="a8a67e2",
                    help="git revision whose ClipMaker.train_batch the current one is timed against")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)  # as in a loader worker process (DataLoader workers run torch on one thread)
    # the extracted packages stay on disk for the whole run: their modules may import lazily
    with tempfile.TemporaryDirectory(prefix="intint-bench-transforms-") as tmp:
        old = load_modules(extract_revision(args.baseline_rev, Path(tmp)), ("transforms", "sampling"))
        old_batch = load_modules(extract_revision(args.batch_baseline_rev, Path(tmp)),
                                 ("transforms", "clips"))
        videos = make_videos(args.samples, args.persons, 0)
        n = len(videos)
        maker = ClipMaker(("integrity", "intensity"), 48, "J", 0, transforms.PipelineConfig(),
                          args.max_persons, 0)
        print(f"baseline {args.baseline_rev} vs working tree; {n} calls per round, best of {args.repeats}; "
              "µs/call")
        print(f"{'':46s} {'baseline':>10s} {'new':>10s} {'speed-up':>9s}")
        for name, before, after in per_call_rows(videos, maker, old["sampling"], old["transforms"],
                                                 args.max_persons):
            old_us, new_us = best_us(before, n, args.repeats), best_us(after, n, args.repeats)
            print(f"{name:46s} {old_us:10.1f} {new_us:10.1f} {old_us / new_us:8.1f}x")
        sample_us = best_us(lambda: [maker.train(v, 2, v.key) for v in videos], n, args.repeats)
        print(f"new two-pathway samples/s per core (sampling + transforms only): {1e6 / sample_us:,.0f}")
        # What the loader runs: a batch of 16 at once, against the per-clip path above, same videos.
        chunks = [videos[i:i + 16] for i in range(0, n, 16)]
        batch_us = best_us(lambda: [maker.train_batch(c, 2, [v.key for v in c]) for c in chunks], n,
                           args.repeats)
        print(f"two-pathway sample in batches of 16 (ClipMaker.train_batch, the loader's path): "
              f"{batch_us:.1f} µs vs {sample_us:.1f} µs per clip ({sample_us / batch_us:.1f}x); "
              f"{1e6 / batch_us:,.0f} samples/s per core")
        batch_against_revision(videos, maker, old_batch, args)


if __name__ == "__main__":
    main()
