"""The library's tar reader: a shard tar's members, grouped into WebDataset samples, as zero-copy views.

Why not webdataset's own (``tarfile`` underneath): ``tarfile`` and the per-member dicts and regexes
cost several times more per member than this, and in the keypoint-only loader (``heatmaps_on="device"``)
reading the tar was the largest cost of a sample after the transforms. This reader takes 256 KB at a
time and parses headers out of the buffer: per member one ``read`` call less than three, one checksum
pass per chunk, and no copy of the member's bytes (the arrays decoded from them are views too).

It handles ustar (with prefix), GNU long names and pax ``path`` records, and skips directories, links
and webdataset meta files. Unlike ``tarfile`` in stream mode, which ends the archive quietly at a bad
header, a bad checksum, an implausible size or short data raises ``tarfile.ReadError`` once the members
before the damage were delivered. Checked against webdataset's reader on the same tars (tests).

The reader trusts nothing it reads: a member size is bounded (``MAX_MEMBER``), a member longer than a chunk
is read in one call (no re-copying of a growing buffer), and ``TarEnd`` tells an archive that ended at its
end-of-archive marker from one that just stopped (a cut at a member boundary). ``HashedStream`` hashes the
bytes as the reader takes them, so a shard's SHA-256 costs no second read.

``span_members`` parses a buffer that holds whole members from its first byte (the bytes of a run of
samples fetched with a range read through the sample index), with the same header checks, and reports
damage with its offset instead of raising, so its caller can resume at the next sample's span.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_CHUNK = 1 << 18  # bytes read at a time (64 KB and 1 MB both measured slower: benchmarks/bench_read.py)
MAX_MEMBER = 1 << 30  # a larger member size field is damage (a video's array is kilobytes to megabytes)
_REGULAR = (b"0", b"\0", b"7")  # regular file (and contiguous file, which readers treat alike)
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's skip_meta: names like __index__ are not samples
# Header checksum: the sum of all 512 bytes with the checksum field (148:156) counted as spaces.
_CHECKSUM_WEIGHTS = np.ones(_BLOCK, dtype=np.int64)
_CHECKSUM_WEIGHTS[148:156] = 0

Member = tuple[str, memoryview]  # (name, data)


@dataclass
class TarEnd:
    """How a tar stream ended, filled in by the reader: ``marker`` is True once the end-of-archive blocks
    were read (the archive is whole), False while the bytes simply stopped (possibly a cut)."""

    marker: bool = False


class HashedStream:
    """A binary stream whose bytes are SHA-256-hashed as they are read (``read`` only, as the reader needs).

    ``drain`` reads and hashes whatever the reader left (the padding after the end-of-archive marker), so
    ``hexdigest`` is the whole file's.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.sha.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


def _number(field: bytes | memoryview) -> int:
    """A tar numeric header field: NUL/space-terminated octal, or GNU base-256 for large values."""
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    text = bytes(field).split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _pax_path(data: bytes | memoryview) -> str | None:
    """The ``path`` record of a pax extended header ("<len> path=<name>\n" records)."""
    data = bytes(data)
    pos = 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        if length <= space - pos:  # a record holds at least its length and a space: no loop on damage
            raise ValueError(f"bad pax record length {length}")
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        if key == b"path":
            return value.decode("utf-8")
        pos += length
    return None


