"""A run's record (`config.json` in its run folder) and whether a new launch may use that folder.

A run folder (`storage_path/name`) is one run: Ray Train resumes whatever it finds there. So the first
start of a run writes its resolved config into the folder, and every later launch with the same name is
compared with that record, field by field, before Ray starts:

- the same config continues the run (Ray resumes from its last checkpoint);
- a different config is refused with the differing fields listed (`RunConflict`), unless the run has no
  checkpoint yet (nothing was trained under the old record, which is then replaced);
- `--resume` continues the run as recorded: the command line may change only the resources of the run
  (`RESOURCE_FIELDS`: how many workers, CPUs, loader processes, GPU or not, and how it is tracked and
  restarted) and extend it with a larger `--epochs` (the LR schedule is then recomputed for the new total,
  `intint.train.optim.restore_scheduler`). The record is updated to the config the run continues with.

`parse_run` is the entry points' parsing: `--config PATH` starts from a recorded config instead of a
preset and `--resume` starts from the run's own record, flags overriding either.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from intint.config import TrainConfig, parse
from intint.model import checkpoint
from intint.store import fsio

log = logging.getLogger(__name__)

RECORD_FILE = checkpoint.CONFIG_FILE  # the run folder's config.json: the record `--config` reads back
# What may change when a run continues (--resume): where and how it runs, never what it trains.
RESOURCE_FIELDS = ("num_workers", "loader_workers", "use_gpu", "cpus_per_worker", "checkpoint_every_batches",
                   "max_failures", "log_every", "wandb")
IGNORED_FIELDS = ("inject_failure_at_epoch",)  # a fault test's switch (also set from the environment)
LOCATION_FIELDS = ("storage_path", "name")  # where the run folder is: a copied or moved run is the same run
RUN_OPTIONS_HELP = ("--config PATH starts from a recorded run config (a run folder's config.json, path or "
                    "fsspec URL) instead of the preset; --resume continues the run --name names as "
                    "recorded (flags may change only its resources, and a larger --epochs extends it). "
                    "Flags override either.")


class RunConflict(ValueError):
    """A launch that would reuse a run folder for a different config; the message is the user's error line."""


@dataclass(frozen=True)
class Change:
    """One field (dotted name, e.g. `optim.lr`) whose value differs between the record and a launch."""

    name: str
    recorded: Any
    wanted: Any

    def __str__(self) -> str:
        return f"{self.name} {_show(self.recorded)} → {_show(self.wanted)}"


