"""Distributed evaluation of a two-pathway model: predict this rank's share, gather, score on every rank.

The eval loader gives every video of a split to exactly one rank (no padding, so ranks may see
different counts). Each rank therefore runs the *unwrapped* model (never the DDP wrapper, whose forward
may issue collectives a rank with fewer batches would never match), then one `all_gather_object` brings
all probabilities to every rank, where they are aligned by sample key and scored with
`intint.eval.metrics` (docs/method.md §6.2, §6.4, §7). Every rank gets the same metrics, so every rank can
take the same decisions (best epoch) without another broadcast. Testing (`evaluate_test`) also predicts the
validation split with the test views and adds `fused_tuned`, the fusion weighted on validation
(`intint.eval.fusion_tuning`), when the run has a validation split apart from its test split.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from intint.config import EvaluateConfig, TrainConfig, loader_config
from intint.eval import fusion_tuning, metrics
from intint.eval.models import Weights, load_model
from intint.model import checkpoint
from intint.model.slowonly import PATHWAYS, TwoPathwayModel
from intint.store import fsio


@dataclass
class Predictions:
    """View-averaged class probabilities per pathway for a set of videos, rows aligned with `keys`."""

    probs: dict[str, np.ndarray]
    labels: np.ndarray
    keys: list[str]
    skipped: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def all_gather(obj: Any) -> list[Any]:
    """`obj` from every rank (rank order); just `[obj]` outside a process group."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked; a no-op context on CPU (CPU bf16 convs are slower, not faster)."""
    if bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def model_inputs(batch: Mapping[str, Any], pathways: Iterable[str], device: torch.device,
                 channels_last: bool) -> dict[str, torch.Tensor]:
    """The pathway tensors of a batch on `device` (channels-last-3d for cuDNN when asked)."""
    inputs = {}
    for name in pathways:
        x = batch[name].to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d) if x.dim() == 5 else x
        inputs[name] = x
    return inputs


def predict(model: TwoPathwayModel, batches: Iterable[Mapping[str, Any]], device: torch.device, *,
            prepare: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
            bf16: bool = False) -> Predictions:
    """Run this rank's eval batches (`B×N×K×T×H×W` per pathway) → per-video probabilities.

    `prepare(batch)` moves/renders a batch on the device (`intint.loader.device.to_device`); identity if None.
    """
    was_training = model.training
    model.eval()
    probs: dict[str, list[np.ndarray]] = {name: [] for name in model.pathways}
    labels: list[np.ndarray] = []
    keys: list[str] = []
    skipped = 0
    try:
        with torch.inference_mode(), autocast(device, bf16):
            for batch in batches:
                skipped += int(batch.get("skipped", 0))
                if prepare is not None:
                    batch = prepare(batch)
                out = model.predict(model_inputs(batch, model.pathways, device, channels_last=False))
                for name, p in out.items():
                    probs[name].append(p.float().cpu().numpy())
                labels.append(torch.as_tensor(batch["label"]).cpu().numpy().astype(np.int64))
                keys.extend(batch["key"])
    finally:
        model.train(was_training)
    stacked = {name: np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)
               for name, rows in probs.items()}
    label_arr = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    return Predictions(stacked, label_arr, keys, skipped)


def merge(parts: list[Predictions], split: str) -> Predictions:
    """Concatenate ranks' predictions in key order; a key seen twice (overlapping shards) is an error."""
    keys = [k for part in parts for k in part.keys]
    if not keys:
        raise ValueError(f"split {split!r}: the eval loader yielded no videos on any rank")
    order = np.argsort(np.asarray(keys), kind="stable")
    sorted_keys = [keys[i] for i in order]
    dupes = sorted({a for a, b in zip(sorted_keys, sorted_keys[1:], strict=False) if a == b})
    if dupes:
        raise ValueError(f"split {split!r}: {len(dupes)} videos evaluated more than once, "
                         f"e.g. key {dupes[0]!r}")
    names = [n for n in PATHWAYS if n in parts[0].probs]
    probs = {}
    for name in names:
        rows = [p.probs[name] for p in parts if len(p.keys)]
        probs[name] = np.concatenate(rows)[order]
    labels = np.concatenate([p.labels for p in parts if len(p.keys)])[order]
    return Predictions(probs, labels, sorted_keys, sum(p.skipped for p in parts))


def score(preds: Predictions, num_classes: int, fusion_weights: tuple[float, float]) -> dict[str, Any]:
    """Metrics per pathway and fused (`metrics.evaluate_scores`), plus `num_samples` and `skipped`."""
    results = metrics.evaluate_scores(preds.probs.get("integrity"), preds.probs.get("intensity"),
                                       preds.labels, num_classes, fusion_weights)
    results["meta"] = {"num_samples": len(preds.keys), "skipped": preds.skipped}
    return results


def selection_score(results: Mapping[str, Any]) -> float:
    """The number checkpoints are ranked by: fused top-1, or the only pathway's top-1 in one-pathway runs."""
    for name in ("fused", *PATHWAYS):
        if name in results:
            return float(results[name]["top1"])
    raise ValueError(f"results hold no pathway metrics (keys {sorted(results)})")


