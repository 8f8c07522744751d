"""Read a run of a shard's samples through its sample index: fsspec range reads, the project's tar reader,
each sample checked against its index row.

The run ``[start, stop)`` (positions in tar order = the intensity table's rows) is fetched in windows of
whole samples (:data:`WINDOW` bytes of a local file, :data:`REMOTE_WINDOW` elsewhere, or one sample), each
with one ranged read of its contiguous bytes (on an object store one ``GET`` with a ``Range``, no ``HEAD``;
no byte past the run is fetched). A window is parsed at once (``tar_reader.span_members``), and its
members are given to the samples whose indexed spans hold them, so damage costs only the samples it
touches: the scan resumes at the next sample's offset. A sample is delivered only when its members fill
its span exactly and carry the key its index row names; with ``verify`` the SHA-256 of its span must be
the row's too. Anything else is a corrupt sample (reported to ``on_skip``, never delivered); bytes that
stop before the run's end (a cut tar) count the rest of the run as lost; an I/O error raises
``ShardUnavailable``.
"""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from intint.store import fsio
from intint.store.sample_index import SampleIndex
from intint.store.shardref import ShardRef, ShardUnavailable
from intint.store.tar_reader import span_members

WINDOW = 8 << 20  # bytes read at a time from a local file (at least one whole sample)
# Bytes per ranged GET elsewhere: as large as s3fs's own read-ahead block, so a request's latency is
# spread over as many bytes as the whole-shard reader spreads it.
REMOTE_WINDOW = 48 << 20


class RangeReadsUnsupported(Exception):
    """The storage cannot serve a byte range of the tar (an HTTP server without ``Range`` support):
    raised before any sample of the run was handled, so the caller can stream the tar instead."""


@dataclass
class RangeProgress:
    """How far a run was read: ``handled`` positions were delivered or reported to ``on_skip``, so the
    run's other ``stop - start - handled`` samples are still unaccounted for when an I/O error cuts it."""

    handled: int = 0


def windows(index: SampleIndex, start: int, stop: int, window: int = WINDOW) -> list[tuple[int, int]]:
    """``[(a, b), ...]``: the run ``[start, stop)`` cut into consecutive position ranges whose bytes
    span at most ``window`` (or a single sample, however long)."""
    ends = index.offsets[start:stop] + index.lengths[start:stop]
    out, a = [], start
    while a < stop:
        limit = int(index.offsets[a]) + window
        b = start + int(np.searchsorted(ends, limit, side="right"))
        b = min(max(b, a + 1), stop)
        out.append((a, b))
        a = b
    return out


class SpanSource:
    """Byte ranges of one tar through fsspec: a local file is opened once and read with ``seek``/``read``;
    on any other filesystem each range is one ``cat_file(path, start, end)`` (one ranged ``GET`` on an
    object store, and no ``HEAD`` before it). Ranges are fetched in pieces of at most ``window`` bytes, so
    what is allocated is bounded by the bytes there, never by an index's claim; a range past the file's
    end gives fewer bytes (none when it starts past it)."""

    def __init__(self, url: str) -> None:
        self.fs, self.path = fsio.url_to_fs(url)
        self.local: BinaryIO | None = self.fs.open(self.path, "rb") if fsio.is_local(url) else None
        self.window = WINDOW if self.local is not None else REMOTE_WINDOW

    def _piece(self, offset: int, length: int) -> bytes:
        if self.local is not None:
            self.local.seek(offset)
            return self.local.read(length)
        try:
            data = self.fs.cat_file(self.path, start=offset, end=offset + length)
        except OSError as exn:
            if exn.errno == errno.EINVAL:  # s3fs's word for HTTP 416: the range starts past the file's end
                return b""
            raise
        if len(data) > length:  # a server that ignores ``Range`` sends the whole file
            raise ValueError(f"asked for {length} bytes at {offset}, got {len(data)}: no range reads")
        return bytes(data)

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``, or fewer where the file ends."""
        first = self._piece(offset, min(length, self.window))
        if len(first) == length or len(first) < min(length, self.window):
            return first
        pieces, got = [first], len(first)
        while got < length:
            piece = self._piece(offset + got, min(length - got, self.window))
            if not piece:
                break
            pieces.append(piece)
            got += len(piece)
        return b"".join(pieces)

    def close(self) -> None:
        if self.local is not None:
            self.local.close()


@dataclass
class _Window:
    """A fetched window: its bytes and the spans of its samples relative to them."""

    data: bytes
    starts: list[int]
    ends: list[int]
    members: list[list[tuple[str, memoryview]]] = field(default_factory=list)
    filled: list[int] = field(default_factory=list)  # where each sample's last member taken ends
    damage: dict[int, str] = field(default_factory=dict)  # sample (in the window) → what is wrong


def _scan_window(win: _Window, url: str) -> None:
    """Give each member of the window to the sample whose span holds its first header; a member that
    runs past its span, or damage that stops the scan, makes that sample damaged; the scan resumes at
    the next sample's offset."""
    n = len(win.starts)
    win.members, win.filled = [[] for _ in range(n)], list(win.starts)
    i = 0
    while i < n:
        base = win.starts[i]
        scan = span_members(win.data if base == 0 else win.data[base:], url)
        j = i
        for first, end, name, body in scan.members:
            head, tail = base + first, base + end
            while j < n and head >= win.ends[j]:
                j += 1
            if j == n or head < win.starts[j]:
                continue  # outside every sample's span
            if tail > win.ends[j]:
                win.damage.setdefault(j, f"member {name} runs past the span")
            elif not win.members[j] and head != win.starts[j]:
                win.damage.setdefault(j, "its first member does not start its span")
            else:
                win.members[j].append((name, body))
                win.filled[j] = tail
        if scan.error is None:
            break
        stop = base + scan.stop
        k = next((k for k in range(i, n) if stop < win.ends[k]), n)
        if k < n:
            win.damage.setdefault(k, scan.error)
        i = k + 1
    for j in range(n):
        if win.filled[j] != win.ends[j]:
            win.damage.setdefault(j, "its members do not fill its span")


