"""The paper's ablation sweep: Intensity clip placements × one shared Integrity pathway (Tables IV-VI).

What it does, given an `AblationConfig` (`intint.ablation.plan`: a preset and the placements):

1. trains **one** Integrity pathway (`pathways="integrity"`) and one Intensity pathway per placement
   (`pathways="intensity"`: a single definition, J, B, A, JBA_arithmetic, JBA_weighted, or random), each
   an independent Ray Train run with its own folder `storage_path/name/<run id>`;
2. saves each run's view-averaged probabilities, labels and keys on the validation and test splits
   (`predictions.npz`, predicted from the run's best checkpoint with the test views) and marks the run
   finished with `done.json` (its own metrics and config);
3. fuses every Intensity run with the Integrity run from those files (`intint.ablation.results_table`)
   and writes the table (JSON, Markdown, bar chart PNG) into the sweep folder.

Why this shape:

- Fusion is a sum of saved probabilities (docs/method.md §7), so the Integrity pathway is trained once and
  fused with every row, as the paper did (its Integrity column is constant).
- JBA_weighted the paper's way (docs/method.md §2.7): its weights are the J, B and A runs' normalised
  two-pathway accuracies on the **validation** split, so that run starts only once J, B, A (and the
  Integrity run) have finished. The shards hold JBA_weighted for the builder's weights only; the run
  gets `jba_weights` and the loader recomputes the peaks from the stored curves
  (`intint.store.reweighted_peaks`).
- Resumable: a rerun skips runs with `done.json` and continues the others, which Ray Train V2 resumes
  from their last checkpoint because name and storage path are the same (docs/platform-notes.md §1b).
- Concurrency: as many runs at once as the cluster's resources hold (`concurrent_slots`), each run
  driven by a thread calling `intint.train.launch.run`; on a 2-core machine that is one at a time.
  Ray itself is reached only through `intint.train.launch`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from intint.ablation import results_table, seed_table
from intint.ablation.plan import (
    DONE_FILE,
    INTEGRITY_RUN,
    PLAN_FILE,
    PREDICTIONS_FILE,
    ROLES,
    TABLE_JSON,
    TABLE_MD,
    TABLE_PNG,
    AblationConfig,
    check_same,
    read_json,
    run_config,
    run_id,
    write_json,
)
from intint.ablation.results_table import JBA_SOURCES, SplitPredictions
from intint.config import TrainConfig
from intint.store import fsio
from intint.train import launch

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- one run


@dataclass
class RunRecord:
    """A finished run of the sweep: its own metrics, and whether this invocation trained it."""

    run_id: str
    pathway: str
    placement: str | None
    folder: str
    trained: bool
    metrics: dict[str, dict[str, float]]  # role → top1/top5/mean_class/num_samples of its own pathway
    config: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0

    def predictions(self) -> dict[str, SplitPredictions]:
        return results_table.load_predictions(fsio.join(self.folder, PREDICTIONS_FILE), ROLES)


def predict_checkpoint(config: dict[str, Any], checkpoint_url: str, splits: dict[str, str]
                       ) -> dict[str, SplitPredictions]:
    """Per-video probabilities of the weights the run tests on each split (split role → predictions).

    Runs where the run's data is readable (a Ray task). The run's `select` names the weights, as for its
    own test: the last epoch's (the reference's protocol, the checkpoint's `model`) or the best epoch's by
    validation (`best_model` when a later epoch was saved after it); the views are the run's test views. A
    split named twice (validation = test) is predicted once.
    """
    import torch

    from intint.config import loader_config
    from intint.eval import distributed
    from intint.eval.models import load_model
    from intint.loader import streams
    from intint.loader.device import to_device

    cfg = TrainConfig.from_dict(config)
    device = torch.device("cuda" if cfg.use_gpu and torch.cuda.is_available() else "cpu")
    model = load_model(checkpoint_url, cfg.select, device, cfg=cfg).model
    pathway = model.pathways[0]
    done: dict[str, SplitPredictions] = {}
    out: dict[str, SplitPredictions] = {}
    for role, split in splits.items():
        if split not in done:
            lcfg = loader_config(cfg, split, train=False)
            loader = streams.eval_loader(lcfg, 0, 1, num_clips=cfg.eval_num_clips, flip_double=cfg.eval_flip)
            local = distributed.predict(model, loader, device, bf16=cfg.bf16,
                                      prepare=lambda b, lc=lcfg: to_device(b, device, lc))
            preds = distributed.merge([local], split)
            done[split] = SplitPredictions(preds.probs[pathway].astype(np.float32), preds.labels,
                                           np.asarray(preds.keys, dtype=np.str_))
        out[role] = done[split]
    return out


def latest_checkpoint_url(result: Any, cfg: TrainConfig) -> str:
    """The run folder URL of Ray's latest checkpoint (always retained, and it carries the best weights)."""
    if result is None or result.checkpoint is None:
        raise RuntimeError(f"run {cfg.name}: Ray returned no checkpoint")
    return fsio.join(launch.run_folder(cfg), os.path.basename(result.checkpoint.path.rstrip("/")))