def flat_metrics(results: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """`{prefix}{pathway}_{top1,top5,mean_class}` scalars for reports and W&B (no confusion matrices), with
    `{prefix}fused_tuned_weight` when the results hold the validation-tuned fusion."""
    out = {}
    for name in ("integrity", "intensity", "fused", "fused_tuned"):
        if name in results:
            for metric in ("top1", "top5", "mean_class"):
                out[f"{prefix}{name}_{metric}"] = float(results[name][metric])
    if "fused_tuned" in results:
        out[f"{prefix}fused_tuned_weight"] = float(results["fused_tuned"]["weight"])
    return out


def predict_split(model: TwoPathwayModel, cfg: TrainConfig, split: str, *, rank: int, world_size: int,
                  device: torch.device, num_clips: int, flip: bool,
                  loader: Iterable[Mapping[str, Any]] | None = None) -> Predictions:
    """All ranks' predictions of `split` (`num_clips` clips, × 2 with `flip`), merged; same on each rank."""
    from intint.loader import streams
    from intint.loader.device import to_device

    lcfg = loader_config(cfg, split, train=False)
    if loader is None:
        loader = streams.eval_loader(lcfg, rank, world_size, num_clips=num_clips, flip_double=flip)
    local = predict(model, loader, device, prepare=lambda b: to_device(b, device, lcfg), bf16=cfg.bf16)
    return merge(all_gather(local), split)


def evaluate_split(model: TwoPathwayModel, cfg: TrainConfig, split: str, *, rank: int, world_size: int,
                   device: torch.device, num_classes: int, num_clips: int, flip: bool,
                   loader: Iterable[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Evaluate `split` with `num_clips` clips (× 2 with `flip`) per video over all ranks; same on each rank.

    Pass `loader` to reuse a persistent eval loader across epochs (it must match split and views).
    """
    merged = predict_split(model, cfg, split, rank=rank, world_size=world_size, device=device,
                           num_clips=num_clips, flip=flip, loader=loader)
    results = score(merged, num_classes, tuple(cfg.fusion_weights))
    results["meta"].update(split=split, num_clips=num_clips, flip=flip)
    return results


def evaluate_test(model: TwoPathwayModel, cfg: TrainConfig, *, rank: int, world_size: int,
                  device: torch.device, num_classes: int, split: str | None = None) -> dict[str, Any]:
    """Test `split` (default the run's test split) with the test views, as `evaluate_split`, plus
    `fused_tuned`: the fusion weight chosen on the run's validation set (`data.validation_split`: the val
    split or the videos held out of train), predicted with the same views.

    Without a validation split apart from the tested one (or with one pathway) `fused_tuned` is left out
    and `meta.fused_tuned_absent` says why. Only the validation labels choose the weight
    (`fusion_tuning.fuse_test` is never given the test labels).
    """
    split = split or cfg.data.test_split
    views = {"num_clips": cfg.eval_num_clips, "flip": cfg.eval_flip}
    test = predict_split(model, cfg, split, rank=rank, world_size=world_size, device=device, **views)
    results = score(test, num_classes, tuple(cfg.fusion_weights))
    results["meta"].update(split=split, **views)
    val_split = cfg.data.validation_split
    reason = fusion_tuning.absent_reason(val_split, split, list(test.probs))
    if reason is not None:
        results["meta"]["fused_tuned_absent"] = reason
        return results
    val = predict_split(model, cfg, val_split, rank=rank, world_size=world_size, device=device, **views)
    val_scores = fusion_tuning.ValidationScores(val.probs["integrity"], val.probs["intensity"], val.labels,
                                                val_split)
    results["fused_tuned"] = fusion_tuning.tuned_metrics(val_scores, test.probs["integrity"],
                                                         test.probs["intensity"], test.labels, num_classes)
    return results


def _run_config(checkpoint_dir: str, args: EvaluateConfig) -> TrainConfig:
    """The run config stored in the checkpoint, with the shard set, loader workers and views of `args`."""
    cfg = TrainConfig.from_dict(checkpoint.load_config(checkpoint_dir))
    overrides: dict[str, Any] = {}
    for field_name, value in (("shards", args.shards), ("loader_workers", args.loader_workers),
                              ("eval_num_clips", args.num_clips), ("eval_flip", args.flip)):
        if value is not None:
            overrides[field_name] = value
    return dataclasses.replace(cfg, **overrides)


def evaluate_checkpoint(args: EvaluateConfig, weights: Weights = "last") -> tuple[str, dict[str, Any]]:
    """Test a checkpoint folder with test views and late fusion (1:1 and validation-tuned, see
    `evaluate_test`), in this process (one device).

    The run's config comes from the checkpoint; `args` overrides the shard set, split and views. `weights`
    picks the checkpoint's own epoch ("last") or the best epoch so far ("best"). Results go to `args.out`,
    by default `results.json` inside the checkpoint folder. Returns (results URL, results).
    """
    checkpoint_dir = checkpoint.resolve(args.checkpoint)
    cfg = _run_config(checkpoint_dir, args)
    trained = load_model(checkpoint_dir, weights, args.device, cfg=cfg)
    results = evaluate_test(trained.model, cfg, rank=0, world_size=1, device=trained.device,
                            num_classes=trained.num_classes, split=args.split or cfg.data.test_split)
    results["meta"].update(checkpoint=checkpoint_dir, epoch=trained.epoch)
    url = args.out or fsio.join(checkpoint_dir, checkpoint.RESULTS_FILE)
    metrics.write_results(results, url)
    return url, results
