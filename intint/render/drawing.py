"""Drawing the heatmaps: joint and limb patches, computed and scattered into an output canvas.

The maps follow the reference's numerics (``render.heatmaps`` says which); this module is how they are
drawn fast enough for loader workers (a 17×48×56×56 volume is 2.6 M pixels, of which ~20 k are lit per
person). Every map is drawn as small patches (a joint window is at most floor(6σ)+2 pixels wide; limb
patches are as large as the batch's largest limb window, masked to each limb's own window), computed in
float32, rounded once to the output dtype, and written with ONE ``scatter_reduce_(amax)`` into the zeroed
output. The max is what combines persons, and it also makes duplicate indices harmless (a patch clamped at
the frame edge repeats an edge pixel with the same value, or with 0). Joint maps are stored plainly instead
(a max-scatter reads each target cache line before writing it), then max-scattered again just where
patches of two persons meet. The mirrored view of ``flip_double`` is a second set of indices for the same
patch values, not a flipped copy of the volume. Where the pixels land in memory: ``render.scatter_layout``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from intint.render.scatter_layout import Canvas, Layout, row_words, scatter_max

__all__ = ["EPS", "draw_maps"]

EPS = 1e-3  # the reference's score floor: keypoints / limbs scoring below it draw nothing
_LIMB_CHUNK_ELEMENTS = 1 << 22  # limb patches are evaluated at most this many pixels at a time
# torch.threshold keeps s > t: the float32 just below EPS keeps exactly s >= float32(EPS), the reference test
_BELOW_EPS = float(np.nextafter(np.float32(EPS), np.float32(0)))
_FAR = -1e6  # where non-finite coordinates go: far outside any frame, so their windows are empty


def draw_maps(
    kp: torch.Tensor, score: torch.Tensor, canvas: Canvas, layout: Layout, height: int, width: int,
    sigma: float, limbs: tuple[tuple[int, int], ...] | None,
) -> None:
    """Draws the maps of clips kp B×M×T×V×2, score B×M×T×V (float32) into the zeroed canvas, at the
    offsets of ``layout``: joint maps, or with ``limbs`` one map per limb (non-finite joints draw no limb).
    """
    if limbs is None:
        _joint_maps(kp, score, canvas, layout, height, width, sigma)
        return
    finite = torch.isfinite(kp).all(dim=-1) & torch.isfinite(score)
    kp = torch.where(finite[..., None], kp, torch.zeros((), device=kp.device))
    score = torch.where(finite, score, torch.zeros((), device=kp.device))
    _limb_maps(kp, score, canvas, layout, height, width, sigma, limbs)


@dataclass(frozen=True)
class _JointGrid:
    """Per-(H, W, σ) constants of the joint patches (P = patch width)."""

    offsets: torch.Tensor  # 2×1×1×1 float64: -3σ, +3σ (window start and end around the centre)
    steps: torch.Tensor  # 1×P×1 float32: 0, 1, ..., P-1
    first: torch.Tensor  # 0-dim float32: 0
    last: torch.Tensor  # 2×1×1 float32: W-1, H-1
    inf: torch.Tensor  # 0-dim float32: +inf
    patch: int
    high: float  # window bounds are clamped to [-patch, high]: same pixels inside, exact in float32


@functools.lru_cache(maxsize=16)
def _joint_grid(height: int, width: int, sigma: float, device: torch.device) -> _JointGrid:
    # widest window: int(μ+3σ) - int(μ-3σ) + 1 <= floor(6σ) + 2 (the 1e-9 guards 6σ rounding just below
    # an integer)
    patch = int(math.floor(6 * sigma + 1e-9)) + 2
    f32 = {"dtype": torch.float32, "device": device}
    return _JointGrid(
        offsets=torch.tensor([-3 * sigma, 3 * sigma], dtype=torch.float64, device=device).view(2, 1, 1, 1),
        steps=torch.arange(patch, **f32).view(1, patch, 1),
        first=torch.zeros((), **f32),
        last=torch.tensor([width - 1.0, height - 1.0], **f32).view(2, 1, 1),
        inf=torch.full((), math.inf, **f32),
        patch=patch,
        high=float(max(height, width)),
    )


def _joint_patches(
    kp: torch.Tensor, score: torch.Tensor, height: int, width: int, sigma: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint patches for kp B×M×T×V×2 and score B×M×T×V (float32), N = B·M·T·V entries: pixel
    coordinates 2(x, y)×P×N (int64) and values P(y)×P(x)×N (computed in float32, rounded once to
    ``dtype``).

    The entry axis is last so every elementwise op runs over N contiguous elements (with the P = 5
    axis innermost, torch's loops spend most of their time on loop overhead). The window
    [int(μ-3σ), int(μ+3σ)] is computed in float64 (the reference's scalar maths ran in double). Patch
    pixels start at the window start and are clamped into the frame; pixels outside the window get an
    infinite distance, hence the value 0. Non-finite coordinates are moved far outside the frame and
    non-finite scores count as 0, so they draw nothing. The Gaussian is separable: the reference's
    ``exp(-(dx² + dy²) / 2 / σ²) · score`` as ``exp(-dx²/2/σ²) · exp(-dy²/2/σ²) · score``, 2P instead of
    P² exponentials per entry and no P² sums, at the cost of a few float32 ulps (at most 2.1e-6 relative to
    the reference's float32 value over 150 k random pixels; in float16 output ~1 in 10^3 lit pixels moves
    by one ulp).
    """
    grid = _joint_grid(height, width, sigma, kp.device)
    keep = torch.threshold(score.reshape(-1), _BELOW_EPS, 0.0).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    xy = kp.movedim(-1, 0).contiguous().view(2, 1, -1)  # 2(x, y)×1×N, N contiguous
    centre = xy.double().nan_to_num_(nan=_FAR, posinf=_FAR, neginf=_FAR)
    # integer-valued window bounds 2(start, end)×2(x, y)×1×N; after the clamp float32 holds them exactly
    lo, hi = (centre + grid.offsets).trunc_().clamp_(-grid.patch, grid.high).to(torch.float32).unbind(0)
    pix = (lo + grid.steps).clamp_(min=grid.first, max=grid.last)  # 2×P×N
    inside = (pix >= lo) & (pix <= hi)
    half = torch.where(inside, (pix - xy).square_(), grid.inf).div_(-2)  # -d²/2 per axis
    gauss = half.div_(sigma**2).exp_()  # per axis: exp(-d²/2σ²)
    values = torch.empty((pix.shape[1], *pix.shape[1:]), dtype=dtype, device=kp.device)
    torch.mul((gauss[1] * keep)[:, None], gauss[0], out=values)  # P(y)×P(x)×N, rounded once to dtype
    return pix.long(), values


