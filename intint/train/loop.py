"""Two-pathway training on Ray Train: the per-worker loop and the launcher.

One job trains both pathways on one stream of videos: every batch carries the Integrity and the
Intensity clip of the same videos (half the I/O of two runs). Each pathway keeps its own backbone,
head, loss, SGD state, LR schedule and gradient clipping, so the result equals two separate runs
(spec §6.2-6.3) — the pathways only share the data step.

Ray layout (notes §1b-§6): a `TorchTrainer` with one worker per GPU (gloo on CPU), each worker streaming
its share of the shards through `intint.data`; every rank calls `ray.train.report` once per epoch (it is
a barrier) and rank 0 attaches the checkpoint. A crashed worker group restarts from the last checkpoint
(`FailureConfig`), and re-running with the same name and storage path resumes the run (V2 auto-resume).
Validation runs every epoch on every rank's share; at the end the best weights (by fused validation
top-1) are tested with the test views and `results.json` is written to the run folder and into the best
checkpoint's folder.

Ray is imported lazily, after `ray_env_defaults()`, so the environment defaults that keep Ray on
loopback and stop its print patch are in place before Ray reads them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from intint.config import TrainConfig, loader_config, with_env_overrides
from intint.eval.distributed import (
    all_gather,
    autocast,
    build_model,
    evaluate_split,
    flat_metrics,
    load_pretrained,
    model_inputs,
    num_classes_of,
    selection_score,
)
from intint.eval.metrics import write_results
from intint.model import checkpoint
from intint.model.slowonly import TwoPathwayModel, to_channels_last
from intint.store import fsio
from intint.train.optim import build_optimizer, build_scheduler
from intint.train.tracking import ProgressMeter, Tracker, format_progress

if TYPE_CHECKING:
    from ray.train import Result
    from ray.train.torch import TorchTrainer

SCORE_ATTRIBUTE = "fused_top1"  # checkpoints are ranked by fused validation top-1 (one pathway: its top-1)
FAILURE_MARKER = "injected_failure.json"  # written by the fault injection so it fires once per run
WORKER_ENV_PREFIXES = ("WANDB_",)  # environment forwarded to Ray workers (W&B key, mode, host)


class InjectedFailure(RuntimeError):
    """The fault test's deliberate worker crash (`--inject-failure-at-epoch` / `INTINT_INJECT_FAILURE`)."""


def ray_env_defaults() -> None:
    """Defaults Ray must see before import: loopback node IP, no duplicated worker prints (notes §1b)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")


def run_folder(cfg: TrainConfig) -> str:
    """`storage_path/name`: Ray's run folder, holding checkpoints, results.json and the W&B folder."""
    return fsio.join(cfg.storage_path, cfg.name)


def results_url(cfg: TrainConfig) -> str:
    return fsio.join(run_folder(cfg), checkpoint.RESULTS_FILE)


def _absolute(url: str) -> str:
    """Local paths made absolute (Ray workers do not share the driver's working directory); URLs kept."""
    return url if "://" in url else os.path.abspath(os.path.expanduser(url))


def resolve(cfg: TrainConfig) -> TrainConfig:
    """The config as the workers get it: env overrides applied, local paths absolute, shards required."""
    cfg = with_env_overrides(cfg)
    if not cfg.shards:
        raise ValueError("--shards is required: the shard-set URL built by `intint build-shards`")
    return dataclasses.replace(cfg, shards=_absolute(cfg.shards), storage_path=_absolute(cfg.storage_path),
                               pretrained=_absolute(cfg.pretrained) if cfg.pretrained else None)


def wandb_dir(cfg: TrainConfig) -> str:
    """Local folder for W&B files: the run folder when storage is local, else WANDB_DIR or ~/.cache."""
    if fsio.is_local(cfg.storage_path):
        return run_folder(cfg)
    return os.environ.get("WANDB_DIR") or os.path.expanduser(f"~/.cache/intint/wandb/{cfg.name}")


