"""The rows ``bench_loader.py`` prints: one configuration's timed runs, baseline and profile."""

from __future__ import annotations

import argparse
import os
from typing import Any


def make_row(mode: str, workers: int, persons: int, warmup: int, load: float, alone: dict[str, Any],
             with_dev: dict[str, Any], baseline: dict[str, float], profile: dict[str, Any],
             args: argparse.Namespace) -> dict[str, Any]:
    """One printed row: the timed runs, the baseline and the profile of one configuration."""
    return {
        "heatmaps_on": mode, "workers": workers, "persons": persons,
        "samples_per_s": round(alone["samples_per_s"], 1),
        "samples_per_core_s": round(alone["samples_per_worker_cpu_s"], 1),
        "samples_per_core_s_median_window": round(alone["window_median"], 1),
        "samples_per_core_s_best_window": round(alone["window_best"], 1),
        "recycled_batch_share": round(alone["recycled"], 3),
        "warmup_batches": warmup,
        "warmup_samples_per_core_s": round(alone["warmup_samples_per_worker_cpu_s"], 1),
        "main_cpu_ms_per_sample": round(alone["main_cpu_ms_per_sample"], 3),
        "samples_per_s_incl_to_device": round(with_dev["samples_per_s"], 1),
        "samples_per_core_s_incl_to_device": round(with_dev["samples_per_cpu_s"], 1),
        "baseline_samples_per_s": round(baseline["baseline_samples_per_cpu_s"], 2),
        "speedup_per_core": round(
            alone["samples_per_worker_cpu_s"] / baseline["baseline_samples_per_cpu_s"], 1),
        "in_process_samples_per_core_s": round(profile["in_process_samples_per_cpu_s"], 1),
        "stage_share": profile["stage_share"],
        "stage_ms_per_sample": profile["stage_ms_per_sample"],
        "to_device_ms_per_sample": profile["to_device_ms_per_sample"],
        "worker_rss_mb": alone["rss"], "worker_private_mb": alone["private"],
        "baseline_max_abs_diff": baseline["baseline_max_abs_diff"],
        "clip_len": args.clip_len, "size": args.size, "batch_size": args.batch_size,
        "frames": list(args.frames), "load_avg_1m": round(load, 2), "cpus": os.cpu_count(),
    }


def print_row(row: dict[str, Any]) -> None:
    shares = " ".join(f"{k}={v:.0%}" for k, v in row["stage_share"].items())
    print(f"heatmaps_on={row['heatmaps_on']:7s} workers={row['workers']} M={row['persons']}: "
          f"{row['samples_per_core_s']:7.1f} samples per worker-core-s (1 s windows: median "
          f"{row['samples_per_core_s_median_window']:.1f}, best {row['samples_per_core_s_best_window']:.1f}; "
          f"{row['samples_per_s']:.1f}/s wall; first {row['warmup_batches']} batches "
          f"{row['warmup_samples_per_core_s']:.1f}/core-s, "
          f"main {row['main_cpu_ms_per_sample']:.2f} ms/sample); incl. to_device on CPU "
          f"{row['samples_per_core_s_incl_to_device']:.1f} per core-s; baseline "
          f"{row['baseline_samples_per_s']:.1f} per core-s (×{row['speedup_per_core']}); in-process "
          f"{row['in_process_samples_per_core_s']:.1f}/core-s [{shares}]; to_device "
          f"{row['to_device_ms_per_sample']:.2f} ms/sample; worker RSS {row['worker_rss_mb']} MB (private "
          f"{row['worker_private_mb']} MB); load {row['load_avg_1m']}", flush=True)