def _joint_maps(
    kp: torch.Tensor, score: torch.Tensor, canvas: Canvas, layout: Layout, height: int, width: int,
    sigma: float,
) -> None:
    """Draws the joint maps of kp B×M×T×V×2, score B×M×T×V (float32) into the zeroed canvas."""
    pix, values = _joint_patches(kp, score, height, width, sigma, canvas.dtype)
    offset = pix * layout.xy_strides  # V×2×P×N: column and row offsets in each view
    index = (layout.joint_base + offset[:, 1, :, None]) + offset[:, 0, None]  # V×P(y)×P(x)×N
    # One person: every map (clip, frame, joint) holds one patch, whose only repeated pixels are the
    # frame-edge clamps, which carry equal values: plain stores give the max. More persons: plain stores
    # of all patches, then the max again over just the patches that meet another person's on their map
    # (the last plain store at a shared pixel is one of them). Why: a max-scatter reads every target line
    # before writing it, which costs more than plain stores on the loader's shared-memory buffers, and the
    # second pass is small and finds its lines in the cache.
    b, m = kp.shape[:2]
    rows = row_words(canvas, offset, layout) if canvas.written is not None else None
    if rows is not None:
        canvas.written.append(rows)
    scatter_max(canvas, index, values, plain=True, record=rows is None)
    if m > 1:
        meeting = _meeting_entries(pix, b, m)
        if meeting.numel():
            twice = index.view(index.shape[0], -1, index.shape[-1]).index_select(2, meeting)  # V×P²×k
            again = values.view(-1, values.shape[-1]).index_select(1, meeting)
            scatter_max(canvas, twice, again, record=False)


