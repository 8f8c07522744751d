"""`intint export`: a trained run or checkpoint → files that other tools load without intint's training code.

The export folder (a path or fsspec URL) holds:

- ``model.pt``: the two-pathway model's plain state dict (``TwoPathwayModel.state_dict()``: keys
  ``integrity.…`` and ``intensity.…``, CPU tensors), loadable with ``torch.load(f, weights_only=True)``;
- ``config.json``: the run config (``TrainConfig.to_dict()``) with ``num_classes`` filled in, so
  ``build_model(TrainConfig.from_dict(config), config["num_classes"])`` rebuilds the network
  (``load_export`` does both steps);
- ``classes.txt``: the class names, one per line (line i = class id i; ``outputs.class_names``);
- ``pyskl_<pathway>.pth`` for each pathway: a PYSKL / MMAction2 PoseC3D checkpoint (``{"meta",
  "state_dict"}`` with PYSKL's tensor names, ``intint.model.pyskl_checkpoint``), for PYSKL's own tools or
  ``intint train --pretrained``;
- ``export.json``: what was exported (source checkpoint, epoch, weights, pathways, where the class names
  came from, the files).

The weights are the checkpoint's own epoch ("last") or its best epoch ("best"), as ``intint evaluate`` names
them. An existing export is replaced only when asked (``overwrite``).
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from intint.config import TrainConfig
from intint.eval import outputs
from intint.eval.models import Weights, build_model, load_model
from intint.model.pyskl_checkpoint import save_pyskl_checkpoint
from intint.model.slowonly import TwoPathwayModel
from intint.store import fsio

__all__ = ["MODEL_FILE", "CONFIG_FILE", "CLASSES_FILE", "RECORD_FILE", "Export", "pyskl_file", "export_model",
           "load_export"]

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
CLASSES_FILE = "classes.txt"
RECORD_FILE = "export.json"


def pyskl_file(pathway: str) -> str:
    """The PYSKL-format checkpoint of one pathway in an export folder."""
    return f"pyskl_{pathway}.pth"


@dataclass
class Export:
    """What ``export_model`` wrote: the folder, its files and the record in ``export.json``."""

    out: str
    files: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)


def _write_json(url: str, value: Any) -> None:
    fsio.atomic_write(url, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def _write_state_dict(model: TwoPathwayModel, url: str) -> None:
    """The model's state dict as CPU tensors (loadable weights-only on any machine)."""
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    fsio.atomic_write(url, buffer.getvalue())


def _refuse_existing(out: str, overwrite: bool) -> None:
    if overwrite:
        return
    if fsio.exists(fsio.join(out, MODEL_FILE)) or fsio.exists(fsio.join(out, RECORD_FILE)):
        raise FileExistsError(f"{out}: already holds an export ({MODEL_FILE}); pass --overwrite to replace "
                              "it or choose another folder")


def export_model(source: str, out: str, *, weights: Weights = "last", overwrite: bool = False) -> Export:
    """Export the ``weights`` of ``source`` (a checkpoint folder or a run folder: its tested checkpoint) into
    the folder ``out``: model.pt, config.json, classes.txt, one PYSKL checkpoint per pathway, export.json."""
    _refuse_existing(out, overwrite)
    trained = load_model(source, weights, "cpu")
    classes = outputs.class_names(trained.cfg.shards, trained.num_classes)
    done = Export(out)
    config = {**trained.cfg.to_dict(), "num_classes": trained.num_classes}
    _write_state_dict(trained.model, fsio.join(out, MODEL_FILE))
    _write_json(fsio.join(out, CONFIG_FILE), config)
    fsio.atomic_write(fsio.join(out, CLASSES_FILE), ("\n".join(classes.names) + "\n").encode())
    done.files += [MODEL_FILE, CONFIG_FILE, CLASSES_FILE]
    source_record = {"checkpoint": trained.checkpoint, "epoch": trained.epoch, "weights": weights}
    for pathway in trained.model.pathways:
        meta = {"intint": {**source_record, "pathway": pathway, "classes": classes.names}}
        save_pyskl_checkpoint(trained.model.recognizer(pathway), fsio.join(out, pyskl_file(pathway)), meta)
        done.files.append(pyskl_file(pathway))
    done.record = {**source_record, "pathways": list(trained.model.pathways),
                   "num_classes": trained.num_classes, "classes_source": classes.source,
                   "files": [*done.files, RECORD_FILE]}
    _write_json(fsio.join(out, RECORD_FILE), done.record)
    done.files.append(RECORD_FILE)
    log.debug("exported %s (epoch %d, %s weights) to %s: %s", trained.checkpoint, trained.epoch, weights, out,
             ", ".join(done.files))
    return done


def load_export(out: str, device: str | torch.device = "cpu") -> TwoPathwayModel:
    """The model of an export folder: built from its config.json, its model.pt loaded weights-only, in eval
    mode on ``device``."""
    config = json.loads(fsio.read_bytes(fsio.join(out, CONFIG_FILE)))
    cfg = TrainConfig.from_dict(config)
    model = build_model(cfg, int(config["num_classes"]))
    with io.BytesIO(fsio.read_bytes(fsio.join(out, MODEL_FILE))) as f:
        model.load_state_dict(torch.load(f, map_location="cpu", weights_only=True))
    return model.to(device).eval()
