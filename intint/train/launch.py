"""Starting Ray and launching training on it: the one place the driver side of intint talks to Ray.

`start_ray` is the single bootstrap that training, the demo and the ablation sweep use: inside a Ray job
(`RAY_ADDRESS` set) it connects to the cluster, else it starts a private local instance, always after
`ray_env_defaults` (Ray reads those variables when it is first imported, so Ray is imported lazily, here
and in the worker loop). The ablation and the demo never import Ray themselves: what else they need of it
(cluster resources, a remote task, stopping Ray, a per-epoch history callback) is a function here.

Ray layout (docs/platform-notes.md §1b-§6): a `TorchTrainer` with one worker per GPU (gloo on CPU), each
running `intint.train.loop.train_loop_per_worker`. A crashed worker group restarts from the last
checkpoint (`FailureConfig`), and re-running with the same name and storage path resumes the run (V2
auto-resume) when its config is the one recorded in the run folder (`intint.train.run_record`). Ray keeps
the newest checkpoints, so the last epoch's always survives (it also holds the best epoch's weights,
`intint.train.loop`); after `fit`, the workers' `results.json` is copied into it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from intint.config import TrainConfig, with_env_overrides
from intint.eval.distributed import flat_metrics
from intint.eval.metrics import write_results
from intint.model import checkpoint
from intint.store import fsio
from intint.train import loop, preflight
from intint.train.logs import configure_logging
from intint.train.loop import results_url, run_folder
from intint.train.run_record import absolute_url, claim

if TYPE_CHECKING:
    from ray.train import Result
    from ray.train.torch import TorchTrainer

log = logging.getLogger(__name__)

WORKER_ENV_PREFIXES = ("WANDB_",)  # environment forwarded to Ray workers (W&B key, mode, host)


# ---------------------------------------------------------------------------------------------- Ray


def ray_env_defaults() -> None:
    """Defaults Ray must see before import: loopback node IP, no duplicated worker prints
    (docs/platform-notes.md §1b)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")


def worker_env() -> dict[str, str]:
    """W&B settings of the launching shell, for the Ray workers' runtime_env."""
    return {k: v for k, v in os.environ.items() if k.startswith(WORKER_ENV_PREFIXES)}


QUIET_RAY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}  # see `start_ray`'s `quiet`


def start_ray(num_cpus: int | None = None, env: Mapping[str, str] | None = None, *, quiet: bool = True,
              auto_connect: bool = True) -> bool:
    """Connect to the cluster inside a Ray job (RAY_ADDRESS set), else start a private local instance.

    Returns True when this call started a private local Ray (the caller may then `stop_ray` it); a Ray
    already initialised is left as it is. `address="local"` keeps a local run from attaching to a
    `ray start` head that happens to be up (which would reject `num_cpus`, docs/platform-notes.md §5).
    Inside a job, environment variables the job's own runtime_env already sets are not repeated (Ray
    refuses conflicting keys). `auto_connect=False` makes a Ray call after a shutdown fail instead of
    quietly starting a fresh local Ray (effective when Ray is first imported).

    `quiet` (the default of every entry point; docs/platform-notes.md §S.4) keeps Ray's internal noise out
    of the run's output, intint's own lines stay: the job's Ray log records go to ERROR and above (Ray
    Train's placement-group cleaner warns every second that the State API is unavailable), the preemption
    watcher, which only logs node drains and announces itself with an error line, is off unless
    `RAY_TRAIN_ENABLE_PREEMPTION_WATCHER` is set, and on a cluster the workers get its `RAY_ADDRESS`, so
    the cleaner finds the cluster even where a node runs several Ray instances.
    """
    ray_env_defaults()
    if not auto_connect:
        os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
    env = dict(env or {})
    if quiet:
        for key, value in QUIET_RAY_ENV.items():
            os.environ.setdefault(key, value)  # a local Ray's processes inherit the driver's environment
    import ray

    if ray.is_initialized():
        return False
    logging_config = ray.LoggingConfig(log_level="ERROR") if quiet else None
    address = os.environ.get("RAY_ADDRESS")
    if address:
        if quiet:
            env.update({key: os.environ[key] for key in QUIET_RAY_ENV})  # a cluster's get them from the job
            if "://" not in address and address != "auto":
                env.setdefault("RAY_ADDRESS", address)
        job_env = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("runtime_env") or {}
        for key in job_env.get("env_vars") or {}:
            env.pop(key, None)
        ray.init(runtime_env={"env_vars": env} if env else None, logging_config=logging_config)
        return False
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
             runtime_env={"env_vars": env} if env else None, logging_config=logging_config)
    return True


def stop_ray() -> None:
    """Shut Ray down (a no-op when it is not running)."""
    import ray

    ray.shutdown()


def local_cpus(cfg: TrainConfig) -> int:
    """CPUs of a private local Ray for `cfg`: this machine's, or one run's needs when they are more."""
    return max(os.cpu_count() or 1, cfg.num_workers * cfg.cpus_per_worker)


def cluster_resources() -> dict[str, float]:
    """The resources of the Ray cluster this process is connected to (CPU, GPU, memory, ...)."""
    import ray

    return dict(ray.cluster_resources())


def run_as_task(fn: Callable[..., Any], cfg: TrainConfig, *args: Any) -> Any:
    """`fn(*args)` as a Ray task holding one training worker's resources (where the run's data and GPU
    are); returns its result, retrying once if the task's process dies."""
    import ray

    remote = ray.remote(num_cpus=cfg.cpus_per_worker, num_gpus=1 if cfg.use_gpu is True else 0,
                        max_retries=1)(fn)
    return ray.get(remote.remote(*args))


