"""Check that the demo dataset makes the method's point, on its test split.

For every test video: where the intensity curve peaks, how much of the true burst the Intensity
clip (a window around that peak) covers, and how much the Integrity clip (uniform test-mode
sampling) covers; for the count classes, how many of the three repetitions each clip sees. The
burst positions are the generator's ground truth (``DemoSet.bursts``). Expected: the window covers
nearly all of a single burst while uniform sampling catches a fraction, and on the count classes
the window sees one repetition while uniform sampling sees all three.

    python benchmarks/demo_check.py [--per-class 20] [--seed 0] [--clip-len 48] [--mode reference]
                              [--definition J] [--per-video] [--json]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

import numpy as np

from intint.demo.dataset import DEMO_CLASSES, DEMO_COUNT_CLASSES, DemoConfig, generate_demo
from intint.pose import intensity, sampling


@dataclass(frozen=True)
class VideoCheck:
    """One video's figures: the share of burst frames each clip covers and repetitions it touches."""

    frame_dir: str
    label: str
    total_frames: int
    peak: int
    peak_in_burst: bool
    intensity_cover: float
    uniform_cover: float
    intensity_reps: int
    uniform_reps: int
    repetitions: int


def check_video(annotation: dict, bursts: tuple[tuple[int, int], ...], clip_len: int, mode: str,
                definition: str) -> VideoCheck:
    t = annotation["total_frames"]
    curve = intensity.compute(annotation["keypoint"], annotation["keypoint_score"], mode=mode,
                              frame_dir=annotation["frame_dir"])[definition]
    peak = intensity.peak(curve)
    window = np.zeros(t, dtype=bool)
    window[sampling.intensity_indices(t, peak, clip_len)] = True
    uniform = np.zeros(t, dtype=bool)
    uniform[sampling.uniform_indices(t, clip_len, test_mode=True)] = True
    in_burst = np.zeros(t, dtype=bool)
    for s, e in bursts:
        in_burst[s:e] = True
    return VideoCheck(
        frame_dir=annotation["frame_dir"],
        label=DEMO_CLASSES[annotation["label"]],
        total_frames=t,
        peak=peak,
        peak_in_burst=bool(in_burst[peak]),
        intensity_cover=float(window[in_burst].mean()),
        uniform_cover=float(uniform[in_burst].mean()),
        intensity_reps=sum(bool(window[s:e].any()) for s, e in bursts),
        uniform_reps=sum(bool(uniform[s:e].any()) for s, e in bursts),
        repetitions=len(bursts),
    )


def summarise(checks: list[VideoCheck]) -> dict[str, dict[str, float]]:
    """Means per class, then over the burst classes and over the count classes."""
    groups: dict[str, list[VideoCheck]] = {name: [] for name in DEMO_CLASSES}
    for c in checks:
        groups[c.label].append(c)
    groups["ALL burst classes"] = [c for c in checks if c.label not in DEMO_COUNT_CLASSES]
    groups["ALL count classes"] = [c for c in checks if c.label in DEMO_COUNT_CLASSES]
    out = {}
    for name, items in groups.items():
        if not items:
            continue
        out[name] = {
            "videos": len(items),
            "frames": float(np.mean([c.total_frames for c in items])),
            "peak_in_burst": float(np.mean([c.peak_in_burst for c in items])),
            "intensity_cover": float(np.mean([c.intensity_cover for c in items])),
            "uniform_cover": float(np.mean([c.uniform_cover for c in items])),
            "intensity_reps": float(np.mean([c.intensity_reps for c in items])),
            "uniform_reps": float(np.mean([c.uniform_reps for c in items])),
            "repetitions": float(np.mean([c.repetitions for c in items])),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=DemoConfig.num_per_class_test)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clip-len", type=int, default=48)
    parser.add_argument("--mode", default="reference", choices=intensity.MODES)
    parser.add_argument("--definition", default="J", choices=intensity.DEFINITIONS)
    parser.add_argument("--per-video", action="store_true", help="print one line per video too")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args()

    demo = generate_demo(DemoConfig(num_per_class_train=0, num_per_class_val=0,
                                    num_per_class_test=args.per_class, seed=args.seed))
    checks = [check_video(a, demo.bursts[a["frame_dir"]], args.clip_len, args.mode, args.definition)
              for a in demo.annotations["annotations"]]
    summary = summarise(checks)
    if args.json:
        print(json.dumps({"args": vars(args), "summary": summary,
                          **({"videos": [asdict(c) for c in checks]} if args.per_video else {})}, indent=1))
        return
    if args.per_video:
        for c in checks:
            print(f"{c.frame_dir:32s} T={c.total_frames:3d} peak={c.peak:3d} in_burst={int(c.peak_in_burst)} "
                  f"cover intensity={c.intensity_cover:.2f} uniform={c.uniform_cover:.2f} "
                  f"reps intensity={c.intensity_reps}/{c.repetitions} "
                  f"uniform={c.uniform_reps}/{c.repetitions}")
    print(f"demo test split, seed {args.seed}, {args.per_class} videos/class, clip_len {args.clip_len}, "
          f"intensity {args.mode}/{args.definition}")
    print(f"{'class':20s} {'videos':>6s} {'T':>5s} {'peak in burst':>13s} "
          f"{'burst frames covered: intensity':>32s} {'uniform':>8s} "
          f"{'reps seen: intensity':>21s} {'uniform':>8s}")
    for name, s in summary.items():
        print(f"{name:20s} {s['videos']:6d} {s['frames']:5.0f} {s['peak_in_burst']:13.2f} "
              f"{s['intensity_cover']:32.2f} {s['uniform_cover']:8.2f} "
              f"{s['intensity_reps']:15.2f} / {s['repetitions']:.0f} {s['uniform_reps']:8.2f}")


if __name__ == "__main__":
    main()
