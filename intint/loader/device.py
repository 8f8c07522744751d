"""The loader's work on the training device: a batch moved there (``to_device``), and keypoint clips moved by
their training maps (``apply_maps``), in torch.

With ``heatmaps_on="device"`` the workers ship clips as stored plus one affine map per clip
(``intint.pose.transforms.FusedTrainPipeline.maps``); ``apply_maps`` applies them where the batch
already is, bit for bit as the workers' NumPy ``intint.pose.keypoint_maps.apply_maps_planar``, and
``to_device`` renders the heatmaps there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from intint.loader.clip_maker import render_views
from intint.loader.config import LoaderConfig
from intint.pose.sampling import PATHWAYS
from intint.render import heatmaps

__all__ = ["apply_maps", "to_device"]


def _tensor(value: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A tensor view of an array; read-only arrays (decoded straight from shard bytes) are copied first,
    since torch cannot view them."""
    if isinstance(value, torch.Tensor):
        return value
    return torch.from_numpy(np.require(value, requirements="W"))


def apply_maps(
    keypoint: np.ndarray | torch.Tensor,
    score: np.ndarray | torch.Tensor,
    coef: np.ndarray | torch.Tensor,
    flipped: np.ndarray | torch.Tensor,
    persons: Sequence[int] | np.ndarray | torch.Tensor,
    flip_index: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``FusedTrainPipeline.maps`` to clips as cut from the video: keypoint B×K×L×V×2 (any float
    dtype; NaN/inf are absent joints) and score B×K×L×V → float32 coordinates and the score (its own
    dtype) with flipped clips' joints swapped and person slots from ``persons[i]`` on zero.

    Torch, on whatever device the keypoints are: ``to_device`` runs it on the training device
    (the workers, which hold a planar copy, use ``apply_maps_planar``). Per element ``a·x + b`` (``b0``
    where x == 0) in two float32 operations, exactly the rounding of the per-clip path; the inputs are
    never written.
    """
    kp = _tensor(keypoint)
    device = kp.device
    sc = _tensor(score).to(device)
    if kp.ndim != 5 or kp.shape[-1] != 2 or tuple(sc.shape) != tuple(kp.shape[:-1]):
        raise ValueError(f"apply_maps: expected keypoint B×K×L×V×2 and score B×K×L×V, got "
                         f"{tuple(kp.shape)} and {tuple(sc.shape)}")
    b, k, _, v, _ = kp.shape
    if len(flip_index) != v:
        raise ValueError(f"flip: flip_index has {len(flip_index)} entries for V={v} joints")
    coef = torch.as_tensor(coef, device=device, dtype=torch.float32).reshape(b, 3, 1, 1, 1, 2)
    kp = torch.nan_to_num(kp.to(torch.float32), nan=0.0, posinf=0.0, neginf=0.0)
    out = torch.where(kp == 0, coef[:, 2], kp * coef[:, 0] + coef[:, 1])
    slots = torch.arange(k, device=device) < torch.as_tensor(persons, device=device).reshape(b, 1)
    out = torch.where(slots[:, :, None, None, None], out, 0.0)  # padded slots stay absent
    turned = torch.as_tensor(flipped, device=device, dtype=torch.bool).reshape(b, 1)
    joints = torch.where(turned, torch.as_tensor(flip_index, device=device),
                         torch.arange(v, device=device))  # B×V: each clip's joint order
    out = out.gather(3, joints[:, None, None, :, None].expand(out.shape))
    return out, sc.gather(3, joints[:, None, None, :].expand(sc.shape))


def to_device(batch: dict[str, Any], device: torch.device | str, cfg: LoaderConfig) -> dict[str, Any]:
    """The batch on ``device`` in the contract layout, heatmaps float32.

    ``heatmaps_on="device"`` batches are rendered here with ``heatmaps.render_batch`` (on the GPU
    when ``device`` is one); "workers" batches are moved as float16 and cast on the device.
    """
    device = torch.device(device)
    out: dict[str, Any] = {"label": batch["label"].to(device, non_blocking=True), "key": batch["key"],
                           "skipped": batch["skipped"]}
    for pathway in PATHWAYS:
        if pathway in batch:
            out[pathway] = batch[pathway].to(device, non_blocking=True).float()
        elif f"{pathway}_kp" in batch:
            kp = batch[f"{pathway}_kp"].to(device, non_blocking=True)
            score = batch[f"{pathway}_score"].to(device, non_blocking=True)
            h, w = batch["size"]
            if f"{pathway}_map" in batch:  # training clips as cut from the videos, with their maps
                maps = batch[f"{pathway}_map"].to(device, non_blocking=True)
                persons = batch["persons"].to(device, non_blocking=True)
                flip_index = cfg.pipeline.flip_index
                kp, score = apply_maps(kp, score, maps[:, :6], maps[:, 6] != 0, persons, flip_index)
            if kp.ndim == 5:
                out[pathway] = heatmaps.render_batch(kp, score, h, w, sigma=cfg.sigma)
            else:
                out[pathway] = render_views(kp, score, (h, w), cfg.sigma, bool(batch["flip_double"]))
    return out