def quiet_ray_report_logs() -> None:
    """Ray Train V2 logs, at INFO from every worker, each report with its whole metrics dict and each
    persisted checkpoint: dozens of long lines per run that bury intint's one-line epoch summaries.
    Those two loggers go to WARNING (their module paths are Ray internals: a Ray without them is left
    as it is)."""
    try:
        from ray.train.v2._internal.execution import context, storage
    except ImportError:
        return
    for name in (context.__file__, storage.__name__):  # context names its logger by its file path
        logging.getLogger(name).setLevel(logging.WARNING)


def history_callback(path: str) -> Any:
    """A Ray Train callback (runs in the controller) keeping every epoch's reported metrics in `path`
    (JSON lines, one per epoch, sorted by epoch).

    Ray's `Result` only holds the metrics of retained checkpoints; training curves need all epochs.
    A restarted worker group re-reports epochs after its checkpoint: the later report of an epoch wins.
    """
    from ray.train import UserCallback

    class HistoryCallback(UserCallback):
        def __init__(self) -> None:
            self.rows: dict[int, dict[str, Any]] = {}

        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            row = {k: v for k, v in metrics[0].items() if isinstance(v, (int, float, str, bool))}
            self.rows[int(row.get("epoch", len(self.rows)))] = row
            text = "".join(json.dumps(self.rows[e], sort_keys=True) + "\n" for e in sorted(self.rows))
            fsio.atomic_write(path, text.encode())

    return HistoryCallback()


# ---------------------------------------------------------------------------------------------- training


def resolve(cfg: TrainConfig) -> TrainConfig:
    """The config as the workers get it: env overrides applied, local paths absolute, shards required, all
    before Ray starts. HMDB51 without weights is refused: its published numbers start from the Kinetics-400
    PoseC3D checkpoint, and training from scratch without saying so would report something else."""
    cfg = with_env_overrides(cfg)
    if not cfg.shards:
        raise ValueError("--shards is required: the shard-set URL built by `intint build-shards`")
    if cfg.dataset == "hmdb51" and not cfg.pretrained and not cfg.from_scratch:
        raise ValueError("hmdb51: the paper's HMDB51 numbers start from the Kinetics-400 PoseC3D weights: "
                         "pass --pretrained PATH (or --from-scratch to train without them)")
    return dataclasses.replace(cfg, shards=absolute_url(cfg.shards),
                               storage_path=absolute_url(cfg.storage_path),
                               pretrained=absolute_url(cfg.pretrained) if cfg.pretrained else None)


def worker_main(config_dict: dict[str, Any]) -> None:
    """What every Ray Train worker process runs: intint's console logging (stdout only: Ray already logs
    the worker's root logger to stderr), Ray's report noise down, then the training loop."""
    configure_logging(propagate=False)
    quiet_ray_report_logs()
    loop.train_loop_per_worker(config_dict)


def make_trainer(cfg: TrainConfig, callbacks: Sequence[Any] = ()) -> TorchTrainer:
    """The `TorchTrainer` for a resolved config (see `resolve`); `callbacks` are `ray.train.UserCallback`s."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    return TorchTrainer(
        worker_main,
        train_loop_config=cfg.to_dict(),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker}),
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo", timeout_s=300),
        run_config=RunConfig(
            name=cfg.name,
            storage_path=cfg.storage_path,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            # The newest two: the last epoch's is what a run tests (or holds the best weights it tests).
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=list(callbacks),
        ),
    )


def publish_results(result: Result, cfg: TrainConfig) -> str:
    """Copy the run folder's results.json into the last checkpoint's folder; returns the run-folder URL.

    The last checkpoint holds the tested weights: its own epoch's (`select="last"`), or the best epoch's
    as `best_model` (`select="best"`); results.json's `tested` says which.
    """
    url = results_url(cfg)
    results = json.loads(fsio.read_bytes(url))
    if result.checkpoint is None:
        log.warning("warning: Ray returned no checkpoint; results only in %s", url)
        return url
    beside = fsio.join(fsio.join(run_folder(cfg), os.path.basename(result.checkpoint.path.rstrip("/"))),
                       checkpoint.RESULTS_FILE)
    write_results(results, beside)
    log.info("test metrics (%s weights of epoch %s): %s", results["tested"]["weights"],
             results["tested"]["epoch"], json.dumps(flat_metrics(results, "")))
    log.info("results: %s and %s", url, beside)
    return url


def run(cfg: TrainConfig, callbacks: Sequence[Any] = (), *, resume: bool = False) -> Result:
    """Train `cfg` on Ray Train (starting a local Ray when no cluster is given) and publish its results.

    Returns Ray's `Result`; the test metrics are at `results_url(cfg)` and beside the last checkpoint.
    `callbacks` (`ray.train.UserCallback`, e.g. `history_callback`) see every report. Before Ray starts, a
    run folder that holds another config refuses the launch (`intint.train.run_record.claim`; `resume`
    continues the recorded run, with other resources or more epochs).
    Raises `ray.train.WorkerGroupError` when training fails more than `max_failures` times.
    """
    asked = cfg
    cfg = preflight.check(cfg)  # resolved; shard set, storage and resources checked, before Ray starts
    # Recorded as asked (`use_gpu` "auto" stays auto), after the checks: a run that cannot start is not.
    claim(resolve(asked), run_folder(cfg), resume=resume)
    start_ray(num_cpus=local_cpus(cfg), env=worker_env())
    result = make_trainer(cfg, callbacks).fit()
    publish_results(result, cfg)
    return result
