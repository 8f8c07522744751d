"""Preflight: what a run needs, checked in the driver in seconds, before Ray starts any worker.

Without these checks a misspelt shard path, a missing bucket or a GPU request on a CPU machine is noticed
inside the Ray workers after half a minute (retried, with tracebacks), or never: Ray waits for GPUs that do
not exist without end (docs/platform-notes.md §S.5). `check` is the one function every entry point calls
(`intint train/evaluate/ablate/demo`, jobs/*.py, and `intint.train.launch.run` itself): for a training
config it checks that

- the shard set opens, its manifest checks, and every split the config names is in it;
- the storage path is writable: a probe object is written and deleted (a missing bucket is an error,
  never created, `intint.store.fsio.check_bucket`); `pretrained` weights exist;
- the resources exist: `use_gpu=True` asks for one GPU per Ray worker, counted on this machine (torch)
  for a local run and with `ray.cluster_resources()` (and the autoscaler's maximum) for a run connected to
  a cluster; `"auto"` becomes True where there are GPUs, else False, said in one log line with the global
  batch and the linearly scaled learning rate. A cluster too small for the run's CPUs is an error too.

It returns the config as the workers get it (`launch.resolve`, `use_gpu` a bool). An evaluation config gets
the same shard-set, output and device checks. Every failure is a `PreflightError`: one line
`<what>: <fix>`, which the entry points print as `error: ...` with exit code 1.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from intint.config import EvaluateConfig, TrainConfig
from intint.store import fsio, shardio

log = logging.getLogger(__name__)

PROBE_PREFIX = ".intint-write-probe-"
C = TypeVar("C", TrainConfig, EvaluateConfig)


class PreflightError(ValueError):
    """A run that cannot start: what is wrong and how to fix it, in one line."""

    def __init__(self, what: str, fix: str) -> None:
        super().__init__(f"{what}: {fix}")


def check(cfg: C) -> C:
    """Check that `cfg` can run here (see the module docstring); returns the config to run.

    A training config comes back resolved (`intint.train.launch.resolve`: absolute paths, env overrides)
    with `use_gpu` True or False; an evaluation config comes back unchanged. Raises `PreflightError`.
    """
    if isinstance(cfg, EvaluateConfig):
        check_evaluate(cfg)
        return cfg
    from intint.train import launch

    cfg = launch.resolve(cfg)
    check_shards(cfg.shards, run_splits(cfg))
    check_writable(cfg.storage_path, "--storage-path")
    if cfg.pretrained and not fsio.exists(cfg.pretrained):
        raise PreflightError(f"--pretrained {cfg.pretrained}: no such file",
                             "give the PYSKL checkpoint's path or URL (or --from-scratch)")
    return check_resources(cfg)


def run_splits(cfg: TrainConfig) -> list[str]:
    """The shard-set splits a training run reads: train, validation (a held-out part of train needs no
    split of its own) and test."""
    names = [cfg.data.train_split, cfg.data.val_split, cfg.data.test_split]
    return list(dict.fromkeys(n for n in names if n))


def check_shards(url: str, splits: Iterable[str]) -> shardio.Manifest:
    """The shard set at `url` opens, its manifest checks, and it holds every split of `splits`."""
    try:
        manifest = shardio.read_manifest(url)
    except FileNotFoundError as err:
        raise PreflightError(str(err), "check --shards, or build a shard set with `intint build-shards`") \
            from None
    missing = [s for s in splits if s not in manifest.splits]
    if missing:
        raise PreflightError(f"--shards {url}: no split {', '.join(map(repr, missing))} (it has "
                             f"{', '.join(map(repr, manifest.splits))})",
                             "build it, or name another with --data.train-split / --data.val-split / "
                             "--data.test-split")
    return manifest


def check_writable(url: str, option: str) -> None:
    """Write and delete a small probe object in folder `url` (a local folder is created; an object-store
    bucket must exist)."""
    fs, path = fsio.url_to_fs(url)
    probe = fsio.join(path, f"{PROBE_PREFIX}{uuid.uuid4().hex}")
    try:
        fsio.makedirs(url)
        fs.pipe_file(probe, b"")
        fs.rm(probe)
    except fsio.MissingBucketError as err:
        raise PreflightError(f"{option} {url}: bucket {err.bucket!r} does not exist",
                             "fix the URL, or create the bucket (intint never creates buckets)") from None
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise PreflightError(f"{option} {url}: not writable ({' '.join(reason.split())})",
                             "check the path and its permissions or credentials, or pass another folder") \
            from None


# ---------------------------------------------------------------------------------------------- resources


def ray_connected() -> bool:
    """Whether this run uses a Ray cluster: one initialised in this process, or `RAY_ADDRESS` to connect
    to (a `ray job submit` job). Ray is not imported when neither is the case."""
    ray = sys.modules.get("ray")
    return bool(os.environ.get("RAY_ADDRESS")) or (ray is not None and ray.is_initialized())


def available_resources() -> tuple[dict[str, float], str]:
    """GPUs and CPUs this run can get, and where they were counted.

    On a cluster (connected here first when `RAY_ADDRESS` is set): the larger of what it has now and what
    its autoscaler may add. Locally: this machine's CUDA devices (a local Ray gets enough logical CPUs for
    one run, `launch.local_cpus`, so CPUs are not counted).
    """
    if not ray_connected():
        import torch

        return {"GPU": float(torch.cuda.device_count())}, "this machine"
    from intint.train import launch

    launch.start_ray(env=launch.worker_env())
    found = launch.cluster_resources()
    for name, most in autoscaler_maximum().items():
        found[name] = max(found.get(name, 0.0), float(most))
    return found, "the Ray cluster"


def autoscaler_maximum() -> Mapping[str, Any]:
    """The most of each resource the cluster's autoscaler config allows ({} without one; a Ray internal,
    read the way Ray Train reads it before it waits for a placement group)."""
    try:
        from ray._private import state

        return state.state.get_max_resources_from_cluster_config() or {}
    except Exception:  # an internal API: a Ray without it has no autoscaler limit to tell
        return {}


def check_resources(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with `use_gpu` decided: an explicit True needs a GPU per worker, "auto" takes the GPUs there
    are (fewer workers when there are fewer GPUs than workers) or the CPU; a cluster needs the CPUs."""
    found, where = available_resources()
    gpus = int(found.get("GPU", 0))
    if cfg.use_gpu is True and gpus < cfg.num_workers:
        raise PreflightError(
            f"--use-gpu true asks for {cfg.num_workers} GPUs (one per Ray worker) and {where} has {gpus}",
            f"pass --use-gpu auto or false{f', or --num-workers {gpus}' if gpus else ''}")
    if cfg.use_gpu == "auto":
        workers = min(cfg.num_workers, gpus) if gpus else cfg.num_workers
        cfg = dataclasses.replace(cfg, use_gpu=gpus > 0, num_workers=workers)
        log.info("%s", auto_line(cfg, gpus, where))
    if "CPU" in found and found["CPU"] < cfg.num_workers * cfg.cpus_per_worker:
        raise PreflightError(
            f"the run needs {cfg.num_workers} workers × {cfg.cpus_per_worker} CPUs and {where} has "
            f"{found['CPU']:g} CPUs", "pass fewer --num-workers or --cpus-per-worker")
    return cfg