# ---------------------------------------------------------------------------------------------- worker


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint so a restart continues the epoch count and best."""

    next_epoch: int = 0
    global_step: int = 0
    best_epoch: int = -1
    best_score: float = -1.0
    resumes: int = 0


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


def quiet_ray_report_logs() -> None:
    """Ray Train V2 logs, at INFO from every worker, each report with its whole metrics dict and each
    persisted checkpoint: dozens of long lines per run that bury intint's one-line epoch summaries.
    Those two loggers go to WARNING (their module paths are Ray internals: a Ray without them is left
    as it is)."""
    import logging

    try:
        from ray.train.v2._internal.execution import context, storage
    except ImportError:
        return
    for name in (context.__file__, storage.__name__):  # context names its logger by its file path
        logging.getLogger(name).setLevel(logging.WARNING)


def train_loop_per_worker(config_dict: dict[str, Any]) -> None:
    """Ray Train worker body: build, restore, train `epochs`, validate and checkpoint each, test the best."""
    import ray.train
    import ray.train.torch

    from intint.loader import streams

    quiet_ray_report_logs()

    cfg = TrainConfig.from_dict(config_dict)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
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

    progress, best_state = Progress(), None
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            saved = checkpoint.load_state(folder)
        model.load_state_dict(saved["model"])
        for p in model.pathways:
            optimizers[p].load_state_dict(saved["optimizers"][p])
            schedulers[p].load_state_dict(saved["schedulers"][p])
        progress = Progress(**saved["progress"])
        progress.resumes += 1
        best_state = saved.get("best_model") or saved["model"]
        if rank == 0:
            print(f"[intint] resumed from the epoch {saved['epoch']} checkpoint (restart {progress.resumes})",
                  flush=True)
    elif cfg.pretrained:
        load_pretrained(model, cfg.pretrained)
    torch.manual_seed(cfg.seed * 1_000_003 + rank * 7919 + progress.next_epoch)  # dropout differs per rank

    # BN statistics stay per rank as in the reference (broadcast_buffers=False, spec §6.3); weights start
    # equal anyway (same seed), so syncing buffers once at init changes nothing.
    net = ray.train.torch.prepare_model(
        model, move_to_device=False,
        parallel_strategy_kwargs={"forward_sync_buffers": False, "find_unused_parameters": False})
    step_fn = torch.compile(net) if cfg.compile else net
    val_cfg = loader_config(cfg, cfg.data.val_split, train=False)
    val_loader = streams.eval_loader(val_cfg, rank, world, num_clips=1, flip_double=False)

    tracker = Tracker.start(rank=rank, requested_mode=cfg.wandb, project=cfg.wandb_project, name=cfg.name,
                            local_dir=wandb_dir(cfg), group=cfg.wandb_group,
                            config={**cfg.to_dict(), "lr_used": lr, "global_batch": cfg.batch_size * world,
                                    "world_size": world, "num_classes": num_classes})
    if rank == 0:
        print(f"[intint] {world} workers x batch {cfg.batch_size} = global batch {cfg.batch_size * world}; "
              f"lr {cfg.optim.lr} x {cfg.batch_size * world}/{cfg.optim.base_batch} = {lr:.6g}; "
              f"{steps_per_pass} steps/pass x {cfg.repeat} passes/epoch; pathways {model.pathways}",
              flush=True)
    meter = ProgressMeter(cfg.log_every, world, device)
    try:
        for epoch in range(progress.next_epoch, cfg.epochs):
            model.train()
            meter.start_epoch()
            skipped = 0
            for sub in range(cfg.repeat):
                train_loader.set_epoch(epoch * cfg.repeat + sub)
                for step, batch in enumerate(train_loader):
                    meter.batch_arrived()
                    skipped += int(batch.get("skipped", 0))
                    batch = streams.to_device(batch, device, train_cfg)
                    losses = train_step(step_fn, model, batch, optimizers, schedulers, cfg, device)
                    progress.global_step += 1
                    maybe_inject_failure(cfg, epoch, sub, step, steps_per_pass, rank, world)
                    figures = meter.step_done(len(batch["key"]), losses)
                    if figures is not None and rank == 0:
                        current_lr = next(iter(optimizers.values())).param_groups[0]["lr"]
                        print(format_progress(epoch, sub * steps_per_pass + step + 1,
                                              steps_per_pass * cfg.repeat, figures, current_lr), flush=True)
                        tracker.log({**figures, "train/lr": current_lr}, progress.global_step)
            epoch_figures = meter.epoch_figures()
            total_skipped = sum(all_gather(skipped))

            val = evaluate_split(model, cfg, cfg.data.val_split, rank=rank, world_size=world, device=device,
                                 num_classes=num_classes, num_clips=1, flip=False, loader=val_loader)
            score = selection_score(val)
            if score >= progress.best_score:  # ties go to the later epoch, as Ray ranks them
                progress.best_score, progress.best_epoch = score, epoch
                best_state = _cpu_state(model)
            progress.next_epoch = epoch + 1
            lr_now = next(iter(optimizers.values())).param_groups[0]["lr"]
            metrics = {"epoch": epoch, SCORE_ATTRIBUTE: score, **flat_metrics(val, "val_"),
                       **{k.replace("/", "_"): v for k, v in epoch_figures.items()},
                       "skipped": total_skipped, "lr": lr_now, "global_step": progress.global_step,
                       "best_epoch": progress.best_epoch, "resumes": progress.resumes}
            if rank == 0:
                top1s = ", ".join(f"{k}={v:.4f}" for k, v in flat_metrics(val, "").items() if "top1" in k)
                print(f"[intint] epoch {epoch} done: val fused/selection top1 {score:.4f} ({top1s}) "
                      f"{epoch_figures['train/samples_per_s']:.1f} samples/s, "
                      f"data wait {epoch_figures['train/data_wait_share']:.0%}, skipped {total_skipped}",
                      flush=True)
                tracker.log({**epoch_figures, **flat_metrics(val, "val/"), "val/selection_top1": score,
                             "data/skipped_samples": total_skipped, "epoch": epoch}, progress.global_step)
            state = {"epoch": epoch, "model": model.state_dict(), "num_classes": num_classes, "lr_used": lr,
                     "optimizers": {p: o.state_dict() for p, o in optimizers.items()},
                     "schedulers": {p: s.state_dict() for p, s in schedulers.items()},
                     "loader": train_loader.state_dict(), "progress": dataclasses.asdict(progress)}
            if progress.best_epoch != epoch:
                state["best_model"] = best_state
            _report(metrics, state, cfg, rank)

        if best_state is None:
            raise RuntimeError(f"run {cfg.name}: no epoch was trained and no checkpoint holds weights")
        model.load_state_dict(best_state)
        test = evaluate_split(model, cfg, cfg.data.test_split, rank=rank, world_size=world, device=device,
                              num_classes=num_classes, num_clips=cfg.eval_num_clips, flip=cfg.eval_flip)
        test["meta"].update(best_epoch=progress.best_epoch, epochs=cfg.epochs, resumes=progress.resumes,
                            run=cfg.name)
        if rank == 0:
            write_results(test, results_url(cfg))
            print(f"[intint] test ({cfg.data.test_split}, best epoch {progress.best_epoch}): "
                  + ", ".join(f"{k}={v:.4f}" for k, v in flat_metrics(test, "").items()), flush=True)
            tracker.summary({**flat_metrics(test, "test/"), "best_epoch": progress.best_epoch})
    finally:
        tracker.finish()


def _report(metrics: dict[str, Any], state: dict[str, Any], cfg: TrainConfig, rank: int) -> None:
    """Every rank reports (a barrier); rank 0 attaches the checkpoint folder it just wrote."""
    import ray.train

    with tempfile.TemporaryDirectory(prefix="intint-ckpt-") as folder:
        ckpt = None
        if rank == 0:
            checkpoint.save(folder, state, cfg.to_dict())
            ckpt = ray.train.Checkpoint.from_directory(folder)
        ray.train.report(metrics, checkpoint=ckpt)


# ---------------------------------------------------------------------------------------------- driver


def worker_env() -> dict[str, str]:
    """W&B settings of the launching shell, for the Ray workers' runtime_env."""
    return {k: v for k, v in os.environ.items() if k.startswith(WORKER_ENV_PREFIXES)}