def execute(cfg: TrainConfig, splits: dict[str, str], num_classes: int) -> RunRecord:
    """Run one pathway to the end: skip it when `done.json` says it finished, else train (resuming any
    earlier attempt), predict both splits (a Ray task where the data is), save `predictions.npz` then
    `done.json`."""
    folder = launch.run_folder(cfg)
    pathway = cfg.pathways
    placement = None if pathway == "integrity" else cfg.intensity_definition
    done_url, plan_url = fsio.join(folder, DONE_FILE), fsio.join(folder, PLAN_FILE)
    done = read_json(done_url)
    if done is not None:
        check_same(done["config"], cfg, done_url)
        if not fsio.exists(fsio.join(folder, PREDICTIONS_FILE)):
            raise FileNotFoundError(f"{done_url} exists but {PREDICTIONS_FILE} is missing; delete done.json "
                                    "to redo the predictions")
        log.info("%s: finished earlier, reusing %s", cfg.name, folder)
        return RunRecord(done["run_id"], pathway, placement, folder, False, done["metrics"], done["config"],
                         float(done.get("wall_s", 0.0)))
    plan = read_json(plan_url)
    if plan is not None:
        check_same(plan["config"], cfg, plan_url)
        log.info("%s: resuming the unfinished run in %s", cfg.name, folder)
    else:
        write_json(plan_url, {"run_id": cfg.name, "config": cfg.to_dict()})
        log.info("%s: training (%s%s)", cfg.name, pathway, "" if placement is None else ", " + placement)
    start = time.monotonic()
    result = launch.run(cfg)
    ckpt = latest_checkpoint_url(result, cfg)
    preds = launch.run_as_task(predict_checkpoint, cfg, cfg.to_dict(), ckpt, splits)
    results_table.save_predictions(fsio.join(folder, PREDICTIONS_FILE), preds)
    metrics = {role: results_table.pathway_summary(p, num_classes) for role, p in preds.items()}
    wall = time.monotonic() - start
    write_json(done_url, {"run_id": cfg.name, "pathway": pathway, "placement": placement,
                           "config": cfg.to_dict(), "checkpoint": ckpt, "splits": splits, "metrics": metrics,
                           "wall_s": wall})
    log.info("%s: done in %.0f s; test top-1 %.4f", cfg.name, wall, metrics["test"]["top1"])
    return RunRecord(cfg.name, pathway, placement, folder, True, metrics, cfg.to_dict(), wall)


# ---------------------------------------------------------------------------------------- scheduling


