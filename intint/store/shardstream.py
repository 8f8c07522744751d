"""Stream the videos of a shard set: WebDataset tar members → raw samples → checked, decoded videos.

This module (whole shards, streamed) and ``intint.store.range_reader`` (runs of samples, through the
sample index) are the only places the loader touches bytes (the tar format itself is parsed by
``intint.store.tar_reader``, ``.npy`` members by ``intint.store.npy_reader``, a sample is decoded by
``intint.store.sample_decode``). Four failure classes, kept apart on purpose:

* an **unreadable shard** (tar or intensity table missing, or not a tar at all) raises
  :class:`ShardUnavailable` naming the file; the loader turns it into an error, or a logged skip
  when the user allows missing shards;
* a **corrupt sample** (garbage ``.npy``, bad JSON, a missing member, shapes that disagree, no
  intensity row) raises :class:`CorruptSample` naming the key, the video and the field; the loader
  skips and counts it, so one bad video never stops a multi-day run;
* a **truncated shard** (a tar that breaks, or stops without its end-of-archive marker, before the
  manifest's count) counts its missing samples as skipped too;
* a shard that **contradicts the manifest** (an intact tar holding more or fewer samples than its count,
  or, with ``verify_checksums``, bytes whose SHA-256 is not the manifest's, or a damaged sample index)
  raises :class:`ShardMismatch` naming the shard: the manifest no longer describes the data, so the set
  must be restored or rebuilt.

Nothing read is trusted: ``.npy`` members are plain float arrays of a fixed list of dtypes whose declared
size is the bytes present (never ``np.load``, never a pickle), every decoded video is checked against the
format (M×T×17×2 keypoints, M×T×17 scores, T = ``total_frames``), and the tar reader bounds member
sizes. :func:`shard_videos` is the loader's entry point: a shard's (or a run of its samples') checked
videos, with the end-of-shard checks of a whole shard run before its last video is handed on.

Every tar is read through fsspec (``fsio.url_to_fs``): local paths, ``s3://``, ``gs://``, ``http(s)://``,
``memory://``; never webdataset's ``gopen``, which runs ``curl`` / ``gsutil cat`` subprocesses for http(s)
and ``gs://`` (docs/platform-notes.md §7).

A run of a shard's samples (``start``/``stop`` of :func:`shard_videos`) is read with range reads through
the shard's sample index (``intint.store.range_reader``, format_version 2); a set without one is streamed
from the tar's start, the samples before the run passed over.
"""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from intint.store import fsio, shardio
from intint.store.npy_reader import read_npy
from intint.store.range_reader import RangeProgress, RangeReadsUnsupported, indexed_samples
from intint.store.sample_decode import MEMBER_SET as _MEMBER_SET
from intint.store.sample_decode import MEMBERS, CorruptSample, Video, decode
from intint.store.sample_index import SampleIndex, note_no_range_reads, note_unindexed, read_index
from intint.store.shardref import ChecksumMismatch, ShardMismatch, ShardRef, ShardUnavailable, shard_refs
from intint.store.tar_reader import HashedStream, TarEnd, tar_samples

log = logging.getLogger(__name__)

__all__ = ["MEMBERS", "ChecksumMismatch", "CorruptSample", "SampleIndex", "ShardMismatch", "ShardRef",
           "ShardUnavailable", "Video", "decode", "raw_samples", "read_index", "read_peaks", "shard_refs",
           "shard_videos"]

_npy_fast = read_npy  # the name the reader's tests know it by


# ------------------------------------------------------------------------------------ raw samples


@dataclass
class _Tally:
    """What a shard's reader has seen so far, of the tar and of the run ``[start, stop)`` it reads."""

    start: int = 0
    stop: int = 0
    seen: int = 0  # samples yielded (from the tar's start)
    whole: int = 0  # of them, samples with every member
    last_key: str | None = None

    @property
    def delivered(self) -> int:
        """The run's samples yielded."""
        return max(0, min(self.seen, self.stop) - self.start)

    @property
    def lost(self) -> int:
        """The run's samples not yielded."""
        return self.stop - self.start - self.delivered


