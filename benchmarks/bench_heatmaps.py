"""Benchmark: heatmap rendering throughput on one CPU thread, intint's variants vs a reference-style baseline.

The baseline restates the reference GeneratePoseTarget loop (docs/method.md §5): NumPy, one small patch per
frame × joint × person. All variants are timed in the same run on the same clips, interleaved round by
round and reported as the best round, so the ratios hold even on a shared machine where absolute
figures drift.

Variants of ``render`` (one 17-joint clip M×T×17 → 17×T×H×W):
* ``f32``: default, a new float32 volume per call;
* ``f16``: ``dtype=torch.float16``, a new float16 volume (half the bytes to write and to hand over);
* ``f32_out`` / ``f16_out``: ``out=`` a preallocated volume, reused across calls;
* ``f16_out_fresh_shm``: ``out=`` a slice of a fresh shared-memory batch buffer of ``--batch`` clips, as
  a DataLoader worker hands batches to the main process; the per-clip figure includes creating that
  buffer and the kernel's first-touch page faults, i.e. the cost of handing the result over.

    python benchmarks/bench_heatmaps.py [--size 56] [--frames 48] [--repeats 10] [--rounds 15] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from intint.render.heatmaps import EPS, render

NUM_JOINTS = 17


def reference_style_joint_maps(
    kp: np.ndarray, score: np.ndarray, height: int, width: int, sigma: float
) -> np.ndarray:
    """Joint heatmaps V×T×H×W the way the reference computes them: Python loops over frames, joints
    and persons, a NumPy patch for each.
    """
    _, t, v, _ = kp.shape
    out = np.zeros((t, v, height, width), dtype=np.float32)
    for f in range(t):
        for k in range(v):
            target = out[f, k]
            for (mu_x, mu_y), value in zip(kp[:, f, k], score[:, f, k], strict=True):
                if value < EPS:
                    continue
                x0, x1 = max(int(mu_x - 3 * sigma), 0), min(int(mu_x + 3 * sigma) + 1, width)
                y0, y1 = max(int(mu_y - 3 * sigma), 0), min(int(mu_y + 3 * sigma) + 1, height)
                xs = np.arange(x0, x1, dtype=np.float32)
                ys = np.arange(y0, y1, dtype=np.float32)[:, None]
                if xs.size == 0 or ys.size == 0:
                    continue
                patch = np.exp(-((xs - mu_x) ** 2 + (ys - mu_y) ** 2) / 2 / sigma**2) * value
                np.maximum(target[y0:y1, x0:x1], patch, out=target[y0:y1, x0:x1])
    return out.transpose(1, 0, 2, 3)


def synthetic_clip(persons: int, frames: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A clip with every joint inside the frame and scores U(0.25, 1), like a compacted real clip."""
    rng = np.random.default_rng(seed)
    kp = rng.uniform(1, size - 1, size=(persons, frames, NUM_JOINTS, 2)).astype(np.float32)
    score = rng.uniform(0.25, 1.0, size=(persons, frames, NUM_JOINTS)).astype(np.float32)
    return kp, score


