"""The loader's work on the training device: keypoint clips moved by their training maps (torch).

With ``heatmaps_on="device"`` the workers ship clips as stored plus one affine map per clip
(``intint.pose.transforms.FusedTrainPipeline.maps``); ``apply_maps`` applies them where the batch
already is, bit for bit as the workers' NumPy ``intint.pose.keypoint_maps.apply_maps_planar``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


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

    Torch, on whatever device the keypoints are: ``data.to_device`` runs it on the training device
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
