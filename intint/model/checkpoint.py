"""Training checkpoints: a folder with `state.pt` (tensors and numbers) and `config.json` (the run config).

The state is read with `torch.load(weights_only=True)`, which refuses arbitrary pickled objects, so
loading a checkpoint from shared storage cannot run code. Everything that is not a tensor or a plain
number (the config) is JSON beside it, readable without torch. Files are written atomically so a
crash while saving never leaves a truncated `state.pt` under its final name.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

import fsspec
import torch

from intint.store import fsio

STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"


def save(directory: str, state: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Write `state` (tensors, state dicts, numbers) and `config` (JSON-able) into `directory`."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    fsio.atomic_write(fsio.join(directory, STATE_FILE), buffer.getvalue())
    text = json.dumps(dict(config), indent=2, sort_keys=True) + "\n"
    fsio.atomic_write(fsio.join(directory, CONFIG_FILE), text.encode())


def load_config(directory: str) -> dict[str, Any]:
    """The run config stored in a checkpoint folder (path or fsspec URL)."""
    url = fsio.join(directory, CONFIG_FILE)
    try:
        with fsspec.open(url, "r", encoding="utf-8") as f:
            config = json.load(f)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"checkpoint {directory}: no {CONFIG_FILE} (not an intint checkpoint?)") \
            from None
    except json.JSONDecodeError as err:
        raise ValueError(f"checkpoint {directory}: {CONFIG_FILE} is not valid JSON ({err})") from err
    if not isinstance(config, dict):
        kind = type(config).__name__
        raise ValueError(f"checkpoint {directory}: {CONFIG_FILE} must hold an object, got {kind}")
    return config


def load_state(directory: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The training state of a checkpoint folder, loaded weights-only (no code can run)."""
    url = fsio.join(directory, STATE_FILE)
    try:
        with fsspec.open(url, "rb") as f:
            state = torch.load(f, map_location=map_location, weights_only=True)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"checkpoint {directory}: no {STATE_FILE}") from None
    except Exception as err:  # UnpicklingError / RuntimeError naming the refused global
        raise ValueError(f"checkpoint {directory}: {STATE_FILE} is not a weights-only torch file: {err}") \
            from err
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {directory}: {STATE_FILE} holds a {type(state).__name__}, not a dict")
    for field in ("model", "epoch"):
        if field not in state:
            raise ValueError(f"checkpoint {directory}: {STATE_FILE} has no field {field!r}")
    return state


def resolve(url: str) -> str:
    """The checkpoint folder a user means: a checkpoint folder itself (or its `state.pt` / `config.json`),
    or a run folder → its tested checkpoint, else its latest one.

    Every command that takes a trained model (evaluate, predict, export) resolves it here. Ray names
    checkpoint folders `checkpoint_<timestamp>`, so the name order is the time order; the checkpoint
    holding a copy of results.json is the one the run's test results belong to.
    """
    fs, path = fsio.url_to_fs(url)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if name in (STATE_FILE, CONFIG_FILE) and fs.isfile(path):
        url = url.rstrip("/")[: -len(name) - 1]
        path = path.rstrip("/")[: -len(name) - 1]
    if fs.exists(fsio.join(path, STATE_FILE)):  # not config.json: a run folder holds one, its run record
        return url
    try:
        entries = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"checkpoint {url}: no such folder") from None
    folders = sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory")
    found = [name for name in folders
             if name.startswith("checkpoint_") and fs.exists(fsio.join(fsio.join(path, name), CONFIG_FILE))]
    if not found:
        raise FileNotFoundError(f"checkpoint {url}: neither a checkpoint ({CONFIG_FILE}) nor a run folder "
                                "with checkpoint_* folders")
    tested = [name for name in found if fs.exists(fsio.join(fsio.join(path, name), RESULTS_FILE))]
    return fsio.join(url, (tested or found)[-1])