def shared_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor in a fresh shared-memory segment (what a DataLoader worker sends as a fd)."""
    elem = torch.empty(0, dtype=dtype)
    storage = elem._typed_storage()._new_shared(math.prod(shape), device="cpu")
    return elem.new(storage).resize_(*shape)


def best_seconds(fns: dict[str, tuple[Callable[[], object], int]], rounds: int) -> dict[str, float]:
    """Seconds per item of each ``fn`` (which handles ``items`` clips per call), best round of ``rounds``.

    The variants take turns within each round, so a burst of load from other processes hits all of them.
    """
    best = dict.fromkeys(fns, math.inf)
    for fn, _ in fns.values():
        fn()  # warm-up: caches, allocator, lazy imports
    for _ in range(rounds):
        for name, (fn, items) in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], (time.perf_counter() - start) / items)
    return best


def measure(persons: int, frames: int, size: int, sigma: float, repeats: int, rounds: int,
            batch: int) -> dict[str, object]:
    """Clips/s of each variant and of the baseline on one synthetic M×T×17 clip; checks they agree."""
    kp, score = synthetic_clip(persons, frames, size, seed=persons)
    shape = (NUM_JOINTS, frames, size, size)
    out32 = torch.empty(shape, dtype=torch.float32)
    out16 = torch.empty(shape, dtype=torch.float16)

    def repeated(fn: Callable[[], object]) -> tuple[Callable[[], None], int]:
        def run() -> None:
            for _ in range(repeats):
                fn()
        return run, repeats

    def fresh_shm_batch() -> None:
        buffer = shared_empty((batch, *shape), torch.float16)
        for i in range(batch):
            render(kp, score, size, size, sigma=sigma, out=buffer[i])

    variants = {
        "f32": repeated(lambda: render(kp, score, size, size, sigma=sigma)),
        "f16": repeated(lambda: render(kp, score, size, size, sigma=sigma, dtype=torch.float16)),
        "f32_out": repeated(lambda: render(kp, score, size, size, sigma=sigma, out=out32)),
        "f16_out": repeated(lambda: render(kp, score, size, size, sigma=sigma, out=out16)),
        "f16_out_fresh_shm": (fresh_shm_batch, batch),
    }
    seconds = best_seconds(variants, rounds)
    reference = (lambda: reference_style_joint_maps(kp, score, size, size, sigma), 1)
    baseline = best_seconds({"baseline": reference}, max(2, rounds // 5))["baseline"]

    base = reference_style_joint_maps(kp, score, size, size, sigma)
    ours = render(kp, score, size, size, sigma=sigma).numpy()
    half = render(kp, score, size, size, sigma=sigma, dtype=torch.float16)
    if not torch.equal(half, torch.from_numpy(ours).half()):
        raise AssertionError("float16 output differs from the float32 volume rounded to float16")
    rate = {name: 1.0 / s for name, s in seconds.items()}
    return {
        "clip": f"{persons}x{frames}x{NUM_JOINTS}",
        "size": size,
        "clips_per_s": {name: round(r, 1) for name, r in rate.items()},
        "ms_per_clip": {name: round(1e3 * s, 3) for name, s in seconds.items()},
        "baseline_clips_per_s": round(1.0 / baseline, 1),
        "speedup_vs_baseline": {name: round(r * baseline, 1) for name, r in rate.items()},
        "speedup_vs_f32": {name: round(r / rate["f32"], 2) for name, r in rate.items()},
        "max_abs_diff_vs_baseline": float(np.abs(ours - base).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=56, help="heatmap height and width (px)")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--sigma", type=float, default=0.6)
    parser.add_argument("--repeats", type=int, default=10, help="renders per timing pass")
    parser.add_argument("--rounds", type=int, default=15, help="timing passes per variant (best is reported)")
    parser.add_argument("--batch", type=int, default=16, help="clips per fresh shared-memory batch buffer")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    torch.set_num_threads(1)  # what a DataLoader worker runs with

    rows = [measure(persons, args.frames, args.size, args.sigma, args.repeats, args.rounds, args.batch)
            for persons in (1, 2)]
    if args.json:
        print(json.dumps({"threads": 1, "torch": torch.__version__, "results": rows}))
        return
    print(f"heatmap render {args.size}x{args.size}, sigma {args.sigma}, 1 thread, torch {torch.__version__}; "
          f"clips/s (x baseline, x f32)")
    for r in rows:
        print(f"clip M×T×V {r['clip']}: baseline (reference-style NumPy loop) {r['baseline_clips_per_s']}/s, "
              f"max|diff| {r['max_abs_diff_vs_baseline']:.2e}")
        for name, rate in r["clips_per_s"].items():
            print(f"  {name:<18}{rate:>10}/s {r['ms_per_clip'][name]:>8.3f} ms"
                  f"{r['speedup_vs_baseline'][name]:>9}x{r['speedup_vs_f32'][name]:>7}x")


if __name__ == "__main__":
    main()
