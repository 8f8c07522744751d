"""Experiment tracking: W&B on rank 0 only, and the progress meter every rank keeps.

W&B is created explicitly on rank 0 (never `ray.air.integrations.wandb.setup_wandb`: under Ray Train V2
its rank check reads the V1 session and every rank opens a run, see docs/platform-notes.md §6). A run
must never fail for lack of network or an API key: `auto` mode goes online only when a key is
configured, and an online start that fails falls back to offline; offline runs are written next to the
run and can be uploaded later with `wandb sync <folder>`.

One intint run is one W&B run: its id is created at the run's first start and kept in the run folder
(`wandb_run.json`), and every restart or `--resume` logs to it again (`resume="allow"`). With remote
storage W&B writes to a local folder, which is copied into the run folder (`<run>/wandb/`, through fsspec)
at every checkpoint and at the end, so a cluster run leaves everything in one place.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from intint.store import fsio

log = logging.getLogger(__name__)

DEFAULT_WANDB_HOST = "api.wandb.ai"
RUN_ID_FILE = "wandb_run.json"  # in the run folder: {"id": <the W&B run id>}
WANDB_FOLDER = "wandb"  # W&B's own folder name, under its `dir` and in the run folder


def has_wandb_credentials() -> bool:
    """True when W&B could authenticate: `WANDB_API_KEY` is set or ~/.netrc has a login for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "")).hostname or DEFAULT_WANDB_HOST
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(requested: str) -> str:
    """Map the config's `wandb` setting to a W&B mode ("online" | "offline" | "disabled").

    `auto` honours an explicit `WANDB_MODE` in the environment (CI sets it), else goes online only with
    credentials, so a run on a machine without a key or network still tracks everything, offline.
    """
    if requested not in ("auto", "online", "offline", "disabled"):
        raise ValueError(f"wandb mode must be auto, online, offline or disabled, got {requested!r}")
    if requested != "auto":
        return requested
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode in ("online", "offline", "disabled"):
        return env_mode
    if env_mode == "dryrun":
        return "offline"
    return "online" if has_wandb_credentials() else "offline"


