"""The Ray Train worker loop: one rank's share of a two-pathway training run.

One job trains both pathways on one stream of videos: every batch carries the Integrity and the
Intensity clip of the same videos (half the I/O of two runs). Each pathway keeps its own backbone,
head, loss, SGD state, LR schedule and gradient clipping, so the result equals two separate runs
(docs/method.md §6.2-6.3) — the pathways only share the data step.

Every rank streams its share of the epoch through `intint.loader.streams`, calls `ray.train.report` once
per epoch (a barrier) and rank 0 attaches the checkpoint; with `checkpoint_every_batches` also every N steps
mid-epoch, the loader's position included. A restarted worker group resumes from the last checkpoint
(`resume`), a mid-epoch one on any number of workers: the loader splits the samples the epoch has not
trained on over the new ranks, so the epoch still sees every video once. A validation set
(`data.validation_split`: a val split, or videos held out of train) is evaluated every epoch on every
rank's share. At the end the weights `select` names are tested with the test views: the last epoch's
(the reference's protocol), or the best epoch's by fused validation top-1, which only a validation set
disjoint from the test split may pick (`intint.train.protocol`). Rank 0 writes `results.json` into the
run folder, with a `tested` record of the epoch, the weights and the split that chose them. Every
checkpoint holds its own epoch's weights and, once a later epoch was saved, the best epoch's too
(`best_model`), so the newest one serves both.
Starting Ray and the `TorchTrainer` that runs this loop is `intint.train.launch`.

The worker body is a sequence of named steps: `build_worker` (model, loaders, optimisers), `resume`
(checkpoint or pretrained weights), `start_training` (DDP wrapper, validation loader, tracking),
`train_epoch`, `validate_and_report` and `final_test`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from intint.config import TrainConfig, loader_config
from intint.eval.distributed import (
    all_gather,
    autocast,
    evaluate_split,
    evaluate_test,
    flat_metrics,
    model_inputs,
    selection_score,
)
from intint.eval.metrics import write_results
from intint.eval.models import build_model, load_pretrained, num_classes_of
from intint.model import checkpoint
from intint.model.slowonly import TwoPathwayModel, to_channels_last
from intint.store import fsio
from intint.train.determinism import make_reproducible
from intint.train.key_record import append_keys, key_record_path
from intint.train.optim import build_optimizer, build_scheduler, restore_scheduler
from intint.train.protocol import Progress, protocol_line, record_tested
from intint.train.tracking import ProgressMeter, Tracker, format_progress

log = logging.getLogger(__name__)

SCORE_ATTRIBUTE = "fused_top1"  # the validation score an epoch reports (one pathway: its top-1)
FAILURE_MARKER = "injected_failure.json"  # written by the fault injection so it fires once per run


class InjectedFailure(RuntimeError):
    """The fault test's deliberate worker crash (`--inject-failure-at-epoch` / `INTINT_INJECT_FAILURE`)."""


def run_folder(cfg: TrainConfig) -> str:
    """`storage_path/name`: Ray's run folder, holding checkpoints, results.json and the W&B folder."""
    return fsio.join(cfg.storage_path, cfg.name)


def results_url(cfg: TrainConfig) -> str:
    return fsio.join(run_folder(cfg), checkpoint.RESULTS_FILE)


def wandb_dir(cfg: TrainConfig) -> str:
    """Local folder for W&B files: the run folder when storage is local, else WANDB_DIR or ~/.cache."""
    if fsio.is_local(cfg.storage_path):
        return run_folder(cfg)
    return os.environ.get("WANDB_DIR") or os.path.expanduser(f"~/.cache/intint/wandb/{cfg.name}")


def train_step(net: torch.nn.Module, model: TwoPathwayModel, batch: Mapping[str, Any],
               optimizers: Mapping[str, torch.optim.Optimizer], schedulers: Mapping[str, Any],
               cfg: TrainConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """One SGD step of every pathway; clipping is per pathway, as in two separate runs."""
    inputs = model_inputs(batch, model.pathways, device, channels_last=device.type == "cuda")
    labels = torch.as_tensor(batch["label"]).to(device, non_blocking=True)
    with autocast(device, cfg.bf16):
        logits = net(inputs)
    losses = TwoPathwayModel.losses(logits, labels)
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    for name, opt in optimizers.items():
        if cfg.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.recognizer(name).parameters(), cfg.optim.grad_clip)
        opt.step()
        schedulers[name].step()
    return losses