def concurrent_slots(cfg: TrainConfig, resources: Mapping[str, float], limit: int | None = None) -> int:
    """How many runs of `cfg`'s size fit in the cluster at once (at least 1, at most `limit`).

    One run holds `num_workers × cpus_per_worker` CPUs (and `num_workers` GPUs on GPU); the Train V2
    controller holds none (docs/platform-notes.md §1b). The prediction task after each run borrows one
    worker's share.
    """
    slots = int(resources.get("CPU", 0) // (cfg.num_workers * cfg.cpus_per_worker))
    if cfg.use_gpu:
        slots = min(slots, int(resources.get("GPU", 0) // cfg.num_workers))
    slots = max(1, slots)
    return slots if limit is None else min(slots, limit)


class Sweep:
    """Schedules the runs on a thread pool: Integrity, Random, J, B, A, the other placements, then
    JBA_weighted once J, B, A and Integrity are done and its weights are known. Random comes early: every
    other row is compared with it, so a sweep cut short still answers that question for the rows it has."""

    def __init__(self, ab: AblationConfig, num_classes: int, slots: int) -> None:
        self.ab, self.num_classes, self.slots = ab, num_classes, slots
        self.records: dict[str, RunRecord] = {}
        self.failures: dict[str, BaseException] = {}
        self.jba: dict[str, Any] | None = None

    def _order(self) -> list[str | None]:
        first = [g for g in (results_table.RANDOM, *JBA_SOURCES) if g in self.ab.placements]
        rest = [p for p in self.ab.placements if p not in first and p != "JBA_weighted"]
        return [None, *first, *rest]

    def _submit(self, pool: ThreadPoolExecutor, placement: str | None,
                weights: Mapping[str, float] | None = None) -> Future:
        cfg = run_config(self.ab, placement, weights)
        return pool.submit(execute, cfg, self.ab.splits, self.num_classes)

    def _learnt_weights(self) -> dict[str, Any]:
        """Normalised two-pathway validation top-1 of J, B and A (each fused with the Integrity run)."""
        integrity = self.records[INTEGRITY_RUN].predictions()["val"]
        accuracies = {}
        for g in JBA_SOURCES:
            rec = self.records[run_id(g)]
            pair = results_table.pair_metrics(integrity, rec.predictions()["val"], self.num_classes,
                                             self.ab.base.fusion_weights, where=f"{rec.folder} (val)")
            accuracies[g] = pair["fused"]["top1"]
        return {"source": "validation", "split": self.ab.splits["val"], "accuracies": accuracies,
                "weights": results_table.jba_weights_from_validation(accuracies)}

    def run(self) -> None:
        wants_jba = "JBA_weighted" in self.ab.placements
        if wants_jba and self.ab.jba_weights is not None:
            weights = results_table.normalised_fixed_weights(self.ab.jba_weights)
            self.jba = {"source": "fixed", "weights": weights}
        waiting_for = {INTEGRITY_RUN, *(run_id(g) for g in JBA_SOURCES)}
        pool = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="ablate")
        try:
            self._drive(pool, wants_jba, waiting_for)
        except BaseException:
            # Ctrl-C (or a bug here): the runs' threads block in `fit()`, which only ends when Ray does, so
            # stop Ray instead of waiting for every queued run. Checkpoints so far stay: a rerun resumes.
            pool.shutdown(wait=False, cancel_futures=True)
            log.warning("sweep interrupted: stopping Ray; rerun the same command to continue the sweep")
            launch.stop_ray()
            raise
        pool.shutdown(wait=True)

    def _drive(self, pool: ThreadPoolExecutor, wants_jba: bool, waiting_for: set[str]) -> None:
        """Submit the runs, collect them as they finish, and start JBA_weighted once its weights exist."""
        futures = {self._submit(pool, p): run_id(p) for p in self._order()}
        jba_pending = wants_jba
        if jba_pending and self.jba is not None:
            futures[self._submit(pool, "JBA_weighted", self.jba["weights"])] = run_id("JBA_weighted")
            jba_pending = False
        while futures:
            finished, _ = wait(list(futures), return_when=FIRST_COMPLETED)
            for fut in finished:
                name = futures.pop(fut)
                try:
                    self.records[name] = fut.result()
                except Exception as err:  # one failed run must not stop the others
                    self.failures[name] = err
                    log.error("%s FAILED: %s: %s", name, type(err).__name__, err)
            if jba_pending and waiting_for <= set(self.records) | set(self.failures):
                jba_pending = False
                blocked = sorted(waiting_for & set(self.failures))
                if blocked:
                    self.failures[run_id("JBA_weighted")] = RuntimeError(
                        f"not started: its weights need {blocked}, which failed")
                    continue
                try:
                    self.jba = self._learnt_weights()
                except ValueError as err:
                    self.failures[run_id("JBA_weighted")] = err
                    continue
                log.info("JBA weights from validation: %s",
                         ", ".join(f"{g} {w:.4f}" for g, w in self.jba["weights"].items()))
                futures[self._submit(pool, "JBA_weighted", self.jba["weights"])] = run_id("JBA_weighted")


# ---------------------------------------------------------------------------------------- the table


def build_table(ab: AblationConfig, sweep: Sweep, wall_s: float) -> dict[str, Any]:
    """The table JSON: one row per placement with test (and validation) metrics of the pair."""
    integrity_rec = sweep.records[INTEGRITY_RUN]
    integrity = integrity_rec.predictions()
    rows = []
    hits: dict[str, dict[str, np.ndarray]] = {}
    for placement in sorted(ab.placements, key=results_table.row_sort_key):
        rec = sweep.records.get(run_id(placement))
        if rec is None:
            continue
        preds = rec.predictions()
        row: dict[str, Any] = {"placement": placement, "label": results_table.row_label(placement),
                               "run": rec.run_id}
        for role in ROLES:
            row[role] = results_table.pair_metrics(integrity[role], preds[role], sweep.num_classes,
                                                  ab.base.fusion_weights, where=f"{rec.folder} ({role})")
        row["fused_tuned"] = results_table.tuned_pair(integrity, preds, sweep.num_classes, ab.splits)
        hits[placement] = results_table.hits_on_test(integrity["test"], preds["test"], ab.base.fusion_weights)
        rows.append(row)
    base = ab.base
    return {
        "title": (f"{base.dataset}: Intensity clip placement ablation ({base.intensity_mode} intensity, "
                  f"{base.epochs} epoch{'s' if base.epochs != 1 else ''})"),
        "dataset": base.dataset, "sweep": base.name, "folder": ab.sweep_folder, "shards": base.shards,
        "intensity_mode": base.intensity_mode, "epochs": base.epochs, "splits": ab.splits,
        "num_test": int(len(integrity["test"].keys)), "num_val": int(len(integrity["val"].keys)),
        "integrity_run": integrity_rec.run_id, "rows": rows, "jba_weights": sweep.jba,
        "random_vs_intensity": results_table.random_vs_intensity(rows, hits),
        "runs": {name: {"pathway": r.pathway, "placement": r.placement, "trained_now": r.trained,
                        "train_wall_s": r.wall_s} for name, r in sorted(sweep.records.items())},
        "failed": {name: f"{type(e).__name__}: {e}" for name, e in sorted(sweep.failures.items())},
        "trained_now": sorted(n for n, r in sweep.records.items() if r.trained),
        "wall_s": wall_s,
    }


def write_outputs(table: Mapping[str, Any], folder: str) -> dict[str, str]:
    """table.json, table.md and table.png in the sweep folder; returns their URLs."""
    urls = {"json": fsio.join(folder, TABLE_JSON), "markdown": fsio.join(folder, TABLE_MD),
            "png": fsio.join(folder, TABLE_PNG)}
    write_json(urls["json"], table)
    fsio.atomic_write(urls["markdown"], results_table.to_markdown(table).encode())
    if table["rows"]:
        results_table.plot_table(table, urls["png"])
    return urls


def run_one(ab: AblationConfig) -> dict[str, Any]:
    """Run (or finish) the sweep of one seed and write its table; returns the table dict.

    Starts a private local Ray unless one is initialised or `RAY_ADDRESS` names a cluster. Raises
    `RuntimeError` listing the failed runs after writing the table of the others.
    """
    from intint.eval.models import num_classes_of

    start = time.monotonic()
    base = launch.resolve(ab.base)
    ab = dataclasses.replace(ab, base=base)
    # Without auto-connect, a run thread that touches Ray after a Ctrl-C shutdown fails instead of quietly
    # starting a fresh local Ray.
    launch.start_ray(num_cpus=ab.cpus or launch.local_cpus(base), env=launch.worker_env(), auto_connect=False)
    slots = concurrent_slots(base, launch.cluster_resources(), ab.concurrency)
    num_classes = num_classes_of(base)
    log.info("sweep %s: Integrity + %d placements (%s), %d run(s) at a time", ab.sweep_folder,
             len(ab.placements), ", ".join(ab.placements), slots)
    sweep = Sweep(ab, num_classes, slots)
    sweep.run()
    if INTEGRITY_RUN not in sweep.records:
        raise RuntimeError("the Integrity run failed, so no row can be fused: "
                           f"{sweep.failures[INTEGRITY_RUN]}")
    table = build_table(ab, sweep, time.monotonic() - start)
    urls = write_outputs(table, ab.sweep_folder)
    log.info("%s", results_table.render_text(table))
    log.info("sweep wrote %s (%.0f s)", ", ".join(urls.values()), table["wall_s"])
    if sweep.failures:
        raise RuntimeError("failed runs: " + "; ".join(f"{n}: {e}" for n, e in table["failed"].items()))
    return table


def run(ab: AblationConfig) -> dict[str, Any]:
    """The sweep of `ab`: one seed (`run_one`, its table), or `ab.seeds` seeds each into `<sweep>/seed-<k>/`
    and then the table over seeds (`intint.ablation.seed_table`, written into the sweep folder; returned).

    A seed whose runs fail does not stop the next; the seeds table then holds the seeds that finished, and
    `RuntimeError` names the failed ones after it is written.
    """
    if ab.seeds == 1:
        shards = seed_table.seed_shards(ab.base.shards, ab.base.seed)
        return run_one(dataclasses.replace(ab, base=dataclasses.replace(ab.base, shards=shards)))
    tables: dict[int, dict[str, Any]] = {}
    failed: dict[int, str] = {}
    for seed in range(ab.base.seed, ab.base.seed + ab.seeds):
        one = dataclasses.replace(ab, base=seed_table.per_seed_base(ab.base, seed), seeds=1)
        log.info("sweep seed %d (%d of %d) into %s", seed, len(tables) + len(failed) + 1, ab.seeds,
                 one.sweep_folder)
        try:
            tables[seed] = run_one(one)
        except RuntimeError as err:
            failed[seed] = str(err)
            log.error("sweep seed %d FAILED: %s", seed, err)
    if not tables:
        raise RuntimeError("every seed's sweep failed: "
                           + "; ".join(f"seed {k}: {e}" for k, e in failed.items()))
    hits = {k: seed_table.table_hits(t, ab.base.fusion_weights) for k, t in tables.items()}
    table = {**seed_table.combine(tables, hits), "failed_seeds": {str(k): e for k, e in failed.items()}}
    urls = seed_table.write_outputs(table, ab.sweep_folder, write_json)
    log.info("%s", seed_table.to_markdown(table))
    log.info("seeds table written to %s", ", ".join(urls.values()))
    if failed:
        raise RuntimeError("failed seeds: " + "; ".join(f"seed {k}: {e}" for k, e in failed.items()))
    return table


def checked(ab: AblationConfig) -> AblationConfig:
    """`ab` after the preflight checks (`intint.train.preflight`) of every seed's config: each seed's shard
    set (`{seed}` in the shard URL filled in) must open; the base comes back resolved, the template kept."""
    from intint.train import preflight

    seeds = range(ab.base.seed, ab.base.seed + ab.seeds)
    if seed_table.SEED_PLACEHOLDER not in ab.base.shards:
        return dataclasses.replace(ab, base=preflight.check(ab.base))
    first, *_ = [preflight.check(seed_table.per_seed_base(ab.base, k)) for k in seeds]
    template = launch.resolve(ab.base).shards
    return dataclasses.replace(ab, base=dataclasses.replace(first, shards=template, seed=ab.base.seed,
                                                            name=ab.base.name))
