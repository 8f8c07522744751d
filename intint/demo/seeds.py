"""`intint demo --seeds N`: the demo N times with consecutive seeds, and the spread of its accuracies.

Each seed regenerates the demo dataset and trains afresh (`run.run_demo` with `seed=k` into
`<out>/seed-<k>/`), so the spread covers both the data draw and training: how much of the fused margin is
noise. `seeds.json` holds every seed's test metrics and, per row (Integrity, Intensity, the 1:1 fusion,
the validation-tuned fusion) and metric, the mean and sample standard deviation over seeds, with the
fused top-1's margin over the better pathway per seed. It holds no wall-clock figure, so the same command
gives the same file; the timings go to `seconds.json`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from intint.demo import run
from intint.eval import metrics
from intint.store import fsio

log = logging.getLogger(__name__)

SEEDS_FILE = "seeds.json"
SECONDS_FILE = "seconds.json"


@dataclass
class SeedsResult:
    """Where the per-seed demos went, the `seeds.json` summary and each seed's wall time by step."""

    out: Path
    summary: dict[str, Any]
    seconds: dict[int, dict[str, float]]


def spread(values: Sequence[float]) -> dict[str, Any]:
    """`mean`, `sd` (sample standard deviation; None for one value), `min`, `max` and the `values`."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if arr.size > 1 else None,
            "min": float(arr.min()), "max": float(arr.max()), "values": [float(v) for v in arr]}


def summarise(results_by_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """The `seeds.json` document: per-seed metrics, their spread per row and metric, the fused margins.

    A row is summarised when every seed has it (`fused_tuned` needs a validation split, which the demo
    has). `fused_margin` is fused top-1 minus the better pathway's top-1, per seed.
    """
    seeds = sorted(results_by_seed)
    if not seeds:
        raise ValueError("summarise: no seed's results")
    per_seed = {str(s): {name: {m: float(results_by_seed[s][name][m]) for m in run.METRICS}
                         for name, _ in run.ROWS if name in results_by_seed[s]} for s in seeds}
    rows = {}
    for name, _ in run.ROWS:
        if all(name in results_by_seed[s] for s in seeds):
            rows[name] = {m: spread([results_by_seed[s][name][m] for s in seeds]) for m in run.METRICS}
    summary: dict[str, Any] = {"seeds": seeds, "per_seed": per_seed, "rows": rows}
    if all("fused_tuned" in results_by_seed[s] for s in seeds):
        summary["fused_tuned_weight"] = spread([results_by_seed[s]["fused_tuned"]["weight"] for s in seeds])
    if {"integrity", "intensity", "fused"} <= set(rows):
        margins = [results_by_seed[s]["fused"]["top1"]
                   - max(results_by_seed[s]["integrity"]["top1"], results_by_seed[s]["intensity"]["top1"])
                   for s in seeds]
        summary["fused_margin"] = spread(margins)
    return summary


def _mean_sd(cell: Mapping[str, Any]) -> str:
    """`55.0 ± 3.2` in percent (`55.0` alone with one seed)."""
    sd = cell["sd"]
    return f"{100 * cell['mean']:.1f}" + ("" if sd is None else f" ± {100 * sd:.1f}")


def seeds_table(summary: Mapping[str, Any]) -> list[list[str]]:
    """Rows [pathway, top-1, top-5, mean class] as `mean ± sd` percentages over the seeds."""
    labels = dict(run.ROWS)
    return [[labels[name], *(_mean_sd(summary["rows"][name][m]) for m in run.METRICS)]
            for name, _ in run.ROWS if name in summary["rows"]]


def seed_options(opts: run.DemoOptions, seeds: int) -> list[run.DemoOptions]:
    """One demo per seed `opts.seed`, `opts.seed + 1`, ..., each into its own `seed-<k>` subfolder."""
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    out = Path(opts.out).expanduser().resolve()
    return [dataclasses.replace(opts, seed=k, out=str(out / f"seed-{k}"))
            for k in range(opts.seed, opts.seed + seeds)]


def run_seeds(opts: run.DemoOptions, seeds: int, echo: Callable[[str], None] = log.info) -> SeedsResult:
    """Run the demo once per seed (one Ray for all of them), write `seeds.json` and `seconds.json`."""
    from intint.train import launch

    per_seed = seed_options(opts, seeds)
    out = Path(opts.out).expanduser().resolve()
    run.prepare_folder(out)
    fsio.atomic_write(str(out / run.MARKER), json.dumps({**dataclasses.asdict(opts), "seeds": seeds},
                                                         sort_keys=True).encode())
    cfg = run.train_config(opts, "", out)
    started = launch.start_ray(num_cpus=launch.local_cpus(cfg), env=launch.worker_env(), quiet=True)
    results: dict[int, dict[str, Any]] = {}
    seconds: dict[int, dict[str, float]] = {}
    try:
        for one in per_seed:
            echo(f"[demo seed {one.seed}: {len(results) + 1}/{seeds}] into {one.out}")
            t = time.perf_counter()
            done = run.run_demo(one, echo)
            results[one.seed] = done.results
            seconds[one.seed] = {**done.seconds, "total": time.perf_counter() - t}
    finally:
        if started:
            launch.stop_ray()
    summary = summarise(results)
    metrics.write_results(summary, str(out / SEEDS_FILE))
    fsio.atomic_write(str(out / SECONDS_FILE),
                      json.dumps({str(k): v for k, v in seconds.items()}, indent=2, sort_keys=True).encode())
    return SeedsResult(out, summary, seconds)
