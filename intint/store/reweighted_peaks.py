"""JBA_weighted peaks for custom weights, recomputed from the curves a shard set already stores.

Why: the paper weights the JBA ensemble by the *normalised two-pathway validation accuracies* of the
J, B and A runs (docs/method.md §2.5, §2.7), which exist only after those runs have trained; the shard builder
precomputed ``JBA_weighted`` with fixed weights (the authors' θ by default). Rebuilding the shards for
new weights would recompute every curve from the poses. It is not needed: the ensemble is a fixed
function of the ten stored single-definition curves (``"{mode}/{definition}"`` columns), so the loader
recomputes only the weighted curve and its peak, per shard, when it reads the shard's peaks.

The maths is ``intint.pose.intensity.ensembles``, the function ``intensity.compute`` uses, applied to
the stored float32 curves of a whole shard at once (one flat buffer + list offsets, per-video max and
argmax with ``reduceat``):

- ``n(x) = x / max(1e-8, max_t x)`` per video and sub-curve;
- reference mode: ``Σ_k w_k · n(x_k)`` over the ten sub-curves, ``w`` from
  ``intensity.weights_from_accuracies(acc, "reference")`` (a group accuracy goes to each of its
  sub-curves, as the authors' θ does);
- paper mode: group curves ``g = mean of the group's n(x_k)``, then ``Σ_g w_g · n(g)`` with
  ``w = weights_from_accuracies(acc, "paper")``;
- the curve is cast to float32 and its peak is the first argmax, as the builder stores peaks.

With the weights the builder used, the result equals the stored ``peak/{mode}/JBA_weighted`` column.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from intint.pose import intensity
from intint.store import shardio
from intint.store.shardstream import ShardRef, ShardUnavailable


def _segment_max(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per-video maximum of each row of a K×N flat stack, repeated back to K×N."""
    return np.repeat(np.maximum.reduceat(values, starts, axis=-1), lengths, axis=-1)


def _normalised(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``n(x) = x / max(1e-8, max x)`` per video of each row of a K×N float64 stack."""
    return values / np.maximum(intensity.NORM_FLOOR, _segment_max(values, starts, lengths))


def _first_argmax(curve: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """First index of each video's maximum, relative to the video's start (ties → earliest frame)."""
    is_max = curve == _segment_max(curve, starts, lengths)
    position = np.where(is_max, np.arange(curve.size), curve.size)
    return np.minimum.reduceat(position, starts) - starts


def _stacked_components(table: pa.Table, mode: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """The ten stored sub-curves as a 10×N float64 stack over all videos, and the list offsets.

    Every column must have the same offsets (one curve of ``total_frames`` values per video).
    """
    frame_dirs = table.column("frame_dir").to_pylist() if "frame_dir" in table.column_names else None
    rows, offsets = [], None
    for name in intensity.COMPONENT_ORDER:
        column = shardio.curve_column(mode, name)
        if column not in table.column_names:
            raise KeyError(f"{source}: no intensity column {column!r} (JBA weights are recomputed from the "
                           f"ten single-definition curves of mode {mode!r})")
        lists = table.column(column).combine_chunks()
        if lists.null_count:
            row = int(np.flatnonzero(lists.is_null().to_numpy(zero_copy_only=False))[0])
            who = frame_dirs[row] if frame_dirs else f"row {row}"
            raise ValueError(f"{source}: sample {who!r}: field {column!r} is null")
        these = lists.offsets.to_numpy().astype(np.int64)
        these = these - these[0]
        if offsets is None:
            offsets = these
        elif not np.array_equal(these, offsets):
            row = int(np.flatnonzero(np.diff(these) != np.diff(offsets))[0])
            who = frame_dirs[row] if frame_dirs else f"row {row}"
            raise ValueError(f"{source}: sample {who!r}: field {column!r} has a different length than "
                             f"{shardio.curve_column(mode, intensity.COMPONENT_ORDER[0])!r}")
        rows.append(lists.flatten().to_numpy().astype(np.float64))
    assert offsets is not None
    lengths = np.diff(offsets)
    if (lengths < 1).any():
        row = int(np.flatnonzero(lengths < 1)[0])
        who = frame_dirs[row] if frame_dirs else f"row {row}"
        raise ValueError(f"{source}: sample {who!r}: empty intensity curve in mode {mode!r}")
    return np.stack(rows), offsets


def weighted_curves(table: pa.Table, mode: str, accuracies: Mapping[str, float],
                    source: str = "intensity table") -> tuple[np.ndarray, np.ndarray]:
    """JBA_weighted curves of every video of an intensity table for ``accuracies``.

    ``accuracies``: the J, B, A (or all ten definitions') accuracies or weights, any common scale,
    as for ``intensity.weights_from_accuracies``. Returns (flat float32 curve of all videos, int64
    offsets of length videos + 1). ``source`` names the table in errors.
    """
    if mode not in intensity.MODES:
        raise ValueError(f"{source}: intensity mode must be one of {intensity.MODES}, got {mode!r}")
    try:
        weights = intensity.weights_from_accuracies(accuracies, mode)
    except ValueError as err:
        raise ValueError(f"{source}: field 'jba_weights': {err}") from None
    stack, offsets = _stacked_components(table, mode, source)
    offsets = offsets.astype(np.int64)
    starts, lengths = offsets[:-1], np.diff(offsets)
    if starts.size == 0:
        return np.zeros(0, np.float32), offsets
    per_video = functools.partial(_normalised, starts=starts, lengths=lengths)
    curve = intensity.ensembles(stack, mode, weights, normalise=per_video)["JBA_weighted"]
    return curve.astype(np.float32), offsets


def weighted_peaks(table: pa.Table, mode: str, accuracies: Mapping[str, float],
                   source: str = "intensity table") -> np.ndarray:
    """int64 peak frame (first argmax of the JBA_weighted curve) per row of ``table``."""
    curve, offsets = weighted_curves(table, mode, accuracies, source)
    if offsets.size < 2:
        return np.zeros(0, np.int64)
    if np.isnan(curve).any():
        raise ValueError(f"{source}: JBA_weighted curve has NaN values (non-finite stored curves?)")
    return _first_argmax(curve, offsets[:-1], np.diff(offsets)).astype(np.int64)


def read_weighted_peaks(arrow_url: str, mode: str, accuracies: Mapping[str, float]) -> dict[str, int]:
    """``key → peak`` of a shard's ``.intensity.arrow`` table under custom JBA weights (what the
    loader calls instead of reading the stored ``peak/{mode}/JBA_weighted`` column)."""
    columns = ["key", "frame_dir", *(shardio.curve_column(mode, d) for d in intensity.COMPONENT_ORDER)]
    table = shardio.read_intensity(arrow_url, columns)
    peaks = weighted_peaks(table, mode, accuracies, source=arrow_url)
    return dict(zip(table.column("key").to_pylist(), peaks.tolist(), strict=True))


def read_shard_peaks(shard: ShardRef, mode: str, accuracies: Mapping[str, float]) -> dict[str, int]:
    """``read_weighted_peaks`` for the loader: an unreadable table or a missing curve column makes the
    shard unavailable, as ``shardstream.read_peaks`` does for a stored peak column."""
    try:
        return read_weighted_peaks(shard.arrow, mode, accuracies)
    except KeyError as exn:
        raise ShardUnavailable(f"shard {shard.arrow}: {exn.args[0]}") from exn
    except (OSError, pa.ArrowException) as exn:
        raise ShardUnavailable(f"shard {shard.arrow}: cannot read intensity table "
                               f"({type(exn).__name__}: {exn})") from exn
