"""Joint and limb heatmap volumes from keypoint clips (GeneratePoseTarget, spec §5), in torch.

One implementation serves both places the loader can render: in CPU loader workers (``render``, one
clip) and on the training device from a batch of keypoint clips (``render_batch``). Everything is
batched over clips × persons × frames × joints; there is no Python loop over any of them.

Numerics follow the reference so the golden volumes reproduce (values to float32 rounding, non-zero
count exactly):
* joint map: ``exp(-((x-μx)² + (y-μy)²) / 2 / σ²) · score`` on the pixels of the ±3σ window, whose
  bounds are truncated toward zero with ``int()`` like the reference (so a joint just left of the
  frame can still light column 0); scores below 1e-3 draw nothing; persons combine by maximum;
* limb map: squared distance to the segment a-b, value ``min(score_a, score_b)``, window = the
  endpoints' bounding box ±3σ, a joint map at a (with score_a) when |ab|² < 1;
* ``flip_double`` (test time): a second view mirrored as pixel column x → W-1-x with left/right
  channels swapped (the training Flip uses W - x on keypoints instead, spec §9 item 21).

Joint maps are drawn as small patches (the window is at most floor(6σ)+2 pixels wide) scattered into
the volume with an element-wise max. Limb windows vary in size, so limbs use patches as large as the
batch's largest limb window, masked to each limb's own window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from intint import skeleton

EPS = 1e-3  # the reference's score floor: keypoints / limbs scoring below it draw nothing
_LIMB_CHUNK_ELEMENTS = 1 << 22  # limb patches are evaluated at most this many pixels at a time

ArrayLike = np.ndarray | torch.Tensor
Limbs = Sequence[tuple[int, int]] | bool | None


def _as_tensor(value: ArrayLike, field: str, device: torch.device | None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        tensor = value
    elif isinstance(value, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(value))
    else:
        raise TypeError(f"field {field!r}: expected a NumPy array or a torch tensor, got {type(value)}")
    if device is not None:
        tensor = tensor.to(device)
    return tensor.to(torch.float32)


def _resolve_limbs(limbs: Limbs, num_joints: int) -> tuple[tuple[int, int], ...] | None:
    if limbs is None or limbs is False:
        return None
    pairs = skeleton.LIMBS if limbs is True else tuple((int(a), int(b)) for a, b in limbs)
    if not pairs:
        raise ValueError("limbs: the limb list is empty")
    for a, b in pairs:
        if not (0 <= a < num_joints and 0 <= b < num_joints):
            raise ValueError(f"limbs: limb ({a}, {b}) refers to a joint outside 0..{num_joints - 1}")
    return pairs


def limb_flip_index(limbs: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    """For each limb, the limb that takes its place after a horizontal flip (joints mapped through
    ``skeleton.FLIP_INDEX``, either orientation). Equals ``skeleton.LIMB_FLIP_INDEX`` for the default list.
    """
    position = {frozenset(limb): i for i, limb in enumerate(limbs)}
    order = []
    for a, b in limbs:
        mirrored = frozenset((skeleton.FLIP_INDEX[a], skeleton.FLIP_INDEX[b]))
        if mirrored not in position:
            raise ValueError(f"limbs: limb ({a}, {b}) has no mirror image in the limb list (flip_double)")
        order.append(position[mirrored])
    return tuple(order)


def _window(lo: torch.Tensor, hi: torch.Tensor, radius: float, size: int) -> tuple[torch.Tensor, ...]:
    """The reference's window [max(int(lo - r), 0), min(int(hi + r) + 1, size)) per entry, as int64.

    Computed in float64 (the reference's scalar maths ran in double) with truncation toward zero, and
    clamped before the integer cast so absurd coordinates cannot overflow.
    """
    start = torch.trunc(lo.double() - radius).clamp_(0, size)
    stop = (torch.trunc(hi.double() + radius) + 1).clamp_(0, size)
    return start.long(), stop.long()


def _scatter_max(
    out: torch.Tensor,
    base: torch.Tensor,
    x0: torch.Tensor,
    y0: torch.Tensor,
    width: int,
    height: int,
    values: torch.Tensor,
) -> None:
    """Max patches N×Py×Px with top-left pixels (x0, y0) into ``out`` (flat), at offsets ``base`` (N).

    Entries to skip must carry 0 in ``values``: they are clamped onto a valid pixel, where a max with 0
    changes nothing because the volume starts at 0 and every value is >= 0.
    """
    _, py, px = values.shape
    cols = (x0[:, None] + torch.arange(px, device=x0.device)).clamp_(max=width - 1)
    rows = (y0[:, None] + torch.arange(py, device=y0.device)).clamp_(max=height - 1)
    index = (base[:, None] + rows * width)[:, :, None] + cols[:, None, :]
    out.scatter_reduce_(0, index.view(-1), values.reshape(-1), reduce="amax", include_self=True)


def _volume_base(
    b: int, m: int, t: int, k: int, height: int, width: int, device: torch.device
) -> torch.Tensor:
    """Flat offset of frame t of channel k of clip b in a B×K×T×H×W volume, for entries ordered B×M×T×K."""
    bi = torch.arange(b, device=device).view(b, 1, 1, 1)
    ti = torch.arange(t, device=device).view(1, 1, t, 1)
    ki = torch.arange(k, device=device).view(1, 1, 1, k)
    return (((bi * k + ki) * t + ti) * (height * width)).expand(b, m, t, k).reshape(-1)


def _joint_maps(kp: torch.Tensor, score: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """Joint volumes B×V×T×H×W from kp B×M×T×V×2 and score B×M×T×V (finite, float32)."""
    b, m, t, v, _ = kp.shape
    device = kp.device
    patch = int(math.floor(6 * sigma)) + 2  # widest possible window
    mu = kp.reshape(-1, 2)
    mu_x, mu_y = mu[:, 0], mu[:, 1]
    x0, x1 = _window(mu_x, mu_x, 3 * sigma, width)
    y0, y1 = _window(mu_y, mu_y, 3 * sigma, height)
    steps = torch.arange(patch, device=device)
    xs, ys = x0[:, None] + steps, y0[:, None] + steps  # N×P
    dx2 = (xs.to(torch.float32) - mu_x[:, None]).square_()
    dy2 = (ys.to(torch.float32) - mu_y[:, None]).square_()
    values = (dy2[:, :, None] + dx2[:, None, :]).neg_().div_(2).div_(sigma**2).exp_()  # N×P(y)×P(x)
    keep = (score.reshape(-1) >= EPS).to(torch.float32)
    in_x = (xs < x1[:, None]).to(torch.float32).mul_((score.reshape(-1) * keep)[:, None])
    in_y = (ys < y1[:, None]).to(torch.float32)
    values.mul_(in_y[:, :, None]).mul_(in_x[:, None, :])
    out = torch.zeros(b * v * t * height * width, dtype=torch.float32, device=device)
    _scatter_max(out, _volume_base(b, m, t, v, height, width, device), x0, y0, width, height, values)
    return out.view(b, v, t, height, width)


def _limb_maps(
    kp: torch.Tensor,
    score: torch.Tensor,
    height: int,
    width: int,
    sigma: float,
    limbs: tuple[tuple[int, int], ...],
) -> torch.Tensor:
    """Limb volumes B×L×T×H×W from kp B×M×T×V×2 and score B×M×T×V (finite, float32).

    Each limb is evaluated on a patch as large as the largest window in the batch, in chunks that
    bound the memory when a limb spans the frame.
    """
    b, m, t, _, _ = kp.shape
    n_limbs = len(limbs)
    device = kp.device
    ia = torch.tensor([i for i, _ in limbs], device=device)
    ib = torch.tensor([j for _, j in limbs], device=device)
    a, c = kp[:, :, :, ia].reshape(-1, 2), kp[:, :, :, ib].reshape(-1, 2)
    s_a, s_c = score[:, :, :, ia].reshape(-1), score[:, :, :, ib].reshape(-1)
    s_min = torch.minimum(s_a, s_c)
    d2_ac = (a - c).square().sum(dim=1)
    short = d2_ac < 1  # |ab|² < 1: the reference draws a joint map at a (with a's score) instead
    lo = torch.where(short[:, None], a, torch.minimum(a, c))
    hi = torch.where(short[:, None], a, torch.maximum(a, c))
    x0, x1 = _window(lo[:, 0], hi[:, 0], 3 * sigma, width)
    y0, y1 = _window(lo[:, 1], hi[:, 1], 3 * sigma, height)
    live = (s_min >= EPS) & (x1 > x0) & (y1 > y0)
    out = torch.zeros(b * n_limbs * t * height * width, dtype=torch.float32, device=device)
    if not bool(live.any()):
        return out.view(b, n_limbs, t, height, width)
    px = int((x1 - x0)[live].max())
    py = int((y1 - y0)[live].max())
    base = _volume_base(b, m, t, n_limbs, height, width, device)
    value = torch.where(short, s_a, s_min) * live
    idx = torch.nonzero(live).squeeze(1)  # only live entries are evaluated
    chunk = max(1, _LIMB_CHUNK_ELEMENTS // (px * py))
    for lo_i in range(0, idx.numel(), chunk):
        sel = idx[lo_i : lo_i + chunk]
        patch = _limb_patch(
            a[sel], c[sel], d2_ac[sel], short[sel], value[sel], x0[sel], y0[sel], px, py, sigma
        )
        in_x = ((x0[sel, None] + torch.arange(px, device=device)) < x1[sel, None]).to(torch.float32)
        in_y = ((y0[sel, None] + torch.arange(py, device=device)) < y1[sel, None]).to(torch.float32)
        patch.mul_(in_y[:, :, None]).mul_(in_x[:, None, :])
        _scatter_max(out, base[sel], x0[sel], y0[sel], width, height, patch)
    return out.view(b, n_limbs, t, height, width)


def _limb_patch(
    a: torch.Tensor,
    c: torch.Tensor,
    d2_ac: torch.Tensor,
    short: torch.Tensor,
    value: torch.Tensor,
    x0: torch.Tensor,
    y0: torch.Tensor,
    px: int,
    py: int,
    sigma: float,
) -> torch.Tensor:
    """Limb values exp(-d²/2σ²)·value on N patches Py×Px from (x0, y0); d = distance to segment a-c.

    Distances are float32 like the reference; the exp and the product run in float64 and then round
    to float32, as in the reference: far pixels of a long limb's window land in the float32 denormal
    range, and only the double path decides which of them become exactly 0.
    """
    xs = (x0[:, None] + torch.arange(px, device=a.device)).to(torch.float32)[:, None, :]  # N×1×Px
    ys = (y0[:, None] + torch.arange(py, device=a.device)).to(torch.float32)[:, :, None]  # N×Py×1
    ax, ay = a[:, 0, None, None], a[:, 1, None, None]
    cx, cy = c[:, 0, None, None], c[:, 1, None, None]
    d2_a = (xs - ax).square() + (ys - ay).square()
    d2_c = (xs - cx).square() + (ys - cy).square()
    ab = torch.where(short, torch.ones_like(d2_ac), d2_ac)[:, None, None]  # no division by 0
    coeff = (d2_a - d2_c + ab) / 2.0 / ab
    d2_line = (xs - (ax + coeff * (cx - ax))).square() + (ys - (ay + coeff * (cy - ay))).square()
    d2 = torch.where(coeff <= 0, d2_a, torch.where(coeff >= 1, d2_c, d2_line))
    d2 = torch.where(short[:, None, None], d2_a, d2)
    scaled = torch.exp(d2.double().neg_().div_(2.0).div_(sigma**2)).mul_(value.double()[:, None, None])
    return scaled.to(torch.float32)


def render_batch(
    keypoint: ArrayLike,
    keypoint_score: ArrayLike,
    height: int,
    width: int,
    *,
    sigma: float = 0.6,
    limbs: Limbs = None,
    flip_double: bool = False,
) -> torch.Tensor:
    """Heatmap volumes for a batch of clips: keypoint B×M×T×V×2, score B×M×T×V → B×K×T×H×W float32.

    K = V joint maps, or one map per limb when ``limbs`` is given (``True`` = ``skeleton.LIMBS``).
    With ``flip_double`` K doubles: the K channels of the clip, then the K channels of its mirror
    image. Runs on the device of a tensor input (NumPy inputs render on the CPU). Coordinates are in
    pixels of the H×W frame; non-finite coordinates draw nothing.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"render: height and width must be positive, got {(height, width)}")
    if sigma <= 0:
        raise ValueError(f"render: sigma must be positive, got {sigma}")
    device = keypoint.device if isinstance(keypoint, torch.Tensor) else None
    kp = _as_tensor(keypoint, "keypoint", device)
    score = _as_tensor(keypoint_score, "keypoint_score", kp.device)
    if kp.ndim != 5 or kp.shape[-1] != 2:
        raise ValueError(f"field 'keypoint': expected B×M×T×V×2, got shape {tuple(kp.shape)}")
    if tuple(score.shape) != tuple(kp.shape[:-1]):
        raise ValueError(
            f"field 'keypoint_score': expected shape {tuple(kp.shape[:-1])}, got {tuple(score.shape)}"
        )
    finite = torch.isfinite(kp).all(dim=-1) & torch.isfinite(score)
    kp = torch.where(finite[..., None], kp, torch.zeros((), device=kp.device))
    score = torch.where(finite, score, torch.zeros((), device=kp.device))

    pairs = _resolve_limbs(limbs, kp.shape[3])
    if pairs is None:
        maps = _joint_maps(kp, score, height, width, sigma)
        order = skeleton.FLIP_INDEX
    else:
        maps = _limb_maps(kp, score, height, width, sigma, pairs)
        order = skeleton.LIMB_FLIP_INDEX if pairs == skeleton.LIMBS else limb_flip_index(pairs)
    if not flip_double:
        return maps
    if len(order) != maps.shape[1]:
        raise ValueError(f"render: flip_double needs the COCO-17 layout, got {maps.shape[1]} channels")
    mirrored = maps.flip(-1)[:, torch.tensor(order, device=maps.device)]
    return torch.cat([maps, mirrored], dim=1)


def render(
    keypoint: ArrayLike,
    keypoint_score: ArrayLike,
    height: int,
    width: int,
    *,
    sigma: float = 0.6,
    limbs: Limbs = None,
    flip_double: bool = False,
) -> torch.Tensor:
    """Heatmap volume of one clip: keypoint M×T×V×2, score M×T×V → K×T×H×W float32 (``render_batch``
    on a batch of one; see there for K, ``limbs`` and ``flip_double``).
    """
    if keypoint.ndim != 4:
        raise ValueError(f"field 'keypoint': expected M×T×V×2, got shape {tuple(keypoint.shape)}")
    if keypoint_score.ndim != 3:
        raise ValueError(f"field 'keypoint_score': expected M×T×V, got shape {tuple(keypoint_score.shape)}")
    out = render_batch(
        keypoint[None], keypoint_score[None], height, width, sigma=sigma, limbs=limbs, flip_double=flip_double
    )
    return out[0]
