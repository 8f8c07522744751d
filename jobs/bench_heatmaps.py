"""Benchmark: heatmap rendering throughput on one CPU thread, intint vs a reference-style baseline.

The baseline restates the reference GeneratePoseTarget loop (spec §5): NumPy, one small patch per
frame × joint × person. Both are timed in the same run on the same clips, so the ratio holds even on
a shared machine where absolute figures drift.

    python jobs/bench_heatmaps.py [--size 56] [--frames 48] [--repeats 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch

from intint.heatmaps import EPS, render


def reference_style_joint_maps(
    kp: np.ndarray, score: np.ndarray, height: int, width: int, sigma: float
) -> np.ndarray:
    """Joint heatmaps T×V×H×W the way the reference computes them: Python loops over frames, joints
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
    kp = rng.uniform(1, size - 1, size=(persons, frames, 17, 2)).astype(np.float32)
    score = rng.uniform(0.25, 1.0, size=(persons, frames, 17)).astype(np.float32)
    return kp, score


def samples_per_second(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    best = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        best.append((time.perf_counter() - start) / repeats)
    return 1.0 / min(best)


def measure(persons: int, frames: int, size: int, sigma: float, repeats: int) -> dict[str, object]:
    """Throughput of ``render`` and of the baseline on one synthetic M×T×17 clip, and their max difference."""
    kp, score = synthetic_clip(persons, frames, size, seed=persons)
    ours = render(kp, score, size, size, sigma=sigma).numpy()
    base = reference_style_joint_maps(kp, score, size, size, sigma)
    fast = samples_per_second(lambda: render(kp, score, size, size, sigma=sigma), repeats)
    slow = samples_per_second(
        lambda: reference_style_joint_maps(kp, score, size, size, sigma), max(1, repeats // 5)
    )
    return {
        "clip": f"{persons}x{frames}x17",
        "size": size,
        "intint_samples_per_s": round(fast, 1),
        "baseline_samples_per_s": round(slow, 1),
        "speedup": round(fast / slow, 2),
        "max_abs_diff": float(np.abs(ours - base).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=56, help="heatmap height and width (px)")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--sigma", type=float, default=0.6)
    parser.add_argument("--repeats", type=int, default=30, help="renders per timing pass (best of 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = [measure(persons, args.frames, args.size, args.sigma, args.repeats) for persons in (1, 2)]
    if args.json:
        print(json.dumps({"threads": 1, "torch": torch.__version__, "results": rows}))
        return
    print(f"heatmap render {args.size}x{args.size}, sigma {args.sigma}, 1 thread, torch {torch.__version__}")
    print(f"{'clip M×T×V':<12}{'intint /s':>12}{'baseline /s':>14}{'speedup':>10}{'max|diff|':>12}")
    for r in rows:
        print(f"{r['clip']:<12}{r['intint_samples_per_s']:>12}{r['baseline_samples_per_s']:>14}"
              f"{r['speedup']:>10}{r['max_abs_diff']:>12.2e}")


if __name__ == "__main__":
    main()