def maybe_inject_failure(cfg: TrainConfig, epoch: int, pass_in_epoch: int, step: int, steps_per_pass: int,
                         rank: int, world_size: int) -> None:
    """Fault test: the last rank raises once, halfway through the first pass of the chosen epoch.

    A marker file in the run folder makes it fire once per run, so the restarted worker group (resumed
    from the last checkpoint) trains through.
    """
    if (cfg.inject_failure_at_epoch != epoch or rank != world_size - 1 or pass_in_epoch != 0
            or step != max(steps_per_pass // 2, 1) - 1):
        return
    marker = fsio.join(run_folder(cfg), FAILURE_MARKER)
    if fsio.exists(marker):
        return
    fsio.atomic_write(marker, json.dumps({"epoch": epoch, "step": step, "rank": rank}).encode())
    raise InjectedFailure(f"injected failure at epoch {epoch}, step {step + 1}/{steps_per_pass} "
                          f"on rank {rank}")


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _current_lr(optimizers: Mapping[str, torch.optim.Optimizer]) -> float:
    return next(iter(optimizers.values())).param_groups[0]["lr"]


@dataclass
class Worker:
    """Everything one rank holds while it trains; the steps below fill it in and advance `progress`."""

    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    num_classes: int
    model: TwoPathwayModel
    lr: float
    train_cfg: Any  # intint.loader.config.LoaderConfig of the train split
    train_loader: Any
    steps_per_pass: int
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any]
    progress: Progress = field(default_factory=Progress)
    best_state: dict[str, torch.Tensor] | None = None
    step_fn: Any = None  # the DDP-wrapped (optionally compiled) model the train step calls
    val_loader: Any = None
    tracker: Tracker = field(default_factory=Tracker)
    meter: ProgressMeter | None = None
    key_record: str | None = None  # this rank's record of its batches' keys (`key_record`), if any


def build_worker(cfg: TrainConfig, rank: int, world: int, device: torch.device) -> Worker:
    """The model (same seed on every rank), the train loader of this rank, one SGD + schedule per pathway."""
    from intint.loader import streams

    torch.manual_seed(cfg.seed)  # same init everywhere (DDP also broadcasts rank 0's weights)
    num_classes = num_classes_of(cfg)
    model = build_model(cfg, num_classes).to(device)
    if device.type == "cuda":
        to_channels_last(model)
    train_cfg = loader_config(cfg, cfg.data.train_split, train=True)
    train_loader = streams.train_loader(train_cfg, rank, world)
    steps_per_pass = len(train_loader)
    if steps_per_pass < 1:
        raise ValueError(f"split {cfg.data.train_split!r} of {cfg.shards} gives no batch of {cfg.batch_size} "
                         f"per rank with {world} ranks")
    lr = cfg.optim.scaled_lr(cfg.batch_size * world)
    optimizers = {p: build_optimizer(model.recognizer(p).parameters(), cfg.optim, lr) for p in model.pathways}
    schedulers = {p: build_scheduler(optimizers[p], cfg.optim, lr, steps_per_pass * cfg.repeat, cfg.epochs)
                  for p in model.pathways}
    return Worker(cfg, rank, world, device, num_classes, model, lr, train_cfg, train_loader, steps_per_pass,
                  optimizers, schedulers)


def resume(w: Worker, restored: Any) -> None:
    """Continue from Ray's checkpoint (`restored`, None on a fresh run), else load pretrained weights."""
    if restored is not None:
        with restored.as_directory() as folder:
            saved = checkpoint.load_state(folder)
        w.model.load_state_dict(saved["model"])
        for p in w.model.pathways:
            w.optimizers[p].load_state_dict(saved["optimizers"][p])
            restore_scheduler(w.schedulers[p], saved["schedulers"][p])  # this run's schedule (epochs)
        w.progress = Progress(**saved["progress"])
        w.progress.resumes += 1
        w.best_state = saved.get("best_model") or (saved["model"] if w.progress.best_epoch >= 0 else None)
        if saved.get("mid_epoch"):  # the epoch goes on where the checkpoint left it, on any number of ranks
            w.train_loader.load_state_dict(saved["loader"])
        if w.rank == 0:
            log.info("resumed from the epoch %s checkpoint%s (restart %d)", saved["epoch"],
                     " (mid-epoch)" if saved.get("mid_epoch") else "", w.progress.resumes)
    elif w.cfg.pretrained:
        load_pretrained(w.model, w.cfg.pretrained)


def start_training(w: Worker) -> None:
    """Per-rank dropout seed, the DDP wrapper, the validation loader, W&B (rank 0) and the step meter."""
    import ray.train.torch

    from intint.loader import streams

    cfg = w.cfg
    torch.manual_seed(cfg.seed * 1_000_003 + w.rank * 7919 + w.progress.next_epoch)  # dropout: per rank
    # BN statistics stay per rank as in the reference (broadcast_buffers=False, docs/method.md §6.3); weights
    # start equal anyway (same seed), so syncing buffers once at init changes nothing.
    net = ray.train.torch.prepare_model(
        w.model, move_to_device=False,
        parallel_strategy_kwargs={"forward_sync_buffers": False, "find_unused_parameters": False})
    w.step_fn = torch.compile(net) if cfg.compile else net
    if cfg.data.validation_split is not None:
        val_cfg = loader_config(cfg, cfg.data.validation_split, train=False)
        w.val_loader = streams.eval_loader(val_cfg, w.rank, w.world, num_clips=1, flip_double=False)
    global_batch = cfg.batch_size * w.world
    w.tracker = Tracker.start(rank=w.rank, requested_mode=cfg.wandb, project=cfg.wandb_project, name=cfg.name,
                              local_dir=wandb_dir(cfg), group=cfg.wandb_group, run_url=run_folder(cfg),
                              config={**cfg.to_dict(), "lr_used": w.lr, "global_batch": global_batch,
                                      "world_size": w.world, "num_classes": w.num_classes})
    if w.rank == 0:
        log.info("%d workers x batch %d = global batch %d; lr %s x %d/%d = %.6g; %d steps/pass x %d "
                 "passes/epoch; pathways %s", w.world, cfg.batch_size, global_batch, cfg.optim.lr,
                 global_batch, cfg.optim.base_batch, w.lr, w.steps_per_pass, cfg.repeat, w.model.pathways)
        log.info("%s", protocol_line(cfg, w.device.type))
    w.meter = ProgressMeter(cfg.log_every, w.world, w.device)
    w.key_record = key_record_path(run_folder(cfg), w.rank, w.progress.resumes)


def passes_left(w: Worker, epoch: int) -> list[int]:
    """The loader passes of `epoch` still to train (after a mid-epoch resume: from the checkpoint's on)."""
    loader, first = w.train_loader, epoch * w.cfg.repeat
    done = loader.epoch - first + (1 if loader.remaining_batches == 0 and len(loader) else 0)
    return list(range(max(0, done), w.cfg.repeat))


def train_epoch(w: Worker, epoch: int) -> tuple[dict[str, float], int]:
    """`repeat` passes over this rank's share of the epoch (after a mid-epoch resume: the rest); returns
    the epoch's figures and skipped samples."""
    from intint.loader.device import to_device

    cfg, meter = w.cfg, w.meter
    w.model.train()
    meter.start_epoch()
    skipped, subs = 0, passes_left(w, epoch)
    for sub in subs:
        w.train_loader.set_epoch(epoch * cfg.repeat + sub)
        before = len(w.train_loader) - w.train_loader.remaining_batches  # a resumed pass's share done
        for step, batch in enumerate(w.train_loader):
            meter.batch_arrived()
            skipped += int(batch.get("skipped", 0))
            batch = to_device(batch, w.device, w.train_cfg)
            losses = train_step(w.step_fn, w.model, batch, w.optimizers, w.schedulers, cfg, w.device)
            w.progress.global_step += 1
            append_keys(w.key_record, epoch=epoch, pass_=sub, rank=w.rank, world=w.world,
                        step=w.progress.global_step, attempt=w.progress.resumes, keys=list(batch["key"]))
            if sub != subs[-1] or w.train_loader.remaining_batches:  # the epoch's own checkpoint follows
                maybe_checkpoint_mid_epoch(w, epoch)
            maybe_inject_failure(cfg, epoch, sub, step, w.steps_per_pass, w.rank, w.world)
            figures = meter.step_done(len(batch["key"]), losses)
            if figures is not None and w.rank == 0:
                lr = _current_lr(w.optimizers)
                log.info("%s", format_progress(epoch, sub * w.steps_per_pass + before + step + 1,
                                               w.steps_per_pass * cfg.repeat, figures, lr))
                w.tracker.log({**figures, "train/lr": lr}, w.progress.global_step)
    return meter.epoch_figures(), skipped


def maybe_checkpoint_mid_epoch(w: Worker, epoch: int) -> None:
    """Every `checkpoint_every_batches` steps (but at an epoch's end, which has its own), a checkpoint of the
    weights, optimisers and loader position, from which a run on any number of workers continues the same
    epoch (`resume`); the weights are not an epoch's, so the best epoch's always go beside them. Every rank
    reports (a barrier): the steps are equal on all ranks."""
    if (every := w.cfg.checkpoint_every_batches) is not None and every < 1:
        raise ValueError(f"checkpoint_every_batches must be >= 1 or None, got {every}")
    if every is None or w.progress.global_step % every:
        return
    state = {**checkpoint_state(w, epoch), "mid_epoch": {"batches_left": w.train_loader.remaining_batches},
             **({"best_model": w.best_state} if w.best_state is not None else {})}
    _report({"epoch": epoch, "mid_epoch": True, "global_step": w.progress.global_step}, state, w.cfg, w.rank)
    if w.rank == 0:
        log.info("epoch %d: mid-epoch checkpoint at step %d", epoch, w.progress.global_step)


def checkpoint_state(w: Worker, epoch: int) -> dict[str, Any]:
    """A checkpoint's `state.pt`: weights, optimisers, schedules, the loader's position, progress."""
    return {"epoch": epoch, "model": w.model.state_dict(), "num_classes": w.num_classes, "lr_used": w.lr,
            "optimizers": {p: o.state_dict() for p, o in w.optimizers.items()},
            "schedulers": {p: s.state_dict() for p, s in w.schedulers.items()},
            "loader": w.train_loader.state_dict(), "progress": dataclasses.asdict(w.progress)}


def validate(w: Worker, epoch: int) -> dict[str, Any]:
    """Evaluate the validation set on every rank's share (none: {}) and keep the best weights when it may
    select them (disjoint from the test split); returns the epoch's validation metrics for the report."""
    cfg, progress = w.cfg, w.progress
    if w.val_loader is None:
        return {}
    val = evaluate_split(w.model, cfg, cfg.data.validation_split, rank=w.rank, world_size=w.world,
                         device=w.device, num_classes=w.num_classes, num_clips=1, flip=False,
                         loader=w.val_loader)
    score = selection_score(val)
    if cfg.data.selection_split is not None and progress.observe(epoch, score):
        w.best_state = _cpu_state(w.model)
    if w.rank == 0:
        top1s = ", ".join(f"{k}={v:.4f}" for k, v in flat_metrics(val, "").items() if "top1" in k)
        log.info("epoch %d: validation (%s) fused/selection top1 %.4f (%s)", epoch, cfg.data.validation_split,
                 score, top1s)
    return {SCORE_ATTRIBUTE: score, **flat_metrics(val, "val_"),
            "val_num_samples": val["meta"]["num_samples"]}


def validate_and_report(w: Worker, epoch: int, epoch_figures: dict[str, float], skipped: int) -> None:
    """Validate (when the run has a validation set), log the epoch and report it to Ray with the checkpoint
    (a barrier on every rank)."""
    cfg, progress = w.cfg, w.progress
    total_skipped = sum(all_gather(skipped))
    val = validate(w, epoch)
    progress.next_epoch = epoch + 1
    metrics = {"epoch": epoch, **val, **{k.replace("/", "_"): v for k, v in epoch_figures.items()},
               "skipped": total_skipped, "lr": _current_lr(w.optimizers), "global_step": progress.global_step,
               "best_epoch": progress.best_epoch, "resumes": progress.resumes}
    if w.rank == 0:
        log.info("epoch %d done: %.1f samples/s, data wait %s, skipped %d", epoch,
                 epoch_figures["train/samples_per_s"], f"{epoch_figures['train/data_wait_share']:.0%}",
                 total_skipped)
        tracked = {f"val/{k.removeprefix('val_')}": v for k, v in val.items() if k.startswith("val_")}
        if SCORE_ATTRIBUTE in val:
            tracked["val/selection_top1"] = val[SCORE_ATTRIBUTE]
        w.tracker.log({**epoch_figures, **tracked, "data/skipped_samples": total_skipped, "epoch": epoch},
                      progress.global_step)
    state = checkpoint_state(w, epoch)
    if w.best_state is not None and progress.best_epoch != epoch:
        state["best_model"] = w.best_state
    _report(metrics, state, cfg, w.rank)
    w.tracker.save_files()  # W&B's files beside the checkpoint (remote storage)


def tested_weights(w: Worker) -> dict[str, Any]:
    """Load the weights `select` names into the model (the last epoch's are there already: trained just
    now, or restored from the last checkpoint); returns their `tested` record (`protocol.record_tested`)."""
    tested = record_tested(w.cfg, w.progress)
    if tested["weights"] == "best":
        if w.best_state is None:
            raise RuntimeError(f"run {w.cfg.name}: select=best, but no checkpoint holds the best weights")
        w.model.load_state_dict(w.best_state)
    return tested


def final_test(w: Worker) -> None:
    """Test the weights `select` names with the test views; rank 0 writes results.json into the run folder."""
    cfg, progress = w.cfg, w.progress
    tested = tested_weights(w)
    test = evaluate_test(w.model, cfg, rank=w.rank, world_size=w.world, device=w.device,
                         num_classes=w.num_classes, results_url=results_url(cfg))
    test["tested"] = tested
    test["meta"].update(epochs=cfg.epochs, resumes=progress.resumes, run=cfg.name, precision=cfg.precision)
    if w.rank == 0:
        write_results(test, results_url(cfg))
        log.info("test (%s, %s weights of epoch %d): %s", cfg.data.test_split, tested["weights"],
                 tested["epoch"], ", ".join(f"{k}={v:.4f}" for k, v in flat_metrics(test, "").items()))
        w.tracker.summary({**flat_metrics(test, "test/"), "tested_epoch": tested["epoch"],
                           "tested_weights": tested["weights"]})


def _report(metrics: dict[str, Any], state: dict[str, Any], cfg: TrainConfig, rank: int) -> None:
    """Every rank reports (a barrier); rank 0 attaches the checkpoint folder it just wrote."""
    import ray.train

    with tempfile.TemporaryDirectory(prefix="intint-ckpt-") as folder:
        ckpt = None
        if rank == 0:
            checkpoint.save(folder, state, cfg.to_dict())
            ckpt = ray.train.Checkpoint.from_directory(folder)
        ray.train.report(metrics, checkpoint=ckpt)


def train_loop_per_worker(config_dict: dict[str, Any]) -> None:
    """Ray Train worker body: build, restore, train `epochs`, validate and checkpoint each, test the weights
    `select` names."""
    import ray.train
    import ray.train.torch

    cfg = TrainConfig.from_dict(config_dict)
    ctx = ray.train.get_context()
    make_reproducible(cfg, ctx.get_world_rank(), ray.train.torch.get_device())
    w = build_worker(cfg, ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device())
    resume(w, ray.train.get_checkpoint())
    start_training(w)
    try:
        for epoch in range(w.progress.next_epoch, cfg.epochs):
            epoch_figures, skipped = train_epoch(w, epoch)
            validate_and_report(w, epoch, epoch_figures, skipped)
        final_test(w)
    finally:
        w.tracker.finish()
