"""Stream the videos of a shard set: WebDataset tar members → raw samples → checked, decoded videos.

This is the only place the loader touches bytes (the tar format itself is parsed by
``intint.store.tar_reader``, ``.npy`` members by ``intint.store.npy_reader``). Four failure
classes, kept apart on purpose:

* an **unreadable shard** (tar or intensity table missing, or not a tar at all) raises
  :class:`ShardUnavailable` naming the file; the loader turns it into an error, or a logged skip
  when the user allows missing shards;
* a **corrupt sample** (garbage ``.npy``, bad JSON, a missing member, shapes that disagree, no
  intensity row) raises :class:`CorruptSample` naming the key, the video and the field; the loader
  skips and counts it, so one bad video never stops a multi-day run;
* a **truncated shard** (a tar that breaks, or stops without its end-of-archive marker, before the
  manifest's count) counts its missing samples as skipped too;
* a shard that **contradicts the manifest** (an intact tar holding more or fewer samples than its count,
  or, with ``verify_checksums``, bytes whose SHA-256 is not the manifest's) raises :class:`ShardMismatch`
  naming the shard: the manifest no longer describes the data, so the set must be restored or rebuilt.

Nothing read is trusted: ``.npy`` members are plain float arrays of a fixed list of dtypes whose declared
size is the bytes present (never ``np.load``, never a pickle), every decoded video is checked against the
format (M×T×17×2 keypoints, M×T×17 scores, T = ``total_frames``), and the tar reader bounds member
sizes. :func:`shard_videos` is the loader's entry point: one shard's checked videos, with the end-of-shard
checks run before its last video is handed on.

fsspec URLs: webdataset 1.0.2 opens only local paths, ``pipe:`` and a few curl/CLI schemes
(docs/platform-notes.md §7), so importing this module registers an fsspec opener for every other
protocol fsspec knows (``s3``, ``gcs``, ``memory``, ...). Registering at import means forked DataLoader
workers and Ray workers, which import the module, have it too.
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import fsspec
import numpy as np
import pyarrow as pa
import webdataset as wds
from webdataset.gopen import gopen_schemes

from intint.pose.skeleton import NUM_JOINTS
from intint.store import shardio
from intint.store.npy_reader import NpyError, read_npy
from intint.store.tar_reader import HashedStream, TarEnd, tar_samples

log = logging.getLogger(__name__)

MEMBERS: tuple[str, ...] = shardio.MEMBER_SUFFIXES  # ("keypoint.npy", "keypoint_score.npy", "json")
_MEMBER_SET = frozenset(MEMBERS)
_MAX_META = 1 << 20  # bytes of a sample's JSON metadata (a few hundred in practice)
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


class ShardMismatch(shardio.ShardFormatError):
    """A shard's tar contradicts the manifest: its sample count, or (``ChecksumMismatch``) its SHA-256."""


class ChecksumMismatch(ShardMismatch):
    """A shard's tar bytes do not hash to the manifest's SHA-256 (``verify_checksums``)."""


class CorruptSample(ValueError):
    """One video's members cannot be decoded or contradict each other."""

    def __init__(self, shard: str, key: str, frame_dir: str | None, field: str, reason: str) -> None:
        who = f"{key} ({frame_dir!r})" if frame_dir else key
        super().__init__(f"{shard}: sample {who}: field {field!r}: {reason}")
        self.shard, self.key, self.frame_dir, self.field = shard, key, frame_dir, field


@dataclass(frozen=True)
class ShardRef:
    """One shard of a split: its position in the manifest, its two files, its sample count and the
    manifest's SHA-256 of its tar (None: nothing to verify against)."""

    index: int
    tar: str
    arrow: str
    num_samples: int
    sha256: str | None = None


def shard_refs(url: str, split: str, manifest: shardio.Manifest | None = None) -> list[ShardRef]:
    """The shards of ``split`` in manifest order."""
    manifest = manifest or shardio.read_manifest(url)
    urls = shardio.shard_urls(url, split, manifest)
    digests = [entry.sha256.get("tar") for entry in manifest.splits[split].shards]
    return [ShardRef(i, tar, arrow, n, digest)
            for i, ((tar, arrow, n), digest) in enumerate(zip(urls, digests, strict=True))]


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


