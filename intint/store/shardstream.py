"""Stream the videos of a shard set: WebDataset tar members → raw samples → checked, decoded videos.

This is the only place the loader touches bytes (the tar format itself is parsed by
``intint.store.tar_reader``). Three failure classes, kept apart on purpose:

* an **unreadable shard** (tar or intensity table missing, or not a tar at all) raises
  :class:`ShardUnavailable` naming the file; the loader turns it into an error, or a logged skip
  when the user allows missing shards;
* a **corrupt sample** (garbage ``.npy``, bad JSON, a missing member, shapes that disagree, no
  intensity row) raises :class:`CorruptSample` naming the key, the video and the field; the loader
  skips and counts it, so one bad video never stops a multi-day run;
* a **truncated shard** (a tar that ends early, which Python's ``tarfile`` in stream mode reports as
  a clean end) is noticed by comparing the samples read with the manifest's count.

fsspec URLs: webdataset 1.0.2 opens only local paths, ``pipe:`` and a few curl/CLI schemes
(docs/platform-notes.md §7), so importing this module registers an fsspec opener for every other
protocol fsspec knows (``s3``, ``gcs``, ``memory``, ...). Registering at import means forked DataLoader
workers and Ray workers, which import the module, have it too.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, BinaryIO

import fsspec
import numpy as np
import pyarrow as pa
import webdataset as wds
from webdataset.gopen import gopen_schemes

from intint.store import shardio
from intint.store.tar_reader import tar_samples

log = logging.getLogger(__name__)

MEMBERS: tuple[str, ...] = shardio.MEMBER_SUFFIXES  # ("keypoint.npy", "keypoint_score.npy", "json")
_LOCAL_PROTOCOLS = {"file", "local"}


def _fsspec_gopen(url: str, mode: str = "rb", bufsize: int = 8192, **kw: Any) -> BinaryIO:
    """webdataset ``gopen`` handler that opens any fsspec URL (binary read or write)."""
    return fsspec.open(url, mode).open()


def register_fsspec_gopen() -> list[str]:
    """Route every fsspec protocol that webdataset has no handler for through fsspec; returns them.

    webdataset's own handlers (``pipe:``, curl for http(s), gsutil for ``gs://``, ...) are kept.
    """
    added = []
    for proto in fsspec.available_protocols():
        if proto in _LOCAL_PROTOCOLS or proto in gopen_schemes:
            continue
        gopen_schemes[proto] = _fsspec_gopen
        added.append(proto)
    return added


register_fsspec_gopen()


class ShardUnavailable(OSError):
    """A shard's tar or intensity table cannot be opened or read; ``delivered`` samples of it had
    already been yielded when an I/O error cut the stream (0 when it never opened)."""

    def __init__(self, message: str, delivered: int = 0) -> None:
        super().__init__(message)
        self.delivered = delivered

    def __reduce__(self) -> tuple[Any, ...]:  # keep ``delivered`` through pickling (DataLoader workers)
        return type(self), (str(self), self.delivered)


class CorruptSample(ValueError):
    """One video's members cannot be decoded or contradict each other."""

    def __init__(self, shard: str, key: str, frame_dir: str | None, field: str, reason: str) -> None:
        who = f"{key} ({frame_dir!r})" if frame_dir else key
        super().__init__(f"{shard}: sample {who}: field {field!r}: {reason}")
        self.shard, self.key, self.frame_dir, self.field = shard, key, frame_dir, field


@dataclass(frozen=True)
class ShardRef:
    """One shard of a split: its position in the manifest, its two files and its sample count."""

    index: int
    tar: str
    arrow: str
    num_samples: int


def shard_refs(url: str, split: str, manifest: shardio.Manifest | None = None) -> list[ShardRef]:
    """The shards of ``split`` in manifest order."""
    return [ShardRef(i, tar, arrow, n)
            for i, (tar, arrow, n) in enumerate(shardio.shard_urls(url, split, manifest))]


@dataclass
class Video:
    """A decoded, checked video: what the clip samplers and transforms consume."""

    key: str
    frame_dir: str
    label: int
    keypoint: np.ndarray  # M×T×V×2, stored dtype
    keypoint_score: np.ndarray  # M×T×V
    img_shape: tuple[int, int]
    peak: int | None  # precomputed intensity peak, None when not requested
    shard: str


# ------------------------------------------------------------------------------------ raw samples