def raw_samples(shard: ShardRef, on_lost: Callable[[int, str], None], *, verify: bool = False,
                start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
    """Yield ``{"__key__", "__shard__", member: bytes, ...}`` per video of ``shard``, undecoded, streamed
    from the tar's start through fsspec; ``stop``: end after the sample at position ``stop - 1``.

    Raises :class:`ShardUnavailable` when the tar cannot be opened, its first header is bad, or an
    I/O error cuts the stream (a transient storage failure is not corruption: it must not silently
    drop data). A tar whose *content* breaks (bad header, implausible size, duplicate member), or that
    stops without its end-of-archive marker before the manifest's count (a cut), calls
    ``on_lost(n_missing, message)`` once and ends the shard; the whole samples before the damage are
    yielded first. Raises :class:`ShardMismatch` when the tar holds more samples with every member than
    the manifest's count (as soon as it reads one too many) or ends at its end-of-archive marker with
    fewer. ``verify``: the bytes are hashed as they are read and, once the tar was read to its end,
    compared with ``shard.sha256``: :class:`ChecksumMismatch` when they differ.

    ``start``/``stop`` only bound what counts: the samples lost to a cut or damage are those of the run
    ``[start, stop)``, and ``ShardUnavailable.delivered`` counts the run's samples yielded. A ``stop`` before
    the shard's end skips the end-of-shard checks (count and SHA-256): the rest of the tar is not read.
    """
    stop = shard.num_samples if stop is None else stop
    try:
        fs, path = fsio.url_to_fs(shard.tar)
        stream = fs.open(path, "rb")
    except Exception as exn:  # FileNotFoundError, PermissionError, unknown protocol, network errors
        raise ShardUnavailable(f"shard {shard.tar}: cannot open ({type(exn).__name__}: {exn})") from exn
    hashed = HashedStream(stream) if verify and shard.sha256 and stop >= shard.num_samples else None
    tally, end = _Tally(start=start, stop=stop), TarEnd()
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
                if tally.seen >= stop and stop < shard.num_samples:
                    return
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
                               f"({type(exn).__name__}: {exn})", delivered=tally.delivered) from exn
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
    missing = tally.lost
    if missing:
        on_lost(missing, f"shard {shard.tar}: ended after {tally.seen} of {shard.num_samples} samples "
                         f"(last key {tally.last_key}); counting {missing} as skipped")


def _broken(shard: ShardRef, tally: _Tally, exn: Exception, on_lost: Callable[[int, str], None]) -> None:
    """The tar's content broke after ``tally.seen`` samples: count the rest (of the run) as lost, or, when
    nothing of it could be read, the shard is not a readable tar at all."""
    if tally.seen == 0:
        raise ShardUnavailable(f"shard {shard.tar}: not a readable tar "
                               f"({type(exn).__name__}: {exn})") from exn
    lost = tally.lost
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


# ------------------------------------------------------------------------------------ videos