@dataclass
class _Tally:
    """What a shard's reader has seen so far."""

    seen: int = 0  # samples yielded
    whole: int = 0  # of them, samples with every member
    last_key: str | None = None


def raw_samples(shard: ShardRef, on_lost: Callable[[int, str], None], *,
                verify: bool = False) -> Iterator[dict[str, Any]]:
    """Yield ``{"__key__", "__shard__", member: bytes, ...}`` per video of ``shard``, undecoded.

    Raises :class:`ShardUnavailable` when the tar cannot be opened, its first header is bad, or an
    I/O error cuts the stream (a transient storage failure is not corruption: it must not silently
    drop data). A tar whose *content* breaks (bad header, implausible size, duplicate member), or that
    stops without its end-of-archive marker before the manifest's count (a cut), calls
    ``on_lost(n_missing, message)`` once and ends the shard; the whole samples before the damage are
    yielded first. Raises :class:`ShardMismatch` when the tar holds more samples with every member than
    the manifest's count (as soon as it reads one too many) or ends at its end-of-archive marker with
    fewer. ``verify``: the bytes are hashed as they are read and, once the tar was read to its end,
    compared with ``shard.sha256``: :class:`ChecksumMismatch` when they differ.
    """
    try:
        stream = wds.gopen(shard.tar, "rb")
    except Exception as exn:  # FileNotFoundError, PermissionError, "no gopen handler", network errors
        raise ShardUnavailable(f"shard {shard.tar}: cannot open ({type(exn).__name__}: {exn})") from exn
    hashed = HashedStream(stream) if verify and shard.sha256 else None
    tally, end = _Tally(), TarEnd()
    try:
        try:
            for sample in tar_samples(hashed or stream, shard.tar, end, _MEMBER_SET):
                tally.seen += 1
                if _MEMBER_SET <= sample.keys():
                    tally.whole += 1
                    if tally.whole > shard.num_samples:
                        raise ShardMismatch(f"shard {shard.tar}: holds more than the {shard.num_samples} "
                                            "sample(s) the manifest lists; the manifest does not describe "
                                            "this tar (restore the shard or rebuild the set)")
                tally.last_key = sample["__key__"]
                sample["__shard__"] = shard.index
                yield sample
            _check_count(shard, tally, end, on_lost)
        except ShardMismatch:
            raise
        except (tarfile.TarError, EOFError, ValueError) as exn:
            _broken(shard, tally, exn, on_lost)
        if hashed is not None:
            hashed.drain()
            _check_digest(shard, hashed.hexdigest(), tally)
    except ShardUnavailable:
        raise
    except OSError as exn:
        raise ShardUnavailable(f"shard {shard.tar}: read error after {tally.seen} sample(s) "
                               f"({type(exn).__name__}: {exn})", delivered=tally.seen) from exn
    finally:
        stream.close()


def _check_count(shard: ShardRef, tally: _Tally, end: TarEnd, on_lost: Callable[[int, str], None]) -> None:
    """A tar read to its end: fewer samples than the manifest's count is a cut (no end-of-archive marker:
    the missing ones count as lost) or a manifest that does not describe the tar (marker read: an error)."""
    if tally.seen >= shard.num_samples:
        return
    if end.marker:
        raise ShardMismatch(f"shard {shard.tar}: an intact tar of {tally.seen} sample(s), the manifest lists "
                            f"{shard.num_samples}; the manifest does not describe this tar (restore the "
                            "shard or rebuild the set)")
    missing = shard.num_samples - tally.seen
    on_lost(missing, f"shard {shard.tar}: ended after {tally.seen} of {shard.num_samples} samples "
                     f"(last key {tally.last_key}); counting {missing} as skipped")


def _broken(shard: ShardRef, tally: _Tally, exn: Exception, on_lost: Callable[[int, str], None]) -> None:
    """The tar's content broke after ``tally.seen`` samples: count the rest as lost, or, when nothing of it
    could be read, the shard is not a readable tar at all."""
    if tally.seen == 0:
        raise ShardUnavailable(f"shard {shard.tar}: not a readable tar "
                               f"({type(exn).__name__}: {exn})") from exn
    lost = shard.num_samples - tally.seen
    message = f"shard {shard.tar}: tar broken after sample {tally.last_key} ({type(exn).__name__}: {exn})"
    if lost > 0:
        on_lost(lost, f"{message}; skipping its remaining {lost} sample(s)")
    else:
        log.warning("%s; every sample of it had been read", message)


