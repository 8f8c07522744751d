"""Joint and limb heatmap volumes from keypoint clips (GeneratePoseTarget, docs/method.md §5), in torch.

One implementation serves both places the loader can render: in CPU loader workers (``render``, one
clip) and on the training device from a batch of keypoint clips (``render_batch``). Everything is
batched over clips × persons × frames × joints; there is no Python loop over any of them.

Numerics follow the reference so the golden volumes reproduce (values to a few float32 ulps, non-zero
count exactly):
* joint map: ``exp(-((x-μx)² + (y-μy)²) / 2 / σ²) · score`` on the pixels of the ±3σ window, whose
  bounds are truncated toward zero with ``int()`` like the reference (so a joint just left of the
  frame can still light column 0); scores below 1e-3 draw nothing; persons combine by maximum. It is
  evaluated separably, as a product of per-axis exponentials: a few float32 ulps from the reference's
  value (the non-zero count is exact);
* limb map: squared distance to the segment a-b, value ``min(score_a, score_b)``, window = the
  endpoints' bounding box ±3σ, a joint map at a (with score_a) when |ab|² < 1;
* ``flip_double`` (test time): a second view mirrored as pixel column x → W-1-x with left/right
  channels swapped (the training Flip uses W - x on keypoints instead, docs/method.md §9 item 21).

This module checks a request and prepares its output; ``render.drawing`` draws the maps as small patches
and ``render.scatter_layout`` places them in the output's memory. The output can be the caller's tensor
(``out=``, e.g. a slice of a shared-memory batch buffer, any strides) in float16 / bfloat16 / float32 /
float64; each equals the float32 volume rounded to that dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypedDict

import numpy as np
import torch

from intint.pose import skeleton
from intint.render.drawing import EPS, draw_maps
from intint.render.scatter_layout import BITS, Canvas, Written, layout_of
from intint.render.scatter_layout import (
    clear_written as clear_written,  # part of the render API (``written=``)
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["EPS", "Limbs", "RenderOptions", "clear_written", "limb_flip_index", "render", "render_batch"]

ArrayLike = np.ndarray | torch.Tensor
Limbs = Sequence[tuple[int, int]] | bool | None


class RenderOptions(TypedDict, total=False):
    """The keyword options ``render`` passes on to ``render_batch`` (see there), all but ``out``."""

    sigma: float
    limbs: Limbs
    flip_double: bool
    dtype: torch.dtype | None
    clear: bool
    written: list[Written] | None


def _as_tensor(value: ArrayLike, field: str, device: torch.device | None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        tensor = value
    elif isinstance(value, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(value))
    else:
        raise TypeError(f"field {field!r}: expected a NumPy array or a torch tensor, got {type(value)}")
    if device is not None and tensor.device != device:
        tensor = tensor.to(device)
    return tensor if tensor.dtype == torch.float32 else tensor.to(torch.float32)


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


# ------------------------------------------------------------------------------------------ the API


def render_batch(
    keypoint: ArrayLike,
    keypoint_score: ArrayLike,
    height: int,
    width: int,
    *,
    sigma: float = 0.6,
    limbs: Limbs = None,
    flip_double: bool = False,
    dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None,
    clear: bool = True,
    written: list[Written] | None = None,
) -> torch.Tensor:
    """Heatmap volumes for a batch of clips: keypoint B×M×T×V×2, score B×M×T×V → B×K×T×H×W (B may be
    several clip axes, e.g. pathways × clips: any leading axes before M are clips).

    K = V joint maps, or one map per limb when ``limbs`` is given (``True`` = ``skeleton.LIMBS``).
    With ``flip_double`` K doubles: the K channels of the clip, then the K channels of its mirror
    image. Coordinates are in pixels of the H×W frame; non-finite coordinates draw nothing.

    ``dtype`` (default float32; float16, bfloat16 or float64) is the output dtype: the float32 volume
    rounded once, e.g. float16 for a worker → main-process hand-off at half the bytes. ``out`` renders
    into the caller's tensor instead (shape B×K×T×H×W, any strides, e.g. a slice of a shared-memory
    batch buffer; its dtype is the output dtype); it is overwritten entirely and returned. Runs on the
    device of ``out``, else of a tensor input (NumPy inputs without ``out`` render on the CPU).

    Re-rendering into a recycled buffer without zeroing it all (``clear=False``, with ``out``): the
    caller promises ``out`` is already zero, e.g. because it reset just the elements the last render
    wrote. ``written``, a list, receives a record per call of every element of ``out``'s storage it
    may have made non-zero (a base offset and int64 offsets from it, duplicates possible);
    ``clear_written`` resets them. Why: a batch of volumes is ~99 % zeros and larger than the CPU
    caches, so zeroing it whole costs as much memory traffic as everything else a loader worker does
    per clip.
    """
    _check_request(height, width, sigma, clear=clear, out=out)
    dtype, device = _output_dtype(keypoint, dtype, out)
    kp, score = _clip_tensors(keypoint, keypoint_score, device)
    clips = tuple(kp.shape[:-4])
    m, t, v, _ = kp.shape[-4:]
    kp, score = kp.reshape(-1, m, t, v, 2), score.reshape(-1, m, t, v)
    pairs = _resolve_limbs(limbs, v)
    channels = v if pairs is None else len(pairs)
    mirror = _mirror_channels(pairs, channels) if flip_double else None
    shape = (*clips, channels * (2 if flip_double else 1), t, height, width)
    out = _output(out, shape, dtype, kp.device, clear)
    if out.numel() == 0 or m == 0:
        return out
    layout = layout_of((clips, m, t, channels), tuple(out.stride()), width, mirror, kp.device)
    draw_maps(kp, score, Canvas.of(out, written), layout, height, width, sigma, pairs)
    return out


def render(
    keypoint: ArrayLike,
    keypoint_score: ArrayLike,
    height: int,
    width: int,
    *,
    out: torch.Tensor | None = None,
    **options: Unpack[RenderOptions],
) -> torch.Tensor:
    """Heatmap volume of one clip: keypoint M×T×V×2, score M×T×V → K×T×H×W (``render_batch`` on a
    batch of one; see there for K, ``out`` and the ``options`` ``sigma``, ``limbs``, ``flip_double``,
    ``dtype``, ``clear`` and ``written``, here K×T×H×W).
    """
    if keypoint.ndim != 4:
        raise ValueError(f"field 'keypoint': expected M×T×V×2, got shape {tuple(keypoint.shape)}")
    if keypoint_score.ndim != 3:
        raise ValueError(f"field 'keypoint_score': expected M×T×V, got shape {tuple(keypoint_score.shape)}")
    batch = render_batch(keypoint[None], keypoint_score[None], height, width,
                         out=None if out is None else out[None], **options)
    return batch[0] if out is None else out


# ------------------------------------------------------------------------------------------ steps


def _check_request(height: int, width: int, sigma: float, *, clear: bool, out: torch.Tensor | None) -> None:
    if not clear and out is None:
        raise ValueError("render: clear=False needs out= (a fresh output is always zeroed)")
    if height <= 0 or width <= 0:
        raise ValueError(f"render: height and width must be positive, got {(height, width)}")
    if sigma <= 0:
        raise ValueError(f"render: sigma must be positive, got {sigma}")


def _output_dtype(keypoint: ArrayLike, dtype: torch.dtype | None,
                  out: torch.Tensor | None) -> tuple[torch.dtype, torch.device | None]:
    """The output dtype and the device to render on (None: where NumPy inputs land, the CPU)."""
    if out is not None:
        if dtype is not None and dtype != out.dtype:
            raise ValueError(f"field 'out': dtype {out.dtype} differs from dtype={dtype}")
        dtype, device = out.dtype, out.device
    else:
        dtype = torch.float32 if dtype is None else dtype
        device = keypoint.device if isinstance(keypoint, torch.Tensor) else None
    if dtype not in BITS:
        raise ValueError(f"render: output dtype must be one of {sorted(map(str, BITS))}, got {dtype}")
    return dtype, device


def _clip_tensors(keypoint: ArrayLike, keypoint_score: ArrayLike,
                  device: torch.device | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The clips as float32 tensors on ``device``, checked to be (clip axes…)×M×T×V×2 and ×M×T×V."""
    kp = _as_tensor(keypoint, "keypoint", device)
    score = _as_tensor(keypoint_score, "keypoint_score", kp.device)
    if kp.ndim < 5 or kp.shape[-1] != 2:
        raise ValueError(f"field 'keypoint': expected B×M×T×V×2, got shape {tuple(kp.shape)}")
    if tuple(score.shape) != tuple(kp.shape[:-1]):
        raise ValueError(
            f"field 'keypoint_score': expected shape {tuple(kp.shape[:-1])}, got {tuple(score.shape)}"
        )
    return kp, score


def _mirror_channels(pairs: tuple[tuple[int, int], ...] | None, channels: int) -> tuple[int, ...]:
    """For ``flip_double``: the channel each channel's mirror image is drawn from."""
    mirror = skeleton.FLIP_INDEX if pairs is None else (
        skeleton.LIMB_FLIP_INDEX if pairs == skeleton.LIMBS else limb_flip_index(pairs))
    if len(mirror) != channels:
        raise ValueError(f"render: flip_double needs the COCO-17 layout, got {channels} channels")
    return mirror


def _output(out: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
            clear: bool) -> torch.Tensor:
    """A zeroed output of ``shape``: a new one, or the caller's ``out`` checked (and zeroed if ``clear``)."""
    if out is None:
        return torch.zeros(shape, dtype=dtype, device=device)
    if tuple(out.shape) != shape:
        raise ValueError(f"field 'out': expected shape {shape}, got {tuple(out.shape)}")
    if any(stride <= 0 for size, stride in zip(out.shape, out.stride(), strict=True) if size > 1):
        raise ValueError(f"field 'out': strides {out.stride()} overlap (an expanded tensor?)")
    if clear:
        out.zero_()
    return out