def _sample(members: list[tuple[str, memoryview]], key: str, url: str) -> dict[str, Any] | str:
    """A raw sample of ``members``, all named ``{key}.{suffix}``; what is wrong otherwise. Its members are
    copies, so a video in a shuffle buffer keeps its own few kilobytes alive, not the window's megabytes."""
    raw: dict[str, Any] = {"__key__": key, "__url__": url}
    for name, data in members:
        slash = name.rfind("/")
        dot = name.find(".", slash + 1)
        if dot <= slash + 1:
            continue
        if name[:dot] != key:
            return f"holds member {name[:120]!r}, not one of the index's key"
        suffix = name[dot + 1:].lower()
        if suffix in raw:
            return f"member suffix {suffix!r} twice"
        raw[suffix] = bytes(data)  # a copy: the arrays decoded from it must not hold the whole window alive
    return raw


Outcome = dict[str, Any] | str | None  # a raw sample, what is wrong with it, or None: not wanted


def _window_samples(win: _Window, index: SampleIndex, a: int, url: str, verify: bool,
                    wanted: Callable[[str], bool] | None) -> Iterator[tuple[int, Outcome]]:
    """``(position, outcome)`` per sample of a scanned window: the raw sample, what is wrong with it, or
    None when ``wanted`` does not want its key (neither built nor hashed)."""
    view = memoryview(win.data)
    for j, (lo, hi) in enumerate(zip(win.starts, win.ends, strict=True)):
        pos, key = a + j, index.keys[a + j]
        if wanted is not None and not wanted(key):
            yield pos, None
            continue
        if j in win.damage:
            yield pos, win.damage[j]
            continue
        if verify and hashlib.sha256(view[lo:hi]).digest() != index.digest(pos):
            yield pos, "its bytes do not hash to the index's SHA-256"
            continue
        yield pos, _sample(win.members[j], key, url)


def _fetch_window(source: SpanSource, index: SampleIndex, a: int, b: int) -> tuple[_Window, int | None]:
    """The window of samples ``[a, b)``, scanned; when the tar ends inside it, only its whole samples,
    and the number of bytes there were (else None)."""
    lo, hi = int(index.offsets[a]), index.end(b - 1)
    data = source.read(lo, hi - lo)
    ends = index.offsets[a:b] + index.lengths[a:b] - lo
    cut = None
    if len(data) < hi - lo:  # the tar stops inside the window: the whole samples before the cut count
        cut = len(data)
        ends = ends[:int(np.searchsorted(ends, cut, "right"))]
        data = data[:int(ends[-1]) if len(ends) else 0]
    return _Window(data, (index.offsets[a:a + len(ends)] - lo).tolist(), ends.tolist()), cut


def indexed_samples(shard: ShardRef, index: SampleIndex, start: int, stop: int,
                    on_skip: Callable[[int, str], None], *, verify: bool = False,
                    wanted: Callable[[str], bool] | None = None,
                    progress: RangeProgress | None = None) -> Iterator[dict[str, Any]]:
    """The raw samples ``{"__key__", "__url__", "__shard__", suffix: data}`` at positions ``[start, stop)``
    of ``shard`` (``index`` = its checked sample index), in order; damaged ones reported to
    ``on_skip(n, message)``, ones ``wanted`` does not want left out silently. ``ShardUnavailable`` when
    the tar cannot be opened or read (``delivered`` = positions handled before the error)."""
    progress = progress or RangeProgress()
    try:
        source = SpanSource(shard.tar)
    except Exception as exn:  # FileNotFoundError, PermissionError, unknown protocol
        raise ShardUnavailable(f"shard {shard.tar}: cannot open ({type(exn).__name__}: {exn})") from exn
    try:
        for a, b in windows(index, start, stop, source.window):
            try:
                win, cut = _fetch_window(source, index, a, b)
            except (ValueError, NotImplementedError) as exn:  # fsspec's word for "no range reads here"
                if progress.handled:
                    raise ShardUnavailable(f"shard {shard.tar}: range read failed ({exn})",
                                           delivered=progress.handled) from exn
                raise RangeReadsUnsupported(f"shard {shard.tar}: no range reads ({exn})") from exn
            _scan_window(win, shard.tar)
            for pos, outcome in _window_samples(win, index, a, shard.tar, verify, wanted):
                progress.handled += 1
                if isinstance(outcome, str):
                    on_skip(1, f"shard {shard.tar}: sample {index.keys[pos]} (position {pos}): {outcome}")
                elif outcome is not None:
                    outcome["__shard__"] = shard.index
                    yield outcome
            if cut is not None:
                lost = a + len(win.starts)
                on_skip(stop - lost, f"shard {shard.tar}: ends {cut} bytes after offset "
                                     f"{int(index.offsets[a])}, inside sample {lost} ({index.keys[lost]}) of "
                                     f"the run [{start}, {stop}); counting its {stop - lost} remaining "
                                     "sample(s) as skipped")
                progress.handled = stop - start
                return
    except OSError as exn:
        raise ShardUnavailable(f"shard {shard.tar}: read error after {progress.handled} sample(s) of the run "
                               f"[{start}, {stop}) ({type(exn).__name__}: {exn})",
                               delivered=progress.handled) from exn
    finally:
        source.close()