def init_ray(num_cpus: int | None = None, env: Mapping[str, str] | None = None) -> None:
    """Connect to the cluster inside a Ray job (RAY_ADDRESS set), else start a private local instance.

    `address="local"` keeps a local run from attaching to a `ray start` head that happens to be up
    (which would reject `num_cpus`, notes §5). Inside a job, environment variables the job's own
    runtime_env already sets are not repeated (Ray refuses conflicting keys).
    """
    ray_env_defaults()
    import ray

    if ray.is_initialized():
        return
    env = dict(env or {})
    if os.environ.get("RAY_ADDRESS"):
        job_env = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("runtime_env") or {}
        for key in job_env.get("env_vars") or {}:
            env.pop(key, None)
        ray.init(runtime_env={"env_vars": env} if env else None)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 runtime_env={"env_vars": env} if env else None)


def publish_results(result: Result, cfg: TrainConfig) -> str:
    """Copy the run folder's results.json into the best checkpoint's folder; returns the run-folder URL.

    The best checkpoint is the one of the epoch the workers tested (same ranking as Ray's: fused top-1,
    ties to the later epoch).
    """
    url = results_url(cfg)
    results = json.loads(fsio.read_bytes(url))
    best_epoch = results["meta"]["best_epoch"]
    candidates = [c for c, m in (result.best_checkpoints or []) if m.get("epoch") == best_epoch]
    if not candidates:
        print(f"[intint] warning: the epoch {best_epoch} checkpoint is not retained; results only in {url}",
              flush=True)
        return url
    beside = fsio.join(fsio.join(run_folder(cfg), os.path.basename(candidates[-1].path.rstrip("/"))),
                       checkpoint.RESULTS_FILE)
    write_results(results, beside)
    print(f"[intint] test metrics: {json.dumps(flat_metrics(results, ''))}", flush=True)
    print(f"[intint] results: {url} and {beside}", flush=True)
    return url