def raw_samples(shard: ShardRef, on_lost: Callable[[int, str], None]) -> Iterator[dict[str, Any]]:
    """Yield ``{"__key__", "__shard__", member: bytes, ...}`` per video of ``shard``, undecoded.

    Raises :class:`ShardUnavailable` when the tar cannot be opened, its first header is bad, or an
    I/O error cuts the stream (a transient storage failure is not corruption: it must not silently
    drop data). A tar whose *content* breaks (bad header or data, duplicate member), or that ends
    before the manifest's count, calls ``on_lost(n_missing, message)`` once and ends the shard.
    """
    try:
        stream = wds.gopen(shard.tar, "rb")
    except Exception as exn:  # FileNotFoundError, PermissionError, "no gopen handler", network errors
        raise ShardUnavailable(f"shard {shard.tar}: cannot open ({type(exn).__name__}: {exn})") from exn
    seen, last_key = 0, None
    try:
        for sample in tar_samples(stream, shard.tar):
            seen += 1
            last_key = sample["__key__"]
            sample["__shard__"] = shard.index
            yield sample
    except OSError as exn:
        raise ShardUnavailable(f"shard {shard.tar}: read error after {seen} sample(s) "
                               f"({type(exn).__name__}: {exn})", delivered=seen) from exn
    except (tarfile.TarError, EOFError, ValueError) as exn:
        if seen == 0:
            raise ShardUnavailable(f"shard {shard.tar}: not a readable tar "
                                   f"({type(exn).__name__}: {exn})") from exn
        lost = max(1, shard.num_samples - seen)
        on_lost(lost, f"shard {shard.tar}: tar broken after sample {last_key} "
                      f"({type(exn).__name__}: {exn}); skipping its remaining {lost} sample(s)")
        return
    finally:
        stream.close()
    if seen < shard.num_samples:
        on_lost(shard.num_samples - seen,
                f"shard {shard.tar}: ended after {seen} of {shard.num_samples} samples "
                f"(last key {last_key}); counting {shard.num_samples - seen} as skipped")


# ------------------------------------------------------------------------------------ intensity


def read_peaks(shard: ShardRef, column: str) -> dict[str, int]:
    """``key → peak frame`` from the shard's intensity table, reading only ``key`` and ``column``.

    A missing or unreadable table makes the shard unavailable (its videos could not be placed).
    """
    try:
        table = shardio.read_intensity(shard.arrow, ["key", column])
    except KeyError as exn:
        raise ShardUnavailable(f"shard {shard.arrow}: {exn.args[0]}") from exn
    except (OSError, pa.ArrowException, ValueError) as exn:
        raise ShardUnavailable(f"shard {shard.arrow}: cannot read intensity table "
                               f"({type(exn).__name__}: {exn})") from exn
    # to_pylist, not ChunkedArray.to_numpy: the latter imports pandas (~0.7 s in every fresh worker).
    return dict(zip(table.column("key").to_pylist(), table.column(column).to_pylist(), strict=True))


# ------------------------------------------------------------------------------------ decode


_NPY_MAGIC = b"\x93NUMPY"
# The header np.save writes for a plain array: a fixed-order dict literal padded with spaces.
_NPY_HEADER = re.compile(r"\{'descr': '([<>|=]?[fiu][1248])', 'fortran_order': (True|False), "
                         r"'shape': \(((?:\d+, ?)*\d*)\), \}[ ]*\n?")


def _npy_fast(data: bytes | memoryview) -> np.ndarray | None:
    """Decode an ``np.save`` array of a plain numeric dtype without ``np.load``; None if unusual.

    ``np.load`` parses the header with ``ast.literal_eval``, and CPython 3.11's AST constructor keeps
    its recursion counter per interpreter, not per thread (cpython#106905): in a DataLoader worker,
    whose queue feeder thread runs beside the decoding thread, it occasionally fails a valid array
    with "SystemError: AST constructor recursion depth mismatch". A regex on the fixed header format
    avoids it (and is several times faster); no object dtype can get through.
    """
    if data[:6] != _NPY_MAGIC or len(data) < 10:
        return None
    major = data[6]
    if major == 1:
        end = 10 + int.from_bytes(data[8:10], "little")
    elif major in (2, 3):
        end = 12 + int.from_bytes(data[8:12], "little")
    else:
        return None
    layout = _npy_layout(bytes(data[:end]))  # bytes: a cached view would pin its whole read chunk
    if layout is None:
        return None
    dtype, shape, order, count = layout
    return np.frombuffer(data, dtype=dtype, count=count, offset=end).reshape(shape, order=order)


@lru_cache(maxsize=4096)
def _npy_layout(preamble: bytes) -> tuple[np.dtype, tuple[int, ...], str, int] | None:
    """(dtype, shape, order, element count) of an ``.npy`` preamble (magic, version, length, header), or
    None for a header the fast path does not take. Cached: a shard set's arrays share few distinct
    headers (one per person count × length), and parsing one cost more than reading its array."""
    match = _NPY_HEADER.fullmatch(preamble[12 if preamble[6] in (2, 3) else 10:].decode("latin1"))
    if match is None:
        return None
    descr, fortran, dims = match.groups()
    shape = tuple([int(d) for d in dims.split(",") if d.strip()])
    return np.dtype(descr), shape, "F" if fortran == "True" else "C", math.prod(shape)