@dataclass(frozen=True)
class RunRequest:
    """What an entry point's command line asks: the config to train and whether to continue its run."""

    config: TrainConfig
    resume: bool = False


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dicts → {"optim.lr": 0.1, ...}; tuples as lists (as JSON reads them back)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and key in ("optim", "model", "data"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def config_changes(recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[Change]:
    """The fields whose values differ between two config dicts (`TrainConfig.to_dict` or its JSON), in the
    config's field order; a field only one side has counts as changed. The fault-test switch and the run
    folder's own location (`LOCATION_FIELDS`) never do."""
    old, new = _flat(recorded), _flat(wanted)
    names = list(new) + [name for name in old if name not in new]
    return [Change(name, old.get(name), new.get(name)) for name in names
            if name not in IGNORED_FIELDS + LOCATION_FIELDS and old.get(name) != new.get(name)]


def format_changes(changes: Sequence[Change]) -> str:
    """`epochs 8 → 9, optim.lr 0.1 → 0.2`."""
    return ", ".join(str(change) for change in changes)


def may_change_on_resume(change: Change) -> bool:
    """Resources may change when a run continues, and its epochs may grow; nothing else."""
    if change.name == "epochs":
        return isinstance(change.recorded, int) and change.wanted > change.recorded
    return change.name in RESOURCE_FIELDS


def check_rerun(name: str, changes: Sequence[Change], *, resume: bool, trained: bool) -> None:
    """Refuse (`RunConflict`) a launch of run `name` whose config differs from its record by `changes`.

    Without `resume` any change is refused once the run has a checkpoint (`trained`); with `resume` only
    changes `may_change_on_resume` allows pass.
    """
    if not changes:
        return
    if not resume:
        if trained:
            raise RunConflict(f"run {name!r} exists with a different config: {format_changes(changes)}; "
                              "pass --resume to continue it as recorded, or use a new --name")
        return
    refused = [change for change in changes if not may_change_on_resume(change)]
    if refused:
        resources = ", ".join(RESOURCE_FIELDS[:4])
        raise RunConflict(f"run {name!r}: --resume continues it as recorded, but the command line changes "
                          f"{format_changes(refused)}; only resources ({resources}, ...) and a larger "
                          "--epochs may change: drop those flags, or use a new --name")


# ---------------------------------------------------------------------------------------------- storage


def record_url(run_url: str) -> str:
    return fsio.join(run_url, RECORD_FILE)


def has_checkpoint(run_url: str) -> bool:
    """True when Ray saved a checkpoint in the run folder (something was trained)."""
    return any(name.startswith("checkpoint_") for name in fsio.list_names(run_url))


def read_record(run_url: str) -> dict[str, Any] | None:
    """The recorded config of the run in `run_url`: its config.json, else (a run started before runs were
    recorded) its latest checkpoint's; None when the folder holds no run."""
    url = record_url(run_url)
    if fsio.exists(url):
        return read_config(url).to_dict()
    try:
        folder = checkpoint.resolve(run_url)
    except FileNotFoundError:
        return None
    return read_config(fsio.join(folder, RECORD_FILE)).to_dict()


def write_record(run_url: str, cfg: TrainConfig) -> None:
    """Record `cfg` in the run folder, without the fault-test switch (a resumed or reproduced run must not
    inherit an injected failure)."""
    values = {**cfg.to_dict(), **{name: None for name in IGNORED_FIELDS}}
    text = json.dumps(values, indent=2, sort_keys=True) + "\n"
    fsio.atomic_write(record_url(run_url), text.encode())


def check_claim(cfg: TrainConfig, run_url: str, *, resume: bool) -> list[Change] | None:
    """Check a resolved config against the record of its run folder (`check_rerun`), writing nothing.

    Returns the changes from the record (None: no record yet). Raises `RunConflict` for a refused launch,
    FileNotFoundError for `resume` without a run to continue.
    """
    recorded = read_record(run_url)
    if recorded is None:
        if resume:
            raise FileNotFoundError(f"run {cfg.name!r}: nothing to resume in {run_url} (no {RECORD_FILE}): "
                                    "drop --resume to start it")
        return None
    changes = config_changes(recorded, cfg.to_dict())
    check_rerun(cfg.name, changes, resume=resume, trained=bool(changes) and has_checkpoint(run_url))
    return changes


def claim(cfg: TrainConfig, run_url: str, *, resume: bool) -> None:
    """`check_claim`, then record `cfg` in the run folder: at its first start, and again at every launch it
    allows (with more epochs, other resources, or from a folder the run was copied to)."""
    changes = check_claim(cfg, run_url, resume=resume)
    if changes:
        how = "continues with" if resume else "had no checkpoint yet; its record is replaced:"
        log.info("run %r %s %s", cfg.name, how, format_changes(changes))
    write_record(run_url, cfg)


# ---------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class RunOptions:
    """What a training command line asks besides the config's fields: the recorded config to start from
    (`--config PATH`) and whether to continue the named run as recorded (`--resume`)."""

    config: str | None = None
    resume: bool = False


def split_run_options(args: Sequence[str] | None) -> tuple[RunOptions, list[str]]:
    """`--config PATH` and `--resume` out of a command line (None: `sys.argv[1:]`); the rest unchanged."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    pre.add_argument("--resume", action="store_true")
    known, rest = pre.parse_known_args(sys.argv[1:] if args is None else list(args))
    return RunOptions(config=known.config, resume=known.resume), rest


def without_preset(args: Sequence[str]) -> list[str]:
    """A command line without `--preset NAME` (a recorded config replaces the preset)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--preset")
    return pre.parse_known_args(list(args))[1]


def read_config(url: str) -> TrainConfig:
    """A recorded run config: a `config.json` (a run folder's or a checkpoint's; path or fsspec URL), or the
    folder holding one. Errors name the file: missing, not JSON, or not a valid config."""
    fs, path = fsio.url_to_fs(url)
    if fs.isdir(path):
        url = fsio.join(url, RECORD_FILE)
    try:
        values = json.loads(fsio.read_bytes(url))
    except FileNotFoundError:
        raise FileNotFoundError(f"{url}: no such config file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{url}: not a JSON run config ({err})") from None
    try:
        return TrainConfig.from_dict(values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{url}: {err}") from None


def parse_run(args: Sequence[str] | None = None, *, default_preset: str, split: int | None = None,
              description: str | None = None, prog: str | None = None) -> RunRequest:
    """An entry point's command line → the run it asks for.

    The base config is `--config PATH` (a recorded config.json) or the preset (`intint.presets.parse_args`,
    with `--preset` and HMDB51's `split`); flags override it. With `--resume` the base is the run's own
    record instead (found through the name and storage path the command line gives), so only the flags
    given differ from it; `intint.train.launch.run(..., resume=True)` then checks which may.
    """
    from intint.presets import parse_args

    options, rest = split_run_options(args)
    description = f"{description}\n\n{RUN_OPTIONS_HELP}" if description else RUN_OPTIONS_HELP
    if options.config:
        cfg = parse(read_config(options.config), without_preset(rest), description, prog)
    else:
        cfg = parse_args(rest, default_preset=default_preset, split=split, description=description, prog=prog)
    if not options.resume:
        return RunRequest(cfg, resume=False)
    run_url = fsio.join(absolute_url(cfg.storage_path), cfg.name)
    recorded = read_record(run_url)
    if recorded is None:
        raise FileNotFoundError(f"run {cfg.name!r}: nothing to resume in {run_url} (no {RECORD_FILE}): "
                                "drop --resume to start it")
    resumed = parse(TrainConfig.from_dict(recorded), without_preset(rest), description, prog)
    # The run is where the command line found it, wherever it was recorded (a copied or moved run folder).
    return RunRequest(dataclasses.replace(resumed, storage_path=cfg.storage_path, name=cfg.name), resume=True)


def absolute_url(url: str) -> str:
    """Local paths made absolute (Ray workers do not share the driver's working directory); URLs kept."""
    return url if "://" in url else os.path.abspath(os.path.expanduser(url))