def make_trainer(cfg: TrainConfig, callbacks: Sequence[Any] = ()) -> TorchTrainer:
    """The `TorchTrainer` for a resolved config (see `resolve`); `callbacks` are `ray.train.UserCallback`s."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=cfg.to_dict(),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker}),
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo", timeout_s=300),
        run_config=RunConfig(
            name=cfg.name,
            storage_path=cfg.storage_path,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=SCORE_ATTRIBUTE,
                                               checkpoint_score_order="max"),
            callbacks=list(callbacks),
        ),
    )


def run(cfg: TrainConfig, callbacks: Sequence[Any] = ()) -> Result:
    """Train `cfg` on Ray Train (starting a local Ray when no cluster is given) and publish its results.

    Returns Ray's `Result`; the test metrics are at `results_url(cfg)` and beside the best checkpoint.
    `callbacks` (`ray.train.UserCallback`) see every report, e.g. to keep a per-epoch history.
    Raises `ray.train.WorkerGroupError` when training fails more than `max_failures` times.
    """
    cfg = resolve(cfg)
    init_ray(num_cpus=max(os.cpu_count() or 1, cfg.num_workers * cfg.cpus_per_worker), env=worker_env())
    result = make_trainer(cfg, callbacks).fit()
    publish_results(result, cfg)
    return result