def _npy(data: bytes | memoryview, shard: str, key: str, frame_dir: str, field: str) -> np.ndarray:
    try:
        arr = _npy_fast(data)
        if arr is None:  # another header layout: the library reader, still without unpickling
            arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exn:  # ValueError (pickled/object array, bad header, short data), EOFError, OSError
        raise CorruptSample(shard, key, frame_dir, field, f"not a plain .npy array ({exn})") from exn
    if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f":
        got = getattr(arr, "dtype", type(arr).__name__)
        raise CorruptSample(shard, key, frame_dir, field, f"expected a float array, got {got}")
    return arr


def _meta(raw: dict[str, Any], shard: str, key: str) -> tuple[str, int, int, tuple[int, int]]:
    try:
        meta = json.loads(bytes(raw["json"]))  # a memoryview from the tar reader
        frame_dir = str(meta["frame_dir"])
    except Exception as exn:
        raise CorruptSample(shard, key, None, "json",
                            f"unreadable metadata ({type(exn).__name__}: {exn})") from exn
    try:
        label, total = int(meta["label"]), int(meta["total_frames"])
        h, w = (int(v) for v in meta["img_shape"])
    except Exception as exn:
        raise CorruptSample(shard, key, frame_dir, "json",
                            f"bad label/total_frames/img_shape ({exn})") from exn
    if h <= 0 or w <= 0:
        raise CorruptSample(shard, key, frame_dir, "img_shape", f"must be positive, got {(h, w)}")
    return frame_dir, label, total, (h, w)


def decode(raw: dict[str, Any], shard_url: str, num_classes: int, peaks: dict[str, int] | None) -> Video:
    """Decode and check one raw sample (``np.load`` with ``allow_pickle=False``, never unpickling).

    ``peaks`` is the shard's key → peak map when the intensity pathway needs it, else None.
    """
    key = raw["__key__"]
    missing = [m for m in MEMBERS if m not in raw]
    if "json" in missing:
        raise CorruptSample(shard_url, key, None, "json", f"member missing (members: {sorted(raw)})")
    frame_dir, label, total, img_shape = _meta(raw, shard_url, key)
    if missing:
        raise CorruptSample(shard_url, key, frame_dir, missing[0], "member missing")
    kp = _npy(raw["keypoint.npy"], shard_url, key, frame_dir, "keypoint")
    score = _npy(raw["keypoint_score.npy"], shard_url, key, frame_dir, "keypoint_score")
    if kp.ndim != 4 or kp.shape[-1] != 2 or kp.shape[0] < 1 or kp.shape[1] < 1:
        raise CorruptSample(shard_url, key, frame_dir, "keypoint", f"expected M×T×V×2, got shape {kp.shape}")
    if score.shape != kp.shape[:-1]:
        raise CorruptSample(shard_url, key, frame_dir, "keypoint_score",
                            f"shape {score.shape} does not match keypoint's M×T×V {kp.shape[:-1]}")
    if kp.shape[1] != total:
        raise CorruptSample(shard_url, key, frame_dir, "total_frames",
                            f"{total} but keypoint has {kp.shape[1]} frames")
    if not 0 <= label < num_classes:
        raise CorruptSample(shard_url, key, frame_dir, "label", f"{label} outside [0, {num_classes})")
    peak = None
    if peaks is not None:
        if key not in peaks:
            raise CorruptSample(shard_url, key, frame_dir, "intensity",
                                "no row in the shard's intensity table")
        peak = int(peaks[key])
        if not 0 <= peak < total:
            raise CorruptSample(shard_url, key, frame_dir, "intensity", f"peak {peak} outside [0, {total})")
    return Video(key, frame_dir, label, kp, score, img_shape, peak, shard_url)


# ------------------------------------------------------------------------------------ shuffle


def shuffled(items: Iterable[dict[str, Any]], bufsize: int,
             rng: np.random.Generator) -> Iterator[dict[str, Any]]:
    """A seeded sample shuffle buffer (as ``webdataset.shuffle``, but with our own Generator).

    The buffer holds raw (undecoded) samples, so it costs bytes, not decoded arrays; each incoming
    item swaps with a random slot once the buffer is full. ``bufsize <= 1`` keeps the order. The raw
    members are views of the tar reader's 256 KB chunks, so a chunk stays in memory while any of its
    samples waits here: at most ``bufsize`` chunks, a few dozen in practice (measured RSS per worker
    in docs/benchmarks.md).
    """
    if bufsize <= 1:
        yield from items
        return
    buf: list[dict[str, Any]] = []
    for item in items:
        if len(buf) < bufsize:
            buf.append(item)
            continue
        j = int(rng.integers(bufsize))
        buf[j], item = item, buf[j]
        yield item
    order = rng.permutation(len(buf))
    for j in order:
        yield buf[j]