def _check_headers(data: bytes, offsets: list[int]) -> int:
    """How many of the headers at ``offsets`` (multiples of 512: the buffer starts at a member) carry a
    valid checksum, counted from the first; all of a chunk's headers at once (one weighted sum),
    instead of summing 512 bytes in Python per member."""
    blocks = np.frombuffer(data, dtype=np.uint8, count=len(data) // _BLOCK * _BLOCK).reshape(-1, _BLOCK)
    sums = blocks[np.array(offsets) // _BLOCK] @ _CHECKSUM_WEIGHTS + 8 * 32
    for i, (offset, expected) in enumerate(zip(offsets, sums.tolist(), strict=True)):
        field = data[offset + 148:offset + 156]
        if field == b"%06o\0 " % expected:  # how tarfile and GNU tar write it: no parsing needed
            continue
        try:
            stored = _number(field)
        except ValueError:
            return i
        if stored != expected:
            return i
    return len(offsets)


@dataclass
class _Scan:
    """The headers found in a buffer that starts at a member."""

    heads: list[tuple[int, int]]  # (header offset, member size) of the whole members in the buffer
    pos: int  # where the first header not taken starts
    end: bool = False  # the end-of-archive marker was reached
    broken: str | None = None  # an unreadable or implausible size field (its header is the last of ``heads``)
    need: int = 0  # bytes still missing for the member cut by the end of the buffer


def _scan_headers(data: bytes, done: bool, url: str) -> _Scan:
    """Walk the headers of the members that lie whole in ``data`` (``done``: no more bytes will come).

    A member cut by the end of the buffer waits for the next chunk, unless its size is implausible
    and its header's checksum is bad: then it is taken (size 0) so the checksum error is raised now.
    """
    heads: list[tuple[int, int]] = []
    pos = 0
    while len(data) - pos >= _BLOCK:
        if data[pos] == 0 and data[pos:pos + _BLOCK] == _ZERO_BLOCK:  # end-of-archive marker
            return _Scan(heads, pos, end=True)
        try:
            size = _number(data[pos + 124:pos + 136])
        except ValueError:
            size = -1
        if not 0 <= size <= MAX_MEMBER:
            heads.append((pos, 0))  # its checksum decides which error is raised
            field = bytes(data[pos + 124:pos + 136])
            what = "unreadable" if size < 0 else f"over the limit of {MAX_MEMBER} bytes in a"
            return _Scan(heads, pos, broken=f"{url}: {what} size field {field!r}")
        padded = _BLOCK + -(-size // _BLOCK) * _BLOCK
        if len(data) - pos < (padded if not done else _BLOCK + size):
            if size > _CHUNK and _check_headers(data, [pos]) == 0:  # do not wait for a bogus size
                heads.append((pos, 0))
                break
            return _Scan(heads, pos, need=pos + padded - len(data))
        heads.append((pos, size))
        pos += padded
    return _Scan(heads, pos)


def _regular_members(data: bytes, heads: list[tuple[int, int]],
                     long_name: str | None) -> Generator[Member, None, str | None]:
    """The regular, non-meta members among ``heads``, named by a preceding GNU long name or pax
    ``path`` record when there is one; returns the long name still pending for the next chunk."""
    view = memoryview(data)
    for offset, size in heads:
        kind = data[offset + 156:offset + 157]
        body = view[offset + _BLOCK:offset + _BLOCK + size]
        if kind == b"L":  # GNU long name: the name of the next member
            long_name = bytes(body).split(b"\0", 1)[0].decode("utf-8")
            continue
        if kind == b"x":  # pax extended header of the next member
            long_name = _pax_path(body) or long_name
            continue
        name, long_name = long_name, None
        if kind not in _REGULAR:
            continue
        if name is None:
            name = _header_name(data, offset)
        if not _META.match(name):
            yield name, body
    return long_name


def _header_name(data: bytes, offset: int) -> str:
    """The member name a ustar header at ``offset`` holds (with its prefix field, when set)."""
    name = data[offset:offset + 100].split(b"\0", 1)[0].decode("utf-8")
    if data[offset + 257:offset + 262] == b"ustar" and data[offset + 345] != 0:
        name = data[offset + 345:offset + 500].split(b"\0", 1)[0].decode("utf-8") + "/" + name
    return name


def tar_members(stream: BinaryIO, url: str, end: TarEnd | None = None) -> Iterator[Member]:
    """``(name, data)`` of every regular file of a tar stream, data a zero-copy view of the bytes read.

    Raises ``tarfile.ReadError`` (naming ``url``) on a bad header checksum, an unreadable or implausible
    size field, or data that ends inside a member or header; the members before the damage are delivered
    first. ``end.marker`` is set when the end-of-archive marker is reached.
    """
    data, pos, need, long_name, done = b"", 0, 0, None, False
    while not done:
        more = stream.read(max(_CHUNK, need))  # a member longer than a chunk: the rest of it in one read
        data = data[pos:] + more
        done = not more
        scan = _scan_headers(data, done, url)
        good = _check_headers(data, [h for h, _ in scan.heads]) if scan.heads else 0
        usable = good if scan.broken is None else min(good, len(scan.heads) - 1)
        long_name = yield from _regular_members(data, scan.heads[:usable], long_name)
        if good < len(scan.heads):
            raise tarfile.ReadError(f"{url}: bad header checksum")
        if scan.broken:
            raise tarfile.ReadError(scan.broken)
        if scan.end:
            if end is not None:
                end.marker = True
            return
        pos, need = scan.pos, scan.need
        if done and pos < len(data):
            raise tarfile.ReadError(f"{url}: " + ("truncated header" if len(data) - pos < _BLOCK
                                                  else "unexpected end of data"))


@dataclass
class SpanScan:
    """The members of a buffer cut out of a tar at member boundaries (``span_members``)."""

    members: list[tuple[int, int, str, memoryview]]  # (its first header's offset, its data's end, name, data)
    stop: int  # where the members taken end: the damage, when ``error`` is set
    error: str | None = None  # why the scan stopped before the buffer's end (None: it reached it)


def span_members(data: bytes, url: str) -> SpanScan:
    """The regular, non-meta members of ``data``, a run of whole members that starts at its first byte
    (the samples the sample index places there), each with the offset of its first header (a GNU long
    name or pax header before it included) and the end of its padded data, as zero-copy views.

    Parsed at once from the buffer (one header checksum pass); damage ends the scan with ``error`` and
    ``stop`` (the offset it starts at) instead of raising, so a reader can resume at the next sample.
    An end-of-archive marker inside the buffer is damage too: the buffer should hold samples only.
    """
    scan = _scan_headers(data, True, url)
    good = _check_headers(data, [h for h, _ in scan.heads]) if scan.heads else 0
    usable = good if scan.broken is None else min(good, len(scan.heads) - 1)
    members: list[tuple[int, int, str, memoryview]] = []
    view, long_name, first = memoryview(data), None, None
    for offset, size in scan.heads[:usable]:
        kind, body = data[offset + 156:offset + 157], view[offset + _BLOCK:offset + _BLOCK + size]
        first = offset if first is None else first
        try:
            if kind in (b"L", b"x"):
                long_name = (bytes(body).split(b"\0", 1)[0].decode("utf-8") if kind == b"L"
                             else _pax_path(body) or long_name)
                continue
            name, long_name = long_name or _header_name(data, offset), None
        except ValueError as exn:  # a name that is not UTF-8, a bad pax record
            return SpanScan(members, first, f"{url}: unreadable member name ({exn})")
        if kind in _REGULAR and not _META.match(name):
            members.append((first, offset + _BLOCK + -(-size // _BLOCK) * _BLOCK, name, body))
        first = None
    stop = scan.heads[usable][0] if usable < len(scan.heads) else scan.pos
    if good < len(scan.heads):
        error: str | None = f"{url}: bad header checksum"
    elif scan.broken:
        error = scan.broken
    elif scan.end or first is not None or stop < len(data):
        what = ("an end-of-archive marker" if scan.end else "a long name without its member"
                if first is not None else "a member cut short")
        error = f"{url}: {what} inside the span"
    else:
        error = None
    return SpanScan(members, stop if first is None else first, error)


def tar_samples(stream: BinaryIO, url: str, end: TarEnd | None = None,
                whole: frozenset[str] | None = None) -> Iterator[dict[str, Any]]:
    """A tar's members grouped into samples ``{"__key__", "__url__", suffix: data}``, as webdataset's
    ``group_by_keys(tar_file_iterator(...))`` groups them (key = the name up to the first dot of its
    base name, suffix lower-cased, a repeated suffix within a sample is a ``ValueError``), with
    zero-copy ``memoryview`` data.

    ``whole``: the suffixes a complete sample has. When the tar breaks right after a complete sample
    (the damage is in the next one's first header), that sample is yielded before the error, so damage
    costs only the samples it touches; without ``whole`` (or when the sample misses a member, or repeats
    one) it is not. ``end`` as in ``tar_members``.
    """
    sample: dict[str, Any] | None = None
    try:
        for name, data in tar_members(stream, url, end):
            slash = name.rfind("/")
            dot = name.find(".", slash + 1)
            if dot <= slash + 1:  # no dot in the base name, or a leading one: not part of a sample
                continue
            key, suffix = name[:dot], name[dot + 1:].lower()
            if sample is None or key != sample["__key__"]:
                if sample is not None:
                    yield sample
                sample = {"__key__": key, "__url__": url}
            if suffix in sample:
                sample = None
                raise ValueError(f"{url}: {name}: duplicate file name in tar file (suffix {suffix!r})")
            sample[suffix] = data
    except (tarfile.ReadError, ValueError):  # ValueError: also a name that is not UTF-8
        if sample is not None and whole is not None and whole <= sample.keys():
            yield sample
        raise
    if sample is not None:
        yield sample