def _check_digest(shard: ShardRef, digest: str, tally: _Tally) -> None:
    if digest != shard.sha256:
        raise ChecksumMismatch(f"shard {shard.tar}: its SHA-256 is {digest[:16]}…, the manifest's "
                               f"{str(shard.sha256)[:16]}…: the tar changed since the build "
                               f"({tally.seen} of its samples were read)")


def shard_videos(shard: ShardRef, num_classes: int, peaks: dict[str, int] | None,
                 on_skip: Callable[[int, str], None], *, verify: bool = False,
                 keep: Container[str] | None = None) -> Iterator[Video]:
    """The checked videos of one shard in tar order (``decode``), corrupt or lost ones reported to
    ``on_skip(n, message)`` and left out; ``keep``: only the samples whose key it holds (the others are
    dropped, undecoded unless ``verify`` needs to know whether they are damaged).

    Each video is handed on only once the next sample was read, so the end-of-shard checks of
    :func:`raw_samples` (the count, and with ``verify`` the SHA-256) always run before the shard's last
    video is delivered: a reader that stops right after it cannot miss them.

    The checksum rule (``verify``), since the videos delivered before the shard's end cannot be recalled:
    when the damage already showed sample by sample (a sample of this shard was skipped as corrupt or
    lost), those are counted as usual and the mismatch is only logged; otherwise the damage decoded
    cleanly (a changed coordinate or label, another shard in its place) and :class:`ChecksumMismatch`
    is raised naming the shard: the set no longer is its build and must be restored or rebuilt.
    """
    damaged = 0

    def skip(n: int, message: str) -> None:
        nonlocal damaged
        damaged += n
        on_skip(n, message)

    held: Video | None = None
    try:
        for raw in raw_samples(shard, skip, verify=verify):
            wanted = keep is None or raw["__key__"] in keep
            if not (wanted or verify):
                continue
            try:
                video = decode(raw, shard.tar, num_classes, peaks)
            except CorruptSample as exn:
                if wanted:
                    skip(1, str(exn))
                else:  # not this loader's sample: only the checksum rule needs to know it is damaged
                    damaged += 1
                continue
            if not wanted:
                continue
            if held is not None:
                yield held
            held = video
    except ChecksumMismatch as exn:
        if not damaged:
            raise ChecksumMismatch(f"{exn}; no sample of it failed its checks, so some were delivered "
                                   "with changed content: restore the shard or rebuild the set") from None
        log.warning("%s; its %d damaged sample(s) are skipped and counted", exn, damaged)
    except ShardUnavailable:
        if held is not None:
            yield held  # read whole before the I/O error: deliver it, the rest counts as lost
        raise
    if held is not None:
        yield held


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


_npy_fast = read_npy  # the name the reader's tests know it by


def _npy(data: bytes | memoryview, shard: str, key: str, frame_dir: str, field: str) -> np.ndarray:
    """A float array member in the native byte order (``npy_reader``: never unpickling, size checked)."""
    try:
        arr = read_npy(data)
    except NpyError as exn:
        raise CorruptSample(shard, key, frame_dir, field, f"not a plain float .npy array ({exn})") from exn
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def _meta(raw: dict[str, Any], shard: str, key: str) -> tuple[str, int, int, tuple[int, int]]:
    try:
        if len(raw["json"]) > _MAX_META:
            raise ValueError(f"{len(raw['json'])} bytes, more than {_MAX_META}")
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
    """Decode and check one raw sample (``npy_reader``: float arrays only, never unpickling): the members
    are all there, keypoints M×T×17×2 with M, T >= 1, scores M×T×17, T = ``total_frames``, the label a
    class and the peak a frame; :class:`CorruptSample` naming the sample and field otherwise.

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
    if kp.ndim != 4 or kp.shape[2:] != (NUM_JOINTS, 2) or kp.shape[0] < 1 or kp.shape[1] < 1:
        raise CorruptSample(shard_url, key, frame_dir, "keypoint",
                            f"expected M×T×{NUM_JOINTS}×2 (M, T >= 1), got shape {kp.shape}")
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