def shard_videos(shard: ShardRef, num_classes: int, peaks: dict[str, int] | None,
                 on_skip: Callable[[int, str], None], *, verify: bool = False,
                 keep: Container[str] | None = None, start: int = 0, stop: int | None = None,
                 index: SampleIndex | None = None) -> Iterator[Video]:
    """The checked videos of the samples at positions ``[start, stop)`` of one shard (tar order = the
    rows of its intensity table; ``stop`` None: to the end) in that order (``decode``), corrupt or lost
    ones reported to ``on_skip(n, message)`` and left out; ``keep``: only the samples whose key it holds
    (the others are dropped, undecoded unless ``verify`` needs to know whether they are damaged).

    The whole shard (the default run) is streamed from the tar's start. Each video is handed on only once
    the next sample was read, so the end-of-shard checks of :func:`raw_samples` (the count, and with
    ``verify`` the SHA-256) always run before the shard's last video is delivered: a reader that stops
    right after it cannot miss them.

    The checksum rule (``verify``), since the videos delivered before the shard's end cannot be recalled:
    when the damage already showed sample by sample (a sample of this shard was skipped as corrupt or
    lost), those are counted as usual and the mismatch is only logged; otherwise the damage decoded
    cleanly (a changed coordinate or label, another shard in its place) and :class:`ChecksumMismatch`
    is raised naming the shard: the set no longer is its build and must be restored or rebuilt.

    A part of a shard: with the sample index (``shard.indexed``; ``index``: the shard's, read by
    :func:`read_index` once by the caller, else read here) only the run's bytes are fetched, with range
    reads, and with ``verify`` each sample is checked against its own SHA-256 in the index before it is
    decoded: a mismatch is a corrupt sample (skipped and counted), so no changed content is delivered and
    there is no whole-shard rule to apply. Without an index (format_version 1; logged once per set) the
    tar is streamed from its start, the samples before the run passed over, and the whole-shard rule
    holds when the run reaches the shard's end (the whole tar was read), while a run that ends earlier
    is not checked against a checksum. ``ShardUnavailable.delivered`` counts the run's samples delivered
    or reported before an I/O error; ``stop - start - delivered`` of them are unaccounted for.
    """
    stop = shard.num_samples if stop is None else stop
    if not 0 <= start <= stop <= shard.num_samples:
        raise ValueError(f"shard {shard.tar}: run [{start}, {stop}) is not inside its {shard.num_samples} "
                         "samples")
    if start == 0 and stop == shard.num_samples:
        yield from _streamed_videos(shard, num_classes, peaks, on_skip, verify, keep, 0, stop)
    elif start < stop and (shard.indexed or index is not None):
        index = read_index(shard) if index is None else index
        if len(index) != shard.num_samples:
            raise ShardMismatch(f"shard {shard.arrow}: a sample index of {len(index)} rows for "
                                f"{shard.num_samples} samples")
        try:
            yield from _indexed_videos(shard, index, num_classes, peaks, on_skip, verify, keep, start, stop)
        except RangeReadsUnsupported as exn:  # raised before the run's first sample: stream it instead
            note_no_range_reads(shard, str(exn))
            yield from _streamed_videos(shard, num_classes, peaks, on_skip, verify, keep, start, stop)
    elif start < stop:
        note_unindexed(shard)
        yield from _streamed_videos(shard, num_classes, peaks, on_skip, verify, keep, start, stop)


def _indexed_videos(shard: ShardRef, index: SampleIndex, num_classes: int, peaks: dict[str, int] | None,
                    on_skip: Callable[[int, str], None], verify: bool, keep: Container[str] | None,
                    start: int, stop: int) -> Iterator[Video]:
    """A run of an indexed shard (``range_reader``): each video as soon as it is decoded."""
    wanted = None if keep is None else keep.__contains__
    for raw in indexed_samples(shard, index, start, stop, on_skip, verify=verify, wanted=wanted,
                               progress=RangeProgress()):
        try:
            yield decode(raw, shard.tar, num_classes, peaks)
        except CorruptSample as exn:
            on_skip(1, str(exn))


def _streamed_videos(shard: ShardRef, num_classes: int, peaks: dict[str, int] | None,
                     on_skip: Callable[[int, str], None], verify: bool, keep: Container[str] | None,
                     start: int, stop: int) -> Iterator[Video]:
    """The run ``[start, stop)`` streamed from the tar's start, with the whole-shard checksum rule."""
    damaged = 0

    def skip(n: int, message: str) -> None:
        nonlocal damaged
        damaged += n
        on_skip(n, message)

    held: Video | None = None
    try:
        for pos, raw in enumerate(raw_samples(shard, skip, verify=verify, start=start, stop=stop)):
            wanted = pos >= start and (keep is None or raw["__key__"] in keep)
            if not (wanted or verify):
                continue
            try:
                video = decode(raw, shard.tar, num_classes, peaks)
            except CorruptSample as exn:
                if wanted:
                    skip(1, str(exn))
                else:  # not this reader's sample: only the checksum rule needs to know it is damaged
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