def _meeting_entries(pix: torch.Tensor, b: int, m: int) -> torch.Tensor:
    """The entries (of b clips × m persons × E maps) whose patch meets another person's on the same map,
    from the clamped pixel coordinates ``pix`` 2(x, y)×P×N: their column and row ranges both overlap
    (patches that share a pixel always do)."""
    first, last = pix[:, 0].view(2, b, m, -1), pix[:, -1].view(2, b, m, -1)  # 2(x, y)×b×m×E
    found = torch.zeros(first.shape[1:], dtype=torch.bool, device=pix.device)  # b×m×E
    for one in range(1, m):
        for other in range(one):
            meet = ((first[:, :, one] <= last[:, :, other]) & (first[:, :, other] <= last[:, :, one])).all(0)
            found[:, one] |= meet
            found[:, other] |= meet
    return found.view(-1).nonzero().view(-1)


def _window(lo: torch.Tensor, hi: torch.Tensor, radius: float, size: int) -> tuple[torch.Tensor, ...]:
    """The reference's window [max(int(lo - r), 0), min(int(hi + r) + 1, size)) per entry, as int64.

    Computed in float64 (the reference's scalar maths ran in double) with truncation toward zero, and
    clamped before the integer cast so absurd coordinates cannot overflow.
    """
    start = torch.trunc(lo.double() - radius).clamp_(0, size)
    stop = (torch.trunc(hi.double() + radius) + 1).clamp_(0, size)
    return start.long(), stop.long()


def _limb_maps(
    kp: torch.Tensor,
    score: torch.Tensor,
    canvas: Canvas,
    layout: Layout,
    height: int,
    width: int,
    sigma: float,
    limbs: tuple[tuple[int, int], ...],
) -> None:
    """Draws the limb maps of kp B×M×T×V×2, score B×M×T×V (finite, float32) into the zeroed canvas.

    Each limb is evaluated on a patch as large as the largest window in the batch, in chunks that
    bound the memory when a limb spans the frame.
    """
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
    if not bool(live.any()):
        return
    px = int((x1 - x0)[live].max())
    py = int((y1 - y0)[live].max())
    value = torch.where(short, s_a, s_min) * live
    idx = torch.nonzero(live).squeeze(1)  # only live entries are evaluated
    chunk = max(1, _LIMB_CHUNK_ELEMENTS // (px * py))
    steps_x, steps_y = torch.arange(px, device=device), torch.arange(py, device=device)
    for lo_i in range(0, idx.numel(), chunk):
        sel = idx[lo_i : lo_i + chunk]
        patch = _limb_patch(
            a[sel], c[sel], d2_ac[sel], short[sel], value[sel], x0[sel], y0[sel], px, py, sigma
        )
        patch.nan_to_num_(nan=0.0)  # endpoints beyond ~1e19 px overflow the float32 distances to inf - inf
        cols, rows = x0[sel, None] + steps_x, y0[sel, None] + steps_y
        patch.mul_((rows < y1[sel, None]).to(torch.float32)[:, :, None])
        patch.mul_((cols < x1[sel, None]).to(torch.float32)[:, None, :])
        # pixels past the frame edge are outside the window (value 0): clamping them onto the edge
        # pixel only adds a max with 0 there
        rows = rows.clamp_(max=height - 1)[:, :, None] * layout.xy_strides[:, 1:]  # V×n×Py×1
        cols = cols.clamp_(max=width - 1)[:, None, :] * layout.xy_strides[:, :1]  # V×n×1×Px
        scatter_max(canvas, (layout.base[:, sel, None, None] + rows) + cols, patch)  # V×n×Py×Px


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
