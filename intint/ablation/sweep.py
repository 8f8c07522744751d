"""The paper's ablation sweep: Intensity clip placements × one shared Integrity pathway (Tables IV-VI).

What it does, given a shard set and a preset (`TrainConfig`):

1. trains **one** Integrity pathway (`pathways="integrity"`) and one Intensity pathway per placement
   (`pathways="intensity"`: a single definition, J, B, A, JBA_arithmetic, JBA_weighted, or random), each
   an independent Ray Train run with its own folder `storage_path/name/<run id>`;
2. saves each run's view-averaged probabilities, labels and keys on the validation and test splits
   (`predictions.npz`, predicted from the run's best checkpoint with the test views) and marks the run
   finished with `done.json` (its own metrics and config);
3. fuses every Intensity run with the Integrity run from those files (`intint.ablate_table`) and writes
   the table (JSON, Markdown, bar chart PNG) into the sweep folder.

Why this shape:

- Fusion is a sum of saved probabilities (spec §7), so the Integrity pathway is trained once and fused
  with every row, as the paper did (its Integrity column is constant).
- JBA_weighted the paper's way (spec §2.7): its weights are the J, B and A runs' normalised
  two-pathway accuracies on the **validation** split, so that run starts only once J, B, A (and the
  Integrity run) have finished. The shards hold JBA_weighted for the builder's weights only; the run
  gets `jba_weights` and the loader recomputes the peaks from the stored curves (`intint.reweight`).
- Resumable: a rerun skips runs with `done.json` and continues the others, which Ray Train V2 resumes
  from their last checkpoint because name and storage path are the same (notes §1b). `run.json` records
  each run's config before it starts, so a rerun with a different config fails instead of mixing two.
- Concurrency: as many runs at once as the cluster's resources hold (`concurrent_slots`), each run
  driven by a thread calling `intint.train.run`; on a 2-core machine that is one at a time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from intint.ablation import results_table
from intint.ablation.results_table import JBA_SOURCES, RANDOM, SplitPredictions
from intint.config import TrainConfig
from intint.pose import intensity
from intint.store import fsio

INTEGRITY_RUN = "integrity"
DONE_FILE = "done.json"
PLAN_FILE = "run.json"
PREDICTIONS_FILE = "predictions.npz"
TABLE_JSON, TABLE_MD, TABLE_PNG = "table.json", "table.md", "table.png"
DEFAULT_PLACEMENTS: tuple[str, ...] = (RANDOM, "J", "B", "A", "JBA_arithmetic", "JBA_weighted")
ROLES: tuple[str, ...] = ("val", "test")

# Config fields that do not change what a run learns: a rerun may change them freely (other machine,
# other paths, other tracking). Every other field must match the recorded run.json / done.json.
VOLATILE_FIELDS = frozenset({
    "shards", "storage_path", "name", "wandb", "wandb_project", "wandb_group", "log_every", "loader_workers",
    "cpus_per_worker", "max_failures", "inject_failure_at_epoch", "compile", "heatmaps_on",
})
# Fields the Integrity run ignores (it never reads intensity).
INTENSITY_FIELDS = frozenset({"intensity_mode", "intensity_definition", "jba_weights"})


@dataclass
class AblationConfig:
    """A sweep: the preset every run starts from, which placements to train, and how to schedule them.

    The sweep folder is `base.storage_path/base.name`; `base.name` is also the W&B group of its runs.
    `jba_weights` (J, B, A, any positive scale) fixes the JBA_weighted weights; None computes them from
    the J, B and A runs' validation accuracies (then J, B and A must be among the placements).
    """

    base: TrainConfig
    placements: tuple[str, ...] = DEFAULT_PLACEMENTS
    jba_weights: dict[str, float] | None = None
    concurrency: int | None = None  # at most this many runs at once; None = as many as resources hold
    cpus: int | None = None  # CPUs of a private local Ray; default max(this machine's, one run's needs)

    def __post_init__(self) -> None:
        self.placements = tuple(self.placements)
        unknown = [p for p in self.placements if p not in results_table.PLACEMENTS]
        if unknown or not self.placements:
            raise ValueError(f"placements must be a non-empty subset of {results_table.PLACEMENTS}, got "
                             f"{list(self.placements)}")
        if len(set(self.placements)) != len(self.placements):
            raise ValueError(f"placements are listed twice: {list(self.placements)}")
        if self.jba_weights is not None:
            results_table.normalised_fixed_weights(self.jba_weights)
        elif "JBA_weighted" in self.placements:
            missing = [g for g in JBA_SOURCES if g not in self.placements]
            if missing:
                raise ValueError("JBA_weighted takes its weights from the J, B and A runs' validation "
                                 f"accuracies; add {missing} to the placements or give fixed --jba-weights")
        if self.base.intensity_mode not in intensity.MODES:
            raise ValueError(f"intensity_mode must be one of {intensity.MODES}, "
                             f"got {self.base.intensity_mode!r}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")

    @property
    def sweep_folder(self) -> str:
        return fsio.join(self.base.storage_path, self.base.name)

    @property
    def splits(self) -> dict[str, str]:
        """Split role → split name: `val` picks the JBA weights, `test` is what the table reports."""
        return {"val": self.base.data.val_split, "test": self.base.data.test_split}


def run_id(placement: str | None) -> str:
    """Folder / Ray run / W&B name of a run: `integrity` or `intensity-<placement>`."""
    return INTEGRITY_RUN if placement is None else f"intensity-{placement}"


def run_config(ab: AblationConfig, placement: str | None, jba_weights: Mapping[str, float] | None = None
               ) -> TrainConfig:
    """The config of one run: the base preset restricted to one pathway, in its own folder of the sweep."""
    changes: dict[str, Any] = dict(storage_path=ab.sweep_folder, name=run_id(placement),
                                   wandb_group=ab.base.name, jba_weights=None)
    if placement is None:
        changes["pathways"] = "integrity"
    else:
        changes.update(pathways="intensity", intensity_definition=placement)
        if placement == "JBA_weighted":
            if jba_weights is None:
                raise ValueError("the JBA_weighted run needs its weights")
            changes["jba_weights"] = {g: float(jba_weights[g]) for g in JBA_SOURCES}
    return dataclasses.replace(ab.base, **changes)


def fingerprint(cfg: TrainConfig) -> dict[str, Any]:
    """The fields that decide what a run learns (JSON-normalised), for comparing a rerun with the record."""
    values = {k: v for k, v in cfg.to_dict().items() if k not in VOLATILE_FIELDS}
    if cfg.pathways == "integrity":
        values = {k: v for k, v in values.items() if k not in INTENSITY_FIELDS}
    return json.loads(json.dumps(values, sort_keys=True))


def _check_same(recorded: Mapping[str, Any], cfg: TrainConfig, where: str) -> None:
    was = fingerprint(TrainConfig.from_dict(dict(recorded)))
    now = fingerprint(cfg)
    if was != now:
        diff = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
        raise ValueError(f"{where} was made with another config (fields {diff} differ: "
                         f"{ {k: was.get(k) for k in diff} } then, { {k: now.get(k) for k in diff} } now); "
                         "use another sweep name (--name) or delete that run folder")


def _read_json(url: str) -> dict[str, Any] | None:
    if not fsio.exists(url):
        return None
    try:
        return json.loads(fsio.read_bytes(url))
    except json.JSONDecodeError as err:
        raise ValueError(f"{url} is not valid JSON ({err}); delete it to redo that run") from err


def _write_json(url: str, obj: Any) -> None:
    fsio.atomic_write(url, (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode())


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
    """Per-video probabilities of a run's best weights on each split (split role → predictions).

    Runs where the run's data is readable (a Ray task). The latest checkpoint of a run holds the best
    epoch's weights (`best_model` when a later epoch was saved after it, else `model`); the views are
    the run's test views. A split named twice (validation = test) is predicted once.
    """
    import torch

    from intint.config import loader_config
    from intint.eval import distributed
    from intint.loader import streams
    from intint.model import checkpoint

    cfg = TrainConfig.from_dict(config)
    state = checkpoint.load_state(checkpoint_url)
    num_classes = int(state.get("num_classes") or distributed.num_classes_of(cfg))
    model = distributed.build_model(cfg, num_classes)
    model.load_state_dict(state.get("best_model") or state["model"])
    device = torch.device("cuda" if cfg.use_gpu and torch.cuda.is_available() else "cpu")
    model.to(device)
    pathway = model.pathways[0]
    done: dict[str, SplitPredictions] = {}
    out: dict[str, SplitPredictions] = {}
    for role, split in splits.items():
        if split not in done:
            lcfg = loader_config(cfg, split, train=False)
            loader = streams.eval_loader(lcfg, 0, 1, num_clips=cfg.eval_num_clips, flip_double=cfg.eval_flip)
            local = distributed.predict(model, loader, device, bf16=cfg.bf16,
                                      prepare=lambda b, lc=lcfg: streams.to_device(b, device, lc))
            preds = distributed.merge([local], split)
            done[split] = SplitPredictions(preds.probs[pathway].astype(np.float32), preds.labels,
                                           np.asarray(preds.keys, dtype=np.str_))
        out[role] = done[split]
    return out


def latest_checkpoint_url(result: Any, cfg: TrainConfig) -> str:
    """The run folder URL of Ray's latest checkpoint (always retained, and it carries the best weights)."""
    from intint.train.loop import run_folder

    if result is None or result.checkpoint is None:
        raise RuntimeError(f"run {cfg.name}: Ray returned no checkpoint")
    return fsio.join(run_folder(cfg), os.path.basename(result.checkpoint.path.rstrip("/")))


