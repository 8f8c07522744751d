"""Distributed evaluation of a two-pathway model: predict this rank's share, gather, score on every rank.

The eval loader gives every video of a split to exactly one rank (no padding, so ranks may see
different counts). Each rank therefore runs the *unwrapped* model (never the DDP wrapper, whose forward
may issue collectives a rank with fewer batches would never match), then one `all_gather_object` brings
all probabilities to every rank, where they are aligned by sample key and scored with
`intint.eval.metrics` (docs/method.md §6.2, §6.4, §7). Every rank gets the same metrics, so every rank can
take the same decisions (best epoch) without another broadcast. Testing (`evaluate_test`) also predicts the
validation split with the test views and adds `fused_tuned`, the fusion weighted on validation
(`intint.eval.fusion_tuning`), when the run has a validation split apart from its test split; it names
the classes in the results and leaves the per-video probabilities beside them (`intint.eval.outputs`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from intint.config import EvaluateConfig, TrainConfig, loader_config
from intint.eval import fusion_tuning, metrics, outputs
from intint.eval.models import Weights, load_model
from intint.model import checkpoint
from intint.model.slowonly import PATHWAYS, TwoPathwayModel


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


def progress_bar(batches: Iterable[Any], label: str | None) -> Iterable[Any]:
    """`batches` with a tqdm bar on stderr counting batches and videos (`label`: its title; None: no bar)."""
    if label is None:
        return batches
    from tqdm import tqdm

    try:
        total = len(batches)  # type: ignore[arg-type]
    except TypeError:
        total = None
    return tqdm(batches, total=total, desc=label, unit="batch", file=sys.stderr, mininterval=1.0,
                dynamic_ncols=True)


def predict(model: TwoPathwayModel, batches: Iterable[Mapping[str, Any]], device: torch.device, *,
            prepare: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
            bf16: bool = False, progress: str | None = None) -> Predictions:
    """Run this rank's eval batches (`B×N×K×T×H×W` per pathway) → per-video probabilities.

    `prepare(batch)` moves/renders a batch on the device (`intint.loader.device.to_device`); identity if None.
    `progress` titles a progress bar on stderr (None: none; give it on one rank only).
    """
    was_training = model.training
    model.eval()
    probs: dict[str, list[np.ndarray]] = {name: [] for name in model.pathways}
    labels: list[np.ndarray] = []
    keys: list[str] = []
    skipped = 0
    try:
        with torch.inference_mode(), autocast(device, bf16):
            for batch in progress_bar(batches, progress):
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
                  loader: Iterable[Mapping[str, Any]] | None = None, progress: bool = False) -> Predictions:
    """All ranks' predictions of `split` (`num_clips` clips, × 2 with `flip`), merged; same on each rank.

    With `progress`, rank 0 shows a progress bar of its batches on stderr.
    """
    from intint.loader import streams
    from intint.loader.device import to_device

    lcfg = loader_config(cfg, split, train=False)
    if loader is None:
        loader = streams.eval_loader(lcfg, rank, world_size, num_clips=num_clips, flip_double=flip)
    local = predict(model, loader, device, prepare=lambda b: to_device(b, device, lcfg), bf16=cfg.bf16,
                    progress=f"predict {split}" if progress and rank == 0 else None)
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
                  device: torch.device, num_classes: int, split: str | None = None,
                  results_url: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Test `split` (default the run's test split) with the test views, as `evaluate_split`, plus
    `fused_tuned`: the fusion weight chosen on the run's validation set (`data.validation_split`: the val
    split or the videos held out of train), predicted with the same views.

    Without a validation split apart from the tested one (or with one pathway) `fused_tuned` is left out
    and `meta.fused_tuned_absent` says why. Only the validation labels choose the weight
    (`fusion_tuning.fuse_test` is never given the test labels). The results name the classes (`classes`,
    index = class id; `meta.classes_source` says where the names come from, `outputs.class_names`).
    `results_url` is the results file the caller writes: rank 0 writes the per-video probabilities beside
    it (`outputs.probabilities_url`). `progress`: progress bars on stderr (rank 0).
    """
    split = split or cfg.data.test_split
    views = {"num_clips": cfg.eval_num_clips, "flip": cfg.eval_flip}
    test = predict_split(model, cfg, split, rank=rank, world_size=world_size, device=device,
                         progress=progress, **views)
    results = score(test, num_classes, tuple(cfg.fusion_weights))
    classes = outputs.class_names(cfg.shards, num_classes)
    results["classes"] = classes.names
    results["meta"].update(split=split, classes_source=classes.source, **views)
    probs = dict(test.probs)
    if "fused" in results:
        probs["fused"] = metrics.fuse(probs["integrity"], probs["intensity"], tuple(cfg.fusion_weights))
    val_split = cfg.data.validation_split
    reason = fusion_tuning.absent_reason(val_split, split, list(test.probs))
    if reason is not None:
        results["meta"]["fused_tuned_absent"] = reason
    else:
        val = predict_split(model, cfg, val_split, rank=rank, world_size=world_size, device=device,
                            progress=progress, **views)
        results["fused_tuned"], probs["fused_tuned"] = tuned_fusion(val, test, val_split, num_classes)
    if results_url is not None and rank == 0:
        write_probabilities(cfg, test, probs, classes, results, outputs.probabilities_url(results_url))
    return results


def tuned_fusion(val: Predictions, test: Predictions, val_split: str,
                 num_classes: int) -> tuple[dict[str, Any], np.ndarray]:
    """`fused_tuned` of the results (`fusion_tuning.tuned_metrics`) and the tuned fused test scores."""
    val_scores = fusion_tuning.ValidationScores(val.probs["integrity"], val.probs["intensity"], val.labels,
                                                val_split)
    fused, choice = fusion_tuning.fuse_test(val_scores, test.probs["integrity"], test.probs["intensity"])
    return {**metrics.pathway_metrics(fused, test.labels, num_classes), **choice.record()}, fused


def write_probabilities(cfg: TrainConfig, test: Predictions, probs: Mapping[str, np.ndarray],
                        classes: outputs.ClassNames, results: Mapping[str, Any], url: str) -> str:
    """The per-video table of a test (`outputs.probabilities_table`), with frame_dirs from the shards."""
    split = results["meta"]["split"]
    meta = {**results["meta"], "fusion_weights": list(cfg.fusion_weights)}
    if "fused_tuned" in results:
        meta["fused_tuned_weight"] = results["fused_tuned"]["weight"]
    frame_dir = outputs.frame_dirs(cfg.shards, loader_config(cfg, split, train=False).split, test.keys)
    table = outputs.probabilities_table(test.keys, test.labels, probs, classes, frame_dir=frame_dir,
                                        meta=meta)
    return outputs.write_probabilities(table, url)


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
    by default `eval-<split>-<weights>.json` inside the checkpoint folder (`outputs.evaluation_url`: never
    the `results.json` training wrote), the per-video probabilities beside them
    (`outputs.probabilities_url`). Returns (results URL, results).
    """
    checkpoint_dir = checkpoint.resolve(args.checkpoint)
    cfg = _run_config(checkpoint_dir, args)
    trained = load_model(checkpoint_dir, weights, args.device, cfg=cfg)
    split = args.split or cfg.data.test_split
    url = args.out or outputs.evaluation_url(checkpoint_dir, split, weights)
    results = evaluate_test(trained.model, cfg, rank=0, world_size=1, device=trained.device,
                            num_classes=trained.num_classes, split=split, results_url=url, progress=True)
    results["meta"].update(checkpoint=checkpoint_dir, epoch=trained.epoch, weights=weights)
    metrics.write_results(results, url)
    return url, results
