"""The two-pathway model a run config describes: fresh (optionally with PYSKL weights) or from a checkpoint.

The run config (``intint.config.TrainConfig`` and its presets) is the one place that says how big a pathway
is; ``slowonly_config`` turns its ``ModelConfig`` into the network's ``SlowOnlyConfig``. Everything that
uses a trained checkpoint (evaluate, predict, the ablation sweep) loads it with ``load_model`` and names the
weights it wants: a checkpoint holds the weights of its own epoch (``model``) and, when a later epoch was
saved after the best one, the best epoch's weights as well (``best_model``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch

from intint.config import ModelConfig, TrainConfig
from intint.model import checkpoint
from intint.model.pyskl_checkpoint import load_pyskl_checkpoint
from intint.model.slowonly import SlowOnlyConfig, TwoPathwayModel
from intint.store.shardio import read_manifest

__all__ = [
    "Weights",
    "TrainedModel",
    "slowonly_config",
    "build_model",
    "load_pretrained",
    "num_classes_of",
    "checkpoint_weights",
    "load_model",
]

log = logging.getLogger(__name__)

Weights = Literal["best", "last"]
"""Which weights of a checkpoint: "best" (the best epoch so far) or "last" (the checkpoint's own epoch)."""


def slowonly_config(model_cfg: ModelConfig, num_classes: int) -> SlowOnlyConfig:
    """One pathway's network for a run's ``ModelConfig``; strides and inflation are the architecture's own."""
    return SlowOnlyConfig(num_classes=num_classes, stage_blocks=tuple(model_cfg.stage_blocks),
                          base_channels=model_cfg.base_channels, dropout=model_cfg.dropout)


def build_model(cfg: TrainConfig, num_classes: int) -> TwoPathwayModel:
    """The two-pathway model a run config describes, with fresh weights (``cfg.pathways`` decides which)."""
    return TwoPathwayModel.from_config(slowonly_config(cfg.model, num_classes), cfg.pathways)


def load_pretrained(model: TwoPathwayModel, url: str) -> None:
    """Load a PYSKL checkpoint (e.g. K400 PoseC3D) into every pathway; a head of another size is skipped."""
    for name in model.pathways:
        report = load_pyskl_checkpoint(model.recognizer(name), url)
        log.info("%s: loaded %d tensors from %s (head %s)", name, len(report.loaded), url,
                 "loaded" if report.head_loaded else "kept fresh")


def num_classes_of(cfg: TrainConfig) -> int:
    """``cfg.num_classes``, else the shard manifest's class count."""
    return cfg.num_classes if cfg.num_classes is not None else read_manifest(cfg.shards).num_classes


def checkpoint_weights(state: dict[str, Any], weights: Weights) -> dict[str, Any]:
    """The model state dict of a loaded checkpoint state: "last" is ``model``; "best" is ``best_model``
    when the checkpoint holds one (the best epoch came before this one), else ``model``."""
    if weights == "best":
        return state.get("best_model") or state["model"]
    if weights == "last":
        return state["model"]
    raise ValueError(f"weights must be 'best' or 'last', got {weights!r}")


@dataclass
class TrainedModel:
    """A checkpoint's model on its device, in eval mode, with the run config and class count it was built
    from and the epoch it was saved at."""

    model: TwoPathwayModel
    cfg: TrainConfig
    num_classes: int
    epoch: int
    device: torch.device
    checkpoint: str = ""  # the checkpoint folder the weights came from (`checkpoint.resolve`d)


def load_model(checkpoint_dir: str, weights: Weights, device: str | torch.device | None = None, *,
               cfg: TrainConfig | None = None) -> TrainedModel:
    """Build the model of a checkpoint (path or fsspec URL) and load its ``weights``.

    ``checkpoint_dir`` is a checkpoint folder or a run folder (its tested checkpoint), as
    ``checkpoint.resolve`` reads it. ``cfg`` is the run config to build from; by default the one stored in the
    checkpoint (pass one to override the shard set or views first). The class count is the checkpoint's,
    else the config's, else the shard manifest's. ``device`` defaults to CUDA when available.
    """
    if weights not in ("best", "last"):
        raise ValueError(f"weights must be 'best' or 'last', got {weights!r}")
    checkpoint_dir = checkpoint.resolve(checkpoint_dir)
    if cfg is None:
        cfg = TrainConfig.from_dict(checkpoint.load_config(checkpoint_dir))
    state = checkpoint.load_state(checkpoint_dir)
    num_classes = int(state.get("num_classes") or num_classes_of(cfg))
    if num_classes < 1:
        raise ValueError(f"checkpoint {checkpoint_dir}: no num_classes in {checkpoint.STATE_FILE} "
                         "or its config")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build_model(cfg, num_classes)
    model.load_state_dict(checkpoint_weights(state, weights))
    model.to(dev).eval()
    return TrainedModel(model, cfg, num_classes, int(state["epoch"]), dev, checkpoint_dir)
