"""Benchmark: all intensity curves per video on one CPU thread, vectorised vs a reference-style loop.

For each size (M=1/T=150 and M=3/T=600, as docs/method.md §10.2) it times ``intensity.compute`` in
both modes (all ten definitions + five ensembles) and, in the same run on the same video, a
restatement of the reference's per-frame Python loop for jnt_next alone (docs/method.md §2.2).
Figures are medians of this process's CPU time (``time.process_time``, as docs/method.md §10.1)
after a warm-up, so waiting for a busy shared core does not count; the ratio compares figures of the
same run on the same video.

    python benchmarks/bench_intensity.py [--repeats 50] [--loop-repeats 5] [--json]
"""

from __future__ import annotations

import os

# One thread, set before NumPy is imported (docs/method.md §10.1 measured the reference the same way).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

# Run from a checkout without relying on an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intint.pose import intensity  # noqa: E402
from intint.pose.skeleton import NUM_JOINTS  # noqa: E402

SIZES = ((1, 150), (3, 600))
# A ~500 px tall COCO-17 person (x, y relative to the hip midpoint), as in docs/method.md §10.1.
_TEMPLATE = np.array(
    [[0, -420], [-15, -435], [15, -435], [-35, -425], [35, -425], [-70, -340], [70, -340], [-95, -220],
     [95, -220], [-105, -100], [105, -100], [-45, 0], [45, 0], [-50, 130], [50, 130], [-55, 250], [55, 250]],
    dtype=np.float32,
)


def synthetic_video(persons: int, frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Persons drifting in a 1080×1920 frame with jitter and a motion burst at 60 % of the video.

    The last slot (for M >= 2) is present only in the middle third, as in real multi-person pickles.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(frames, dtype=np.float32)
    kp = np.empty((persons, frames, NUM_JOINTS, 2), dtype=np.float32)
    for m in range(persons):
        centre = np.array([500 + 450 * m, 620], np.float32) + np.cumsum(rng.normal(0, 2, (frames, 2)), 0)
        swing = 25 * np.sin(t / 8 + m)[:, None] * (1 + 4 * (np.abs(t - 0.6 * frames) < 5))[:, None]
        kp[m] = _TEMPLATE + centre[:, None, :].astype(np.float32) + rng.normal(0, 2, (frames, NUM_JOINTS, 2))
        kp[m, :, [7, 8, 9, 10], 0] += swing.T
    score = rng.uniform(0.3, 1.0, (persons, frames, NUM_JOINTS)).astype(np.float32)
    if persons >= 2:
        outside = np.r_[0:frames // 3, 2 * frames // 3:frames]
        kp[-1, outside], score[-1, outside] = 0, 0
    return kp, score


def loop_jnt_next(kp: np.ndarray) -> list[float]:
    """jnt_next the way the reference computes it: Python loops over frames, slots and joints."""
    num_slots, frames = kp.shape[:2]
    real = []
    for f in range(frames):
        count = 0
        for m in range(num_slots - 1, -1, -1):
            if (np.abs(kp[m, f]) >= 1e-5).any():
                count = m + 1
                break
        real.append(count)
    sv = []
    for f in range(frames - 1):
        total = 0.0
        for m in range(num_slots):
            for v in range(NUM_JOINTS):
                term = np.linalg.norm(kp[m, f + 1, v] - kp[m, f, v]) / 100
                if np.isfinite(term) and term >= 0:
                    total += term
        sv.append(total / 10 / max(1, real[f], real[f + 1]))
    sv.append(0.0)
    return sv


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return 1e3 * statistics.median(times)


def run(repeats: int, loop_repeats: int, seed: int) -> list[dict]:
    rows = []
    for persons, frames in SIZES:
        kp, score = synthetic_video(persons, frames, seed)
        loop_curve = np.array(loop_jnt_next(kp))
        vector_curve = intensity.compute(kp, score, mode="reference")["jnt_next"]
        agree = float(np.abs(loop_curve - vector_curve).max() / max(loop_curve.max(), 1e-12))
        loop_ms = median_ms(lambda kp=kp: loop_jnt_next(kp), loop_repeats)
        base = {"M": persons, "T": frames}
        rows.append({**base, "what": "loop jnt_next (reference-style)", "ms": loop_ms,
                     "repeats": loop_repeats, "ratio_vs_loop": 1.0, "loop_vs_vectorised_max_rel_diff": agree})
        for mode in intensity.MODES:
            def call(kp=kp, score=score, mode=mode) -> object:
                return intensity.compute(kp, score, mode=mode)

            ms = median_ms(call, repeats)
            rows.append({**base, "what": f"compute {mode}: all {len(intensity.DEFINITIONS)} curves", "ms": ms,
                         "repeats": repeats, "ratio_vs_loop": loop_ms / ms})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=50, help="timed calls of compute per size and mode")
    parser.add_argument("--loop-repeats", type=int, default=5, help="timed calls of the loop baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print a JSON list of rows instead of a table")
    args = parser.parse_args(argv)
    rows = run(args.repeats, args.loop_repeats, args.seed)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"intensity per video, one thread, median CPU ms (numpy {np.__version__})")
    print(f"{'M':>2} {'T':>4}  {'what':<40} {'ms':>9}  {'loop jnt_next / this':>21}")
    for row in rows:
        print(f"{row['M']:>2} {row['T']:>4}  {row['what']:<40} {row['ms']:>9.2f}  "
              f"{row['ratio_vs_loop']:>20.1f}x")
    worst = max(r.get("loop_vs_vectorised_max_rel_diff", 0.0) for r in rows)
    print(f"loop vs vectorised jnt_next: max |Δ| / max = {worst:.1e}")


if __name__ == "__main__":
    main()
