"""Train every split of a multi-split dataset (HMDB51's three) and tabulate the per-split and mean results.

HMDB51 results are reported as the mean over its three official splits. `run_splits` takes one config
per split, resolves them all first (so a refusal, e.g. HMDB51 without `--pretrained`, comes before Ray
starts), starts Ray once and trains as many splits at once as the cluster holds (`runs_at_once`), each
driven by a thread calling `intint.train.launch.run`; on a cluster too small for two, one after another.
A failed split does not stop the others: the table (`<prefix>-splits.json` and `.md` in the storage
path) holds the finished splits, and the failures are raised after it is written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from intint.config import TrainConfig
from intint.store import fsio
from intint.train import launch

log = logging.getLogger(__name__)

PATHWAY_ROWS = ("integrity", "intensity", "fused")
METRICS = ("top1", "top5", "mean_class")


def runs_at_once(cfg: TrainConfig, resources: Mapping[str, float], runs: int) -> int:
    """How many runs of `cfg`'s size fit in the cluster at once: `num_workers × cpus_per_worker` CPUs each
    (and `num_workers` GPUs on GPU); at least 1, at most `runs`."""
    slots = int(resources.get("CPU", 0) // (cfg.num_workers * cfg.cpus_per_worker))
    if cfg.use_gpu:
        slots = min(slots, int(resources.get("GPU", 0) // cfg.num_workers))
    return max(1, min(slots, runs))


def split_table(results: Mapping[str, Mapping[str, Any]], dataset: str) -> dict[str, Any]:
    """The table of finished splits (split name → its results.json): per split, each pathway's top-1,
    top-5 and mean-class accuracy and the tested checkpoint; and their mean over the splits."""
    rows = {}
    for split, res in results.items():
        rows[split] = {n: {m: float(res[n][m]) for m in METRICS} for n in PATHWAY_ROWS if n in res}
        rows[split]["tested"] = res.get("tested")
        rows[split]["num_samples"] = res.get("meta", {}).get("num_samples")
    names = [n for n in PATHWAY_ROWS if rows and all(n in r for r in rows.values())]
    mean = {n: {m: sum(r[n][m] for r in rows.values()) / len(rows) for m in METRICS} for n in names}
    return {"dataset": dataset, "splits": rows, "mean": mean, "num_splits": len(rows)}


def to_markdown(table: Mapping[str, Any]) -> str:
    """The table as Markdown: one row per split and the mean, top-1 % of each pathway."""
    names = list(table["mean"])
    lines = [f"# {table['dataset']}: per-split and mean test accuracy (top-1 %)", "",
             "| split | tested | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
    for split, row in table["splits"].items():
        tested = row.get("tested") or {}
        what = f"{tested.get('weights', '?')} (epoch {tested.get('epoch', '?')})"
        cells = " | ".join(f"{100 * row[n]['top1']:.2f}" for n in names)
        lines.append(f"| {split} | {what} | {cells} |")
    lines.append(f"| **mean of {table['num_splits']}** | | "
                 + " | ".join(f"**{100 * table['mean'][n]['top1']:.2f}**" for n in names) + " |")
    return "\n".join(lines) + "\n"


def write_table(table: Mapping[str, Any], folder: str, prefix: str) -> dict[str, str]:
    """`<prefix>-splits.json` and `<prefix>-splits.md` in `folder`; returns their URLs."""
    urls = {"json": fsio.join(folder, f"{prefix}-splits.json"),
            "markdown": fsio.join(folder, f"{prefix}-splits.md")}
    fsio.atomic_write(urls["json"], (json.dumps(table, indent=2, sort_keys=True) + "\n").encode())
    fsio.atomic_write(urls["markdown"], to_markdown(table).encode())
    return urls


def _train_one(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    launch.run(cfg, resume=resume)
    return json.loads(fsio.read_bytes(launch.results_url(cfg)))


def run_splits(configs: Mapping[str, TrainConfig], prefix: str, resume: bool = False) -> dict[str, Any]:
    """Train one config per split (split label → config, distinct run names, one storage path) and write
    the per-split and mean table into the storage path; returns the table.

    Raises ValueError before Ray starts when a config is refused, RuntimeError after the table when a
    split failed.
    """
    resolved = {split: launch.resolve(cfg) for split, cfg in configs.items()}
    _check_distinct([c.name for c in resolved.values()], [c.storage_path for c in resolved.values()])
    first = next(iter(resolved.values()))
    launch.start_ray(num_cpus=launch.local_cpus(first), env=launch.worker_env())
    slots = runs_at_once(first, launch.cluster_resources(), len(resolved))
    log.info("%s: %d splits (%s), %d at a time", prefix, len(resolved), ", ".join(resolved), slots)
    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, BaseException] = {}
    with ThreadPoolExecutor(max_workers=slots, thread_name_prefix="split") as pool:
        futures = {split: pool.submit(_train_one, cfg, resume) for split, cfg in resolved.items()}
        for split, future in futures.items():
            try:
                results[split] = future.result()
            except Exception as err:  # one failed split must not lose the others
                failures[split] = err
                log.error("%s FAILED: %s: %s", split, type(err).__name__, err)
    table = split_table(results, first.dataset)
    table["failed"] = {split: f"{type(e).__name__}: {e}" for split, e in failures.items()}
    urls = write_table(table, first.storage_path, prefix)
    log.info("%s", to_markdown(table))
    log.info("split table: %s", ", ".join(urls.values()))
    if failures:
        raise RuntimeError("failed splits: " + "; ".join(f"{s}: {e}" for s, e in table["failed"].items()))
    return table


def _check_distinct(names: Sequence[str], storage: Sequence[str]) -> None:
    if len(set(names)) != len(names):
        raise ValueError(f"the splits need distinct run names (Ray would resume one run), got {list(names)}")
    if len(set(storage)) != 1:
        raise ValueError(f"the splits need one storage path for their table, got {sorted(set(storage))}")
