"""Benchmark: shard-build throughput (videos/s) with 1 and 2 worker processes.

Generates one PYSKL-format pickle with ``intint.synthetic`` (float16, 1-3 persons, T in a range),
then builds the same shard set once per worker count into a fresh folder: safe load, validation,
shuffle, intensity for every definition and mode, tar + Arrow writing, manifest. Figures are the
wall time of ``build.build`` (parallelism is what is measured); the 1-worker build is the baseline of
the same run, and every build's files are checked to be byte-identical to it.

    python benchmarks/bench_build.py [--videos 400] [--frames 20 400] [--shard-size 50]
                                     [--workers 1 2] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Run from a checkout without relying on an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intint.pose import intensity
from intint.store import build
from intint.testing import synthetic  # noqa: E402


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=400)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--frames", type=int, nargs=2, default=(20, 400), metavar=("MIN", "MAX"))
    ap.add_argument("--shard-size", type=int, default=50)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--modes", nargs="+", default=list(intensity.MODES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_build_") as tmp:
        root = Path(tmp)
        raw = synthetic.make_annotations(args.videos, args.classes, seed=args.seed, dtype=np.float16,
                                         frames=tuple(args.frames))
        frames = sum(a["total_frames"] for a in raw["annotations"])
        src = root / "bench.pkl"
        synthetic.write_pickle(raw, str(src))
        runs = []
        baseline: dict[str, str] | None = None
        for workers in args.workers:
            out = root / f"w{workers}"
            cfg = build.BuildConfig(input=str(src), output=str(out), shard_size=args.shard_size,
                                    modes=tuple(args.modes), workers=workers, progress=False)
            t0 = time.perf_counter()
            summary = build.build(cfg)
            seconds = time.perf_counter() - t0
            digests = _digests(out)
            baseline = baseline or digests
            size = sum(p.stat().st_size for p in out.iterdir())
            runs.append({"workers": workers, "seconds": round(seconds, 3),
                         "videos_per_s": round(args.videos / seconds, 1),
                         "frames_per_s": round(frames / seconds, 1),
                         "output_mb": round(size / 1e6, 2),
                         "shards": sum(s.shards for s in summary.splits.values()),
                         "identical_to_first": digests == baseline})
        base = runs[0]["seconds"]
        for r in runs:
            r["speedup_vs_first"] = round(base / r["seconds"], 2)
    result = {"videos": args.videos, "frames": frames, "modes": args.modes, "shard_size": args.shard_size,
              "definitions": len(intensity.DEFINITIONS), "runs": runs}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{args.videos} videos, {frames} frames, float16, modes {args.modes}, "
          f"{len(intensity.DEFINITIONS)} definitions, shard size {args.shard_size}")
    header = ("workers", "seconds", "videos/s", "frames/s", "MB out", "speedup")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (7, 8, 9, 10, 7, 8), strict=True)) + " identical")
    for r in runs:
        print(f"{r['workers']:>7} {r['seconds']:>8.2f} {r['videos_per_s']:>9.1f} {r['frames_per_s']:>10.0f} "
              f"{r['output_mb']:>7.1f} {r['speedup_vs_first']:>8.2f} {r['identical_to_first']}")


if __name__ == "__main__":
    main()
