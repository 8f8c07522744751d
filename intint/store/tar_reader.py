"""The library's tar reader: a shard tar's members, grouped into WebDataset samples, as zero-copy views.

Why not webdataset's own (``tarfile`` underneath): ``tarfile`` and the per-member dicts and regexes
cost several times more per member than this, and in the keypoint-only loader (``heatmaps_on="device"``)
reading the tar was the largest cost of a sample after the transforms. This reader takes 256 KB at a
time and parses headers out of the buffer: per member one ``read`` call less than three, one checksum
pass per chunk, and no copy of the member's bytes (the arrays decoded from them are views too).

It handles ustar (with prefix), GNU long names and pax ``path`` records, and skips directories, links
and webdataset meta files. Unlike ``tarfile`` in stream mode, which ends the archive quietly at a bad
header, a bad checksum or short data raises ``tarfile.ReadError``. Checked against webdataset's reader
on the same tars (tests).
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_CHUNK = 1 << 18  # bytes read at a time (64 KB and 1 MB both measured slower: benchmarks/bench_read.py)
_REGULAR = (b"0", b"\0", b"7")  # regular file (and contiguous file, which readers treat alike)
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's skip_meta: names like __index__ are not samples
# Header checksum: the sum of all 512 bytes with the checksum field (148:156) counted as spaces.
_CHECKSUM_WEIGHTS = np.ones(_BLOCK, dtype=np.int64)
_CHECKSUM_WEIGHTS[148:156] = 0

Member = tuple[str, memoryview]  # (name, data)


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
    broken: str | None = None  # an unreadable size field (its header is the last of ``heads``)


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
        if size < 0:
            heads.append((pos, 0))  # its checksum decides which error is raised
            field = bytes(data[pos + 124:pos + 136])
            return _Scan(heads, pos, broken=f"{url}: unreadable size field {field!r}")
        padded = _BLOCK + -(-size // _BLOCK) * _BLOCK
        if len(data) - pos < (padded if not done else _BLOCK + size):
            if size > _CHUNK and _check_headers(data, [pos]) == 0:  # do not wait for a bogus size
                heads.append((pos, 0))
            break
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
            name = data[offset:offset + 100].split(b"\0", 1)[0].decode("utf-8")
            if data[offset + 257:offset + 262] == b"ustar" and data[offset + 345] != 0:
                name = data[offset + 345:offset + 500].split(b"\0", 1)[0].decode("utf-8") + "/" + name
        if not _META.match(name):
            yield name, body
    return long_name


def tar_members(stream: BinaryIO, url: str) -> Iterator[Member]:
    """``(name, data)`` of every regular file of a tar stream, data a zero-copy view of the bytes read.

    Raises ``tarfile.ReadError`` (naming ``url``) on a bad header checksum, an unreadable size field,
    or data that ends inside a member or header; the members before the damage are delivered first.
    """
    data, pos, long_name, done = b"", 0, None, False
    while not done:
        more = stream.read(_CHUNK)
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
            return
        pos = scan.pos
        if done and pos < len(data):
            raise tarfile.ReadError(f"{url}: " + ("truncated header" if len(data) - pos < _BLOCK
                                                  else "unexpected end of data"))


def tar_samples(stream: BinaryIO, url: str) -> Iterator[dict[str, Any]]:
    """A tar's members grouped into samples ``{"__key__", "__url__", suffix: data}``, as webdataset's
    ``group_by_keys(tar_file_iterator(...))`` groups them (key = the name up to the first dot of its
    base name, suffix lower-cased, a repeated suffix within a sample is a ``ValueError``), with
    zero-copy ``memoryview`` data.
    """
    sample: dict[str, Any] | None = None
    for name, data in tar_members(stream, url):
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
            raise ValueError(f"{name}: duplicate file name in tar file {suffix} {sample.keys()}")
        sample[suffix] = data
    if sample is not None:
        yield sample