def run_id(run_url: str) -> str:
    """The W&B run id of the run in folder `run_url` (path or fsspec URL): the one its `wandb_run.json`
    holds, else a new id written there (the run's first start)."""
    url = fsio.join(run_url, RUN_ID_FILE)
    if fsio.exists(url):
        try:
            return str(json.loads(fsio.read_bytes(url))["id"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{url}: not a W&B run record ({type(err).__name__}: {err})") from None
    new = uuid.uuid4().hex[:12]
    fsio.atomic_write(url, (json.dumps({"id": new}) + "\n").encode())
    return new


def mirror_url(run_url: str | None, local_dir: str) -> str | None:
    """Where W&B's local files are copied: `<run>/wandb` when W&B writes outside the run folder (remote
    storage), None when it writes into it already (or there is no run folder)."""
    if run_url is None:
        return None
    if fsio.is_local(run_url):
        _, path = fsio.url_to_fs(run_url)
        if Path(local_dir).resolve() == Path(path).resolve():
            return None
    return fsio.join(run_url, WANDB_FOLDER)


def copy_folder(local: str, url: str) -> int:
    """Copy the files of local folder `local` (recursively; links skipped) to folder `url` through fsspec;
    returns how many were copied."""
    fs, root = fsio.url_to_fs(url)
    copied = 0
    for folder, _, files in os.walk(local):
        for name in files:
            source = os.path.join(folder, name)
            if os.path.islink(source):
                continue
            relative = os.path.relpath(source, local).replace(os.sep, "/")
            fs.put_file(source, fsio.join(root, relative))
            copied += 1
    return copied


@dataclass
class Tracker:
    """Thin wrapper over a W&B run; a Tracker without a run (other ranks, disabled mode) does nothing.

    Metrics are logged against `global_step` (a metric, not W&B's internal step) so a run resumed from
    an earlier checkpoint can log steps it already logged without W&B dropping them.
    """

    run: Any = None
    mode: str = "disabled"
    folder: str | None = None  # the W&B run's local folder
    mirror: str | None = None  # the run folder's `wandb` folder it is copied into (None: written there)

    @classmethod
    def start(cls, *, rank: int, requested_mode: str, project: str, name: str, local_dir: str,
              config: Mapping[str, Any], group: str | None = None, run_url: str | None = None) -> Tracker:
        """W&B on rank 0 (other ranks and disabled mode: a Tracker that does nothing); with `run_url` (the
        run folder) the W&B run is the one that folder records (`run_id`), resumed."""
        if rank != 0:
            return cls()
        mode = resolve_wandb_mode(requested_mode)
        if mode == "disabled":
            return cls()
        import wandb  # imported here: only rank 0 of a tracked run pays for it

        Path(local_dir).mkdir(parents=True, exist_ok=True)
        kwargs = dict(project=project, name=name, dir=local_dir, config=dict(config), group=group)
        if run_url is not None:
            kwargs.update(id=run_id(run_url), resume="allow")
        try:
            run = wandb.init(mode=mode, **kwargs)
        except Exception as err:  # network/auth problems of any kind must not stop training
            if mode != "online":
                log.warning("W&B could not start (%s): %s; continuing without tracking", mode, err)
                return cls()
            log.warning("W&B online start failed (%s); logging offline instead", err)
            mode = "offline"
            run = wandb.init(mode=mode, **kwargs)
        run.define_metric("global_step")
        run.define_metric("*", step_metric="global_step")
        if mode == "offline":
            log.info("W&B offline run folder: %s (upload later with `wandb sync %s`)", run.settings.sync_dir,
                     run.settings.sync_dir)
        return cls(run=run, mode=mode, folder=str(run.settings.sync_dir),
                   mirror=mirror_url(run_url, local_dir))

    @property
    def local_folder(self) -> str | None:
        """The run's local folder (the offline run folder to `wandb sync`), None without a run."""
        return None if self.run is None else str(self.run.settings.sync_dir)

    def log(self, metrics: Mapping[str, float], global_step: int) -> None:
        if self.run is not None:
            self.run.log({"global_step": global_step, **metrics})

    def summary(self, metrics: Mapping[str, Any]) -> None:
        if self.run is not None:
            for key, value in metrics.items():
                self.run.summary[key] = value

    def save_files(self) -> None:
        """Copy the W&B run's local folder into the run folder's `wandb` folder (when it is not written
        there already); a failed copy is logged, never fatal: the local folder still has everything."""
        if self.run is None or self.mirror is None or self.folder is None:
            return
        target = fsio.join(self.mirror, Path(self.folder).name)
        try:
            copied = copy_folder(self.folder, target)
        except OSError as err:
            log.warning("warning: W&B files not copied to %s: %s", target, err)
            return
        log.debug("W&B: %d files copied to %s", copied, target)

    def finish(self) -> None:
        """End the W&B run and copy its files into the run folder (`save_files`)."""
        if self.run is not None:
            self.run.finish()
            self.save_files()
            self.run = None


@dataclass
class ProgressMeter:
    """Step timing for one rank: samples/s and the share of wall time spent waiting for the loader.

    Call `batch_arrived()` as soon as the loader yields and `step_done(...)` after the optimiser step.
    The data-wait share is the key loader health figure: near 0 the model is the bottleneck, near 1 the
    loader is. On GPU the step time includes only what was synchronised, so the meter synchronises the
    device at each report (every `log_every` steps), which keeps the windows honest at little cost.
    """

    log_every: int
    world_size: int = 1
    device: torch.device | None = None
    _window_start: float = field(default=0.0, init=False)
    _last_end: float = field(default=0.0, init=False)
    _wait: float = field(default=0.0, init=False)
    _samples: int = field(default=0, init=False)
    _steps: int = field(default=0, init=False)
    _losses: dict[str, torch.Tensor] = field(default_factory=dict, init=False)
    _epoch_start: float = field(default=0.0, init=False)
    _epoch_wait: float = field(default=0.0, init=False)
    _epoch_samples: int = field(default=0, init=False)
    _epoch_steps: int = field(default=0, init=False)
    _epoch_losses: dict[str, torch.Tensor] = field(default_factory=dict, init=False)

    def start_epoch(self) -> None:
        now = time.perf_counter()
        self._window_start = self._last_end = self._epoch_start = now
        self._wait = self._epoch_wait = 0.0
        self._samples = self._epoch_samples = self._steps = self._epoch_steps = 0
        self._losses, self._epoch_losses = {}, {}

    def batch_arrived(self) -> None:
        now = time.perf_counter()
        self._wait += now - self._last_end
        self._epoch_wait += now - self._last_end

    def step_done(self, batch_size: int, losses: Mapping[str, torch.Tensor]) -> dict[str, float] | None:
        """Record one step; every `log_every` steps return the window's figures (losses are per pathway)."""
        self._last_end = time.perf_counter()
        self._samples += batch_size
        self._epoch_samples += batch_size
        self._steps += 1
        self._epoch_steps += 1
        for name, loss in losses.items():
            detached = loss.detach().float()
            self._losses[name] = self._losses.get(name, 0) + detached
            self._epoch_losses[name] = self._epoch_losses.get(name, 0) + detached
        if self._steps < self.log_every:
            return None
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        window = self._figures(now - self._window_start, self._wait, self._samples, self._steps, self._losses)
        self._window_start = self._last_end = now
        self._wait, self._samples, self._steps, self._losses = 0.0, 0, 0, {}
        return window

    def epoch_figures(self) -> dict[str, float]:
        """The whole epoch's figures (call after the last step)."""
        elapsed = time.perf_counter() - self._epoch_start
        return self._figures(elapsed, self._epoch_wait, self._epoch_samples, self._epoch_steps,
                             self._epoch_losses)

    def _figures(self, elapsed: float, wait: float, samples: int, steps: int,
                 losses: Mapping[str, torch.Tensor]) -> dict[str, float]:
        elapsed = max(elapsed, 1e-9)
        figures = {f"train/loss_{name}": float(total) / max(steps, 1) for name, total in losses.items()}
        figures["train/samples_per_s"] = samples * self.world_size / elapsed
        figures["train/data_wait_share"] = min(wait / elapsed, 1.0)
        return figures


def format_progress(epoch: int, step: int, steps_per_epoch: int, figures: Mapping[str, float],
                    lr: float) -> str:
    """One progress line: epoch, step, per-pathway losses, lr, throughput and data-wait share."""
    losses = " ".join(f"loss_{k.removeprefix('train/loss_')}={v:.4f}" for k, v in figures.items()
                      if k.startswith("train/loss_"))
    return (f"epoch {epoch} step {step}/{steps_per_epoch} {losses} lr={lr:.5g} "
            f"{figures['train/samples_per_s']:.1f} samples/s "
            f"data_wait={figures['train/data_wait_share']:.0%}")
