"""Benchmark: pose extraction from videos (``intint extract-poses``): frames/s per core and videos/s with N
worker processes.

Copies the committed real clips (tests/data/videos) ``--copies`` times into a temporary folder of two
classes, then measures, in the same run:

- decode only: every frame decoded and converted to RGB in this process (the floor under any estimator);
- decode + BlazePose in this process: frames/s of wall time and frames per CPU-second (all threads),
  the per-core figure;
- ``extract.extract`` with each ``--workers`` count (a fresh output, so nothing comes from the cache):
  videos/s and frames/s of wall time including the worker start-up, and frames per CPU-second of the
  workers. Every run's pickle is checked to be byte-identical to the first one's.

    python benchmarks/bench_extract.py [--copies 4] [--workers 1 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Run from a checkout without relying on an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intint.video import extract  # noqa: E402
from intint.video.estimators import BlazePose, silence_native_stderr  # noqa: E402
from intint.video.frames import iter_rgb_frames  # noqa: E402
from intint.video.video_poses import estimate_video  # noqa: E402

CLIPS = Path(__file__).resolve().parents[1] / "tests" / "data" / "videos"


def make_folder(root: Path, copies: int) -> list[Path]:
    """``copies`` copies of every committed clip, in two class folders (jumping jacks, lab)."""
    videos = []
    for clip in sorted(CLIPS.glob("*.mp4")):
        cls = root / ("jumping_jacks" if clip.name.startswith("sports2d") else "lab")
        cls.mkdir(parents=True, exist_ok=True)
        for k in range(copies):
            videos.append(cls / f"{clip.stem}_{k}.mp4")
            shutil.copyfile(clip, videos[-1])
    return videos


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def in_process(videos: list[Path], pose: bool) -> dict[str, float]:
    """Decode (and estimate) every video here; wall and CPU seconds of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    frames = 0
    estimator = BlazePose() if pose else None
    for video in videos:
        if estimator is None:
            frames += sum(1 for _ in iter_rgb_frames(str(video)))
        else:
            frames += estimate_video(str(video), estimator).total_frames
    if estimator is not None:
        estimator.close()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"videos": len(videos), "frames": frames, "wall_s": wall, "cpu_s": cpu}


def pool_run(folder: Path, out: Path, workers: int) -> tuple[dict[str, float], bytes]:
    """``extract.extract`` with ``workers`` processes into a fresh output; wall and worker CPU seconds."""
    cpu = children_cpu()
    wall = time.perf_counter()
    summary = extract.extract(extract.ExtractConfig(str(folder), str(out), workers=workers, progress=False))
    wall = time.perf_counter() - wall
    return ({"videos": summary.extracted, "frames": summary.frames, "wall_s": wall,
             "cpu_s": children_cpu() - cpu, "found": summary.found_frames / summary.frames}, out.read_bytes())


def row(name: str, r: dict[str, float]) -> dict[str, object]:
    return {"run": name, **r, "videos_per_s": r["videos"] / r["wall_s"],
            "frames_per_s": r["frames"] / r["wall_s"],
            "frames_per_cpu_s": r["frames"] / r["cpu_s"] if r["cpu_s"] > 0 else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=4, help="copies of each committed clip")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()
    silence_native_stderr()  # MediaPipe's set-up chatter, as extraction workers do it
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        root = Path(tmp)
        videos = make_folder(root / "videos", args.copies)
        rows = [row("decode only, this process", in_process(videos, pose=False)),
                row("decode + BlazePose, this process", in_process(videos, pose=True))]
        first: bytes | None = None
        for workers in args.workers:
            result, pickled = pool_run(root / "videos", root / f"w{workers}" / "poses.pkl", workers)
            first = pickled if first is None else first
            if pickled != first:
                raise SystemExit(f"workers={workers}: the pickle differs from the first run's")
            rows.append(row(f"extract-poses --workers {workers}", result))
    if args.json:
        print(json.dumps({"rows": rows, "args": vars(args)}, indent=1))
        return
    print(f"{len(videos)} videos ({args.copies} copies of {len(videos) // args.copies} clips), "
          f"{rows[0]['frames']} frames; pickles byte-identical across worker counts")
    print(f"{'run':36}{'videos/s':>10}{'frames/s':>10}{'frames/CPU-s':>14}{'wall s':>9}")
    for r in rows:
        print(f"{r['run']:36}{r['videos_per_s']:>10.2f}{r['frames_per_s']:>10.1f}{r['frames_per_cpu_s']:>14.1f}"
              f"{r['wall_s']:>9.1f}")


if __name__ == "__main__":
    main()