def auto_line(cfg: TrainConfig, gpus: int, where: str) -> str:
    """The one line that says where `use_gpu auto` trains and how the batch and learning rate scale."""
    scale = (f"{cfg.num_workers} workers × batch {cfg.batch_size} = global batch {cfg.global_batch}, "
             f"lr {cfg.optim.lr:g} × {cfg.global_batch}/{cfg.optim.base_batch} = {cfg.lr_used:g}")
    if cfg.use_gpu:
        return f"use_gpu auto: {gpus} GPU(s) on {where}: training on GPU, one per worker; {scale}"
    return (f"use_gpu auto: no GPU on {where}: training on CPU ({cfg.cpus_per_worker} CPUs per worker); "
            f"{scale}")


# ---------------------------------------------------------------------------------------------- evaluation


def check_evaluate(args: EvaluateConfig) -> None:
    """An evaluation can start: the checkpoint and its run config read, the shard set holds the split,
    the results' folder is writable, and a CUDA `--device` exists."""
    from intint.model import checkpoint

    folder = checkpoint.resolve(args.checkpoint)
    run = TrainConfig.from_dict(checkpoint.load_config(folder))
    check_shards(args.shards or run.shards, [args.split or run.data.test_split])
    if args.out:
        check_writable(os.path.dirname(args.out.rstrip("/")) or ".", "--out")
    else:
        check_writable(folder, "--checkpoint")
    if args.device and args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise PreflightError(f"--device {args.device}: this machine has no CUDA GPU",
                                 "pass --device cpu, or leave --device out (cuda when there is one)")