def _remote_predict(cfg: TrainConfig) -> Callable[..., Any]:
    """`predict_checkpoint` as a Ray task holding one training worker's resources."""
    import ray

    return ray.remote(num_cpus=cfg.cpus_per_worker, num_gpus=1 if cfg.use_gpu else 0,
                      max_retries=1)(predict_checkpoint)


def execute(cfg: TrainConfig, splits: dict[str, str], num_classes: int, *,
            log: Callable[[str], None] = print) -> RunRecord:
    """Run one pathway to the end: skip it when `done.json` says it finished, else train (resuming any
    earlier attempt), predict both splits, save `predictions.npz` then `done.json`."""
    from intint.train import loop

    folder = loop.run_folder(cfg)
    pathway = cfg.pathways
    placement = None if pathway == "integrity" else cfg.intensity_definition
    done_url, plan_url = fsio.join(folder, DONE_FILE), fsio.join(folder, PLAN_FILE)
    done = _read_json(done_url)
    if done is not None:
        _check_same(done["config"], cfg, done_url)
        if not fsio.exists(fsio.join(folder, PREDICTIONS_FILE)):
            raise FileNotFoundError(f"{done_url} exists but {PREDICTIONS_FILE} is missing; delete done.json "
                                    "to redo the predictions")
        log(f"[ablate] {cfg.name}: finished earlier, reusing {folder}")
        return RunRecord(done["run_id"], pathway, placement, folder, False, done["metrics"], done["config"],
                         float(done.get("wall_s", 0.0)))
    plan = _read_json(plan_url)
    if plan is not None:
        _check_same(plan["config"], cfg, plan_url)
        log(f"[ablate] {cfg.name}: resuming the unfinished run in {folder}")
    else:
        _write_json(plan_url, {"run_id": cfg.name, "config": cfg.to_dict()})
        log(f"[ablate] {cfg.name}: training ({pathway}{'' if placement is None else ', ' + placement})")
    start = time.monotonic()
    result = loop.run(cfg)
    import ray

    ckpt = latest_checkpoint_url(result, cfg)
    preds = ray.get(_remote_predict(cfg).remote(cfg.to_dict(), ckpt, splits))
    results_table.save_predictions(fsio.join(folder, PREDICTIONS_FILE), preds)
    metrics = {role: results_table.pathway_summary(p, num_classes) for role, p in preds.items()}
    wall = time.monotonic() - start
    _write_json(done_url, {"run_id": cfg.name, "pathway": pathway, "placement": placement,
                           "config": cfg.to_dict(), "checkpoint": ckpt, "splits": splits, "metrics": metrics,
                           "wall_s": wall})
    log(f"[ablate] {cfg.name}: done in {wall:.0f} s; test top-1 {metrics['test']['top1']:.4f}")
    return RunRecord(cfg.name, pathway, placement, folder, True, metrics, cfg.to_dict(), wall)


