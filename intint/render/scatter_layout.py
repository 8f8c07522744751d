"""Where heatmap pixels land: the output's memory layout, the flat scatter view of it, and the records of
what a render drew (with their reset, ``clear_written``). Shared by the joint and limb drawing in
``render.heatmaps``; kept apart because it is about memory, not about the maps.

On the CPU the scatter runs on the output's bits viewed as same-width integers: for values >= 0 the
integer order of IEEE bits is the float order, and the integer kernels are several times faster than the
float16 ones.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch

# Output dtypes, and the integer type of the same width whose order matches theirs for values >= 0
BITS = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
         torch.float64: torch.int64}
# Devices whose scatter runs on the integer view (CPU: integer kernels are several times faster than the
# float16 ones); elsewhere scatter_reduce_(amax) runs on the floats themselves, with the same result.
INTEGER_SCATTER_DEVICES = ("cpu",)


class Written(NamedTuple):
    """One render's record of where it may have drawn: element offsets ``index`` from storage offset
    ``offset``, or with ``words`` > 0, offsets of 8-byte words of the storage (``offset`` 0), each the
    first of a run of ``words`` words (a patch row: 2 words hold any 5 float16 pixels)."""

    offset: int
    index: torch.Tensor
    words: int = 0


@dataclass(frozen=True)
class Layout:
    """Where the entries (clip, person, frame, channel), in that order, land in the output's memory.

    ``base`` is V×N: the flat offset of pixel (0, 0) of each entry's frame in each view (view 1, the
    mirror image, already includes the W-1 column shift and the swapped channel). ``xy_strides`` is
    V×2×1×1: (stride_x, stride_y) in view 0, (-stride_x, stride_y) in view 1, so pixel (col, row) of an
    entry lands at ``base + col·xy_strides[v, 0] + row·xy_strides[v, 1]``.
    """

    base: torch.Tensor
    xy_strides: torch.Tensor
    joint_base: torch.Tensor  # ``base`` as V×1×1×N, for the joint index V×P(y)×P(x)×N
    adjacent_columns: bool  # |stride_x| = 1: a patch row is a run of adjacent elements


@functools.lru_cache(maxsize=64)
def layout_of(
    lead: tuple[tuple[int, ...], int, int, int],
    strides: tuple[int, ...],
    width: int,
    mirror: tuple[int, ...] | None,
    device: torch.device,
) -> Layout:
    """Offsets for (clip axes…)×M×T×C entries in an output (clip axes…)×(V·C)×T×H×W with the given
    strides (cached: the loader renders the same shape over and over, and these are a dozen tiny tensor
    ops). The clip axes flatten to B clips in row-major order."""
    clips, m, t, c = lead
    sk, st, sy, sx = strides[-4:]
    clip = torch.zeros(1, dtype=torch.int64, device=device)
    for size, stride in zip(clips, strides[: len(clips)], strict=True):
        clip = (clip[:, None] + torch.arange(size, device=device) * stride).view(-1)
    b = clip.numel()
    clip = clip.view(b, 1, 1, 1)
    frame = torch.arange(t, device=device).view(1, 1, t, 1) * st
    channel = torch.arange(c, device=device).view(1, 1, 1, c)
    views = [(clip + frame + channel * sk).expand(b, m, t, c).reshape(-1)]
    steps = [(sx, sy)]
    if mirror is not None:
        swapped = torch.argsort(torch.tensor(mirror, device=device)).view(1, 1, 1, c)  # channel k → slot j
        views.append((clip + frame + (c + swapped) * sk + (width - 1) * sx).expand(b, m, t, c).reshape(-1))
        steps.append((-sx, sy))
    xy_strides = torch.tensor(steps, dtype=torch.int64, device=device).view(-1, 2, 1, 1)
    base = torch.stack(views)
    return Layout(base, xy_strides, base[:, None, None], abs(sx) == 1)


@dataclass(frozen=True)
class Canvas:
    """The output as the scatter sees it: a flat view over its memory, viewed as ``bits`` on the CPU."""

    flat: torch.Tensor
    dtype: torch.dtype  # the output's float dtype
    bits: torch.dtype | None  # the same-width integer dtype the flat view has (CPU), else None
    offset: int  # the storage offset of ``flat[0]``
    written: list[Written] | None  # where to record the elements drawn, if anywhere

    @staticmethod
    def of(out: torch.Tensor, written: list[Written] | None = None) -> Canvas:
        span = 1 + sum((size - 1) * stride for size, stride in zip(out.shape, out.stride(), strict=True))
        flat = out.as_strided((span,), (1,))
        bits = BITS[out.dtype] if out.device.type in INTEGER_SCATTER_DEVICES else None
        return Canvas(flat if bits is None else flat.view(bits), out.dtype, bits, out.storage_offset(),
                       written)


def scatter_max(canvas: Canvas, index: torch.Tensor, values: torch.Tensor, *, plain: bool = False,
                 record: bool = True) -> None:
    """Max float values >= 0 (broadcast to the index's shape V×...) into the canvas at ``index``.

    Values are rounded to the output dtype first, unless they come in it (rounding is monotonic, so the
    max of rounded values is the rounded max). With ``canvas.written`` the storage offsets drawn are
    recorded there.
    ``plain``: the caller guarantees that entries sharing an index carry equal values, so plain stores
    (``scatter_``, faster than the ``amax`` reduction) give the same canvas. ``record=False``:
    the caller knows these elements are recorded already.
    """
    flat_index = index.reshape(-1)
    if record and canvas.written is not None:  # the index as is, with its base: no copy of ~650 KB per sample
        canvas.written.append(Written(canvas.offset, flat_index))
    src = values.to(canvas.dtype)  # no copy when already the output dtype
    if canvas.bits is not None:
        src = src.view(canvas.bits)
    if src.numel() != index.numel():
        src = src.expand(index.shape)
    if plain:
        canvas.flat.scatter_(0, flat_index, src.reshape(-1))
    else:
        canvas.flat.scatter_reduce_(0, flat_index, src.reshape(-1), reduce="amax", include_self=True)


def row_words(canvas: Canvas, offset: torch.Tensor, layout: Layout) -> Written | None:
    """The record of a joint render as patch rows: the storage word holding each row's lowest element
    and how many words cover any row, when columns are adjacent elements (|stride_x| = 1). Why: a fifth
    of the offsets to keep and read back, and ``clear_written`` zeroes two 8-byte words per row instead
    of five 2-byte elements: the same cache lines, in less time. ``offset`` is the
    V×2×P×N column and row offsets of ``drawing._joint_maps``."""
    storage = canvas.flat.untyped_storage()
    if not layout.adjacent_columns or storage.nbytes() % 8 or storage.data_ptr() % 8:
        return None
    per = 8 // canvas.flat.element_size()  # elements per word
    cols = offset[:, 0]  # V×P×N, monotonic along P
    lowest = torch.minimum(cols[:, :1], cols[:, -1:])  # V×1×N: each row's lowest column offset
    first = (layout.joint_base[:, 0, 0] + canvas.offset)[:, None] + offset[:, 1] + lowest  # V×P×N elements
    span = cols.shape[1]  # a row covers at most this many elements from its lowest
    return Written(0, first.div_(per, rounding_mode="floor").view(-1), (per + span - 2) // per + 1)


def clear_written(buffer: torch.Tensor, written: list[Written]) -> None:
    """Zero the elements of ``buffer``'s storage that renders recorded in ``written`` (and empty it), so
    the buffer can be rendered into again with ``clear=False``. ``buffer`` is any tensor over that storage.
    Joint renders record whole 8-byte words: the other elements sharing a word with a drawn one are
    zeroed too, so a buffer cleared this way must hold nothing but the renders (a loader's ring buffer).

    One scatter of zeros per recorded render, on the flat storage from that render's base offset:
    concatenating the records first would copy megabytes of indices per training batch, and
    ``index_fill_`` (or a scalar ``scatter_``) runs slower than ``scatter_`` from a zero tensor."""
    if not written:
        return
    storage = buffer.untyped_storage()
    elements = storage.nbytes() // buffer.element_size()
    flat = torch.empty(0, dtype=buffer.dtype, device=buffer.device).set_(storage, 0, (elements,), (1,))
    bits = BITS.get(flat.dtype) if flat.device.type in INTEGER_SCATTER_DEVICES else None
    flat = flat if bits is None else flat.view(bits)
    words = torch.empty(0, dtype=torch.int64, device=buffer.device).set_(
        storage, 0, (storage.nbytes() // 8,), (1,))
    most = max(record.index.numel() for record in written)
    for offset, index, run in written:
        if not run:
            flat[offset:].scatter_(0, index, _zeros(most, flat.dtype, flat.device)[: index.numel()])
            continue
        if index.numel() and int(index.max()) + run > words.numel():  # a run past the storage's last word
            index = index.clamp(max=words.numel() - run)  # (its elements lie in the words below)
        for k in range(run):
            words[k:].scatter_(0, index, _zeros(most, torch.int64, words.device)[: index.numel()])
    written.clear()


_ZEROS: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


def _zeros(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """At least ``n`` zeros of ``dtype`` on ``device``, one growing tensor per kind (never written)."""
    have = _ZEROS.get((dtype, device))
    if have is None or have.numel() < n:
        have = _ZEROS[(dtype, device)] = torch.zeros(max(n, 1 << 16), dtype=dtype, device=device)
    return have