# ---------------------------------------------------------------------------------------- scheduling


def concurrent_slots(cfg: TrainConfig, resources: Mapping[str, float], limit: int | None = None) -> int:
    """How many runs of `cfg`'s size fit in the cluster at once (at least 1, at most `limit`).

    One run holds `num_workers × cpus_per_worker` CPUs (and `num_workers` GPUs on GPU); the Train V2
    controller holds none (notes §1b). The prediction task after each run borrows one worker's share.
    """
    slots = int(resources.get("CPU", 0) // (cfg.num_workers * cfg.cpus_per_worker))
    if cfg.use_gpu:
        slots = min(slots, int(resources.get("GPU", 0) // cfg.num_workers))
    slots = max(1, slots)
    return slots if limit is None else min(slots, limit)


class Sweep:
    """Schedules the runs on a thread pool: Integrity and the placements first (J, B, A early), then
    JBA_weighted once J, B, A and Integrity are done and its weights are known."""

    def __init__(self, ab: AblationConfig, num_classes: int, slots: int,
                 log: Callable[[str], None] = print) -> None:
        self.ab, self.num_classes, self.slots, self.log = ab, num_classes, slots, log
        self.records: dict[str, RunRecord] = {}
        self.failures: dict[str, BaseException] = {}
        self.jba: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def _order(self) -> list[str | None]:
        first = [g for g in JBA_SOURCES if g in self.ab.placements]
        rest = [p for p in self.ab.placements if p not in first and p != "JBA_weighted"]
        return [None, *first, *rest]

    def _submit(self, pool: ThreadPoolExecutor, placement: str | None,
                weights: Mapping[str, float] | None = None) -> Future:
        cfg = run_config(self.ab, placement, weights)
        return pool.submit(execute, cfg, self.ab.splits, self.num_classes, log=self.log)

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
            import ray

            self.log("[ablate] interrupted: stopping Ray; rerun the same command to continue the sweep")
            ray.shutdown()
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
                    self.log(f"[ablate] {name} FAILED: {type(err).__name__}: {err}")
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
                self.log("[ablate] JBA weights from validation: "
                         + ", ".join(f"{g} {w:.4f}" for g, w in self.jba["weights"].items()))
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
    _write_json(urls["json"], table)
    fsio.atomic_write(urls["markdown"], results_table.to_markdown(table).encode())
    if table["rows"]:
        results_table.plot_table(table, urls["png"])
    return urls


def run(ab: AblationConfig, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or finish) the sweep and write its table; returns the table dict.

    Starts a private local Ray unless one is initialised or `RAY_ADDRESS` names a cluster. Raises
    `RuntimeError` listing the failed runs after writing the table of the others.
    """
    from intint.eval.distributed import num_classes_of
    from intint.train import loop

    start = time.monotonic()
    # Without auto-connect, a run thread that touches Ray after a Ctrl-C shutdown fails instead of quietly
    # starting a fresh local Ray (effective when Ray is first imported here, i.e. from the command line).
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
    base = loop.resolve(ab.base)
    ab = dataclasses.replace(ab, base=base)
    needs = base.num_workers * base.cpus_per_worker
    loop.init_ray(num_cpus=ab.cpus or max(os.cpu_count() or 1, needs), env=loop.worker_env())
    import ray

    slots = concurrent_slots(base, ray.cluster_resources(), ab.concurrency)
    num_classes = num_classes_of(base)
    log(f"[ablate] sweep {ab.sweep_folder}: Integrity + {len(ab.placements)} placements "
        f"({', '.join(ab.placements)}), {slots} run(s) at a time")
    sweep = Sweep(ab, num_classes, slots, log=log)
    sweep.run()
    if INTEGRITY_RUN not in sweep.records:
        raise RuntimeError("the Integrity run failed, so no row can be fused: "
                           f"{sweep.failures[INTEGRITY_RUN]}")
    table = build_table(ab, sweep, time.monotonic() - start)
    urls = write_outputs(table, ab.sweep_folder)
    log(table.render_text(table))
    log(f"[ablate] wrote {', '.join(urls.values())} ({table['wall_s']:.0f} s)")
    if sweep.failures:
        raise RuntimeError("failed runs: " + "; ".join(f"{n}: {e}" for n, e in table["failed"].items()))
    return table


def parse_placements(values: Sequence[str]) -> tuple[str, ...]:
    """`--placements` values: names, comma lists, `paper` (the Table IV rows), `singles`, `all`."""
    out: list[str] = []
    for value in values:
        for name in (v.strip() for v in value.split(",")):
            if not name:
                continue
            expanded = {"paper": DEFAULT_PLACEMENTS, "singles": intensity.SINGLE_DEFINITIONS,
                        "all": results_table.PLACEMENTS}.get(name, (name,))
            out.extend(p for p in expanded if p not in out)
    return tuple(out)


def parse_weights(text: str | None) -> dict[str, float] | None:
    """`--jba-weights J=0.3,B=0.3,A=0.4` → {"J": 0.3, ...}; None/empty → None."""
    if not text:
        return None
    weights = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--jba-weights expects J=..,B=..,A=.., got {text!r}")
        try:
            weights[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--jba-weights: {key.strip()} is not a number ({value!r})") from None
    results_table.normalised_fixed_weights(weights)
    return weights
