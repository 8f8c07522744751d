"""The sample index of a shard (format_version 2): where each sample lies in its tar, and its SHA-256.

The builder (``shardio.write_tar``) records, per sample in tar order, the byte ``offset`` of its first
member's header, the ``length`` up to the end of its last member's padded data, and the SHA-256 of those
bytes, and stores them as the ``sample_offset`` / ``sample_length`` / ``sample_sha256`` columns of the
shard's intensity table (same rows, same order as the tar). With it a reader fetches any run of samples
with one range read (``intint.store.range_reader``) instead of streaming the tar from its start.

An index is data read from storage, so it is checked before any byte is fetched with it
(:func:`check_index`): the row count is the manifest's, offsets and lengths are whole 512-byte blocks,
every length is bounded, and the spans are in order without overlap. A damaged index is one
:class:`~intint.store.shardref.ShardMismatch` naming the table, never a crash or a huge allocation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from intint.store import shardio
from intint.store.shardref import ShardMismatch, ShardRef, ShardUnavailable
from intint.store.tar_reader import MAX_MEMBER

log = logging.getLogger(__name__)

_BLOCK = 512
# A sample is three members; each is a header, at most MAX_MEMBER bytes of data and maybe a long-name header.
MAX_SAMPLE_LENGTH = 3 * (MAX_MEMBER + 4 * _BLOCK)
MAX_OFFSET = 1 << 50  # a shard tar is megabytes to gigabytes; past this an offset is damage
DIGEST_SIZE = 32  # SHA-256

_noted_sets: set[tuple[str, str]] = set()  # (what, shard set) already logged in this process


@dataclass(frozen=True)
class SampleIndex:
    """A shard's sample index, row ``i`` = the ``i``-th sample of the tar: its key, its span
    ``[offsets[i], offsets[i] + lengths[i])`` and the SHA-256 of those bytes (``digest(i)``)."""

    keys: list[str]
    offsets: np.ndarray  # int64
    lengths: np.ndarray  # int64
    digests: bytes  # DIGEST_SIZE bytes per row, concatenated

    def __len__(self) -> int:
        return len(self.keys)

    def digest(self, i: int) -> bytes:
        return self.digests[i * DIGEST_SIZE:(i + 1) * DIGEST_SIZE]

    def end(self, i: int) -> int:
        """Where sample ``i``'s span ends."""
        return int(self.offsets[i] + self.lengths[i])


def index_problem(index: SampleIndex, num_samples: int, file_size: int | None = None) -> str | None:
    """What makes ``index`` unusable for a tar of ``num_samples`` samples (and ``file_size`` bytes, when
    known), or None: a row count that is not the manifest's, a negative or unaligned offset, a length that
    is not a positive number of blocks or over :data:`MAX_SAMPLE_LENGTH`, spans out of order or
    overlapping, a span past the end of the file."""
    n = len(index)
    if n != num_samples or len(index.offsets) != n or len(index.lengths) != n:
        return f"{len(index.offsets)} index rows, the manifest lists {num_samples} samples"
    if len(index.digests) != n * DIGEST_SIZE:
        return f"{len(index.digests)} bytes of digests for {n} rows"
    if n == 0:
        return None
    offsets, lengths = index.offsets, index.lengths
    checks = ((offsets < 0, "a negative offset"), (offsets > MAX_OFFSET, f"an offset past {MAX_OFFSET}"),
              (offsets % _BLOCK != 0, "an offset that is not a multiple of 512"),
              (lengths < _BLOCK, "a length under one 512-byte block"),
              (lengths % _BLOCK != 0, "a length that is not a multiple of 512"),
              (lengths > MAX_SAMPLE_LENGTH, f"a length over {MAX_SAMPLE_LENGTH} bytes"))
    for bad, what in checks:
        if bad.any():
            row = int(np.argmax(bad))
            return f"row {row} ({index.keys[row]}): {what} (offset {offsets[row]}, length {lengths[row]})"
    ends = offsets + lengths  # both bounded above: no int64 overflow
    overlap = offsets[1:] < ends[:-1]
    if overlap.any():
        row = int(np.argmax(overlap)) + 1
        return f"row {row} ({index.keys[row]}): span starts at {offsets[row]}, before the previous one ends"
    if file_size is not None and int(ends[-1]) > file_size:
        row = int(np.argmax(ends > file_size))
        return f"row {row} ({index.keys[row]}): span ends at {ends[row]}, past the tar's {file_size} bytes"
    return None


def index_from_table(table: pa.Table) -> SampleIndex:
    """The index held by an intensity table's ``key`` and ``sample_*`` columns (unchecked);
    ``KeyError`` when a column is missing, ``ValueError`` when one has the wrong type."""
    missing = [c for c in ("key", *shardio.INDEX_COLUMNS) if c not in table.column_names]
    if missing:
        raise KeyError(f"no sample-index column(s) {missing}")
    digest_type = table.schema.field(shardio.INDEX_SHA256).type
    if digest_type != pa.binary(DIGEST_SIZE):
        raise ValueError(f"column {shardio.INDEX_SHA256!r} is {digest_type}, not {pa.binary(DIGEST_SIZE)}")
    columns = []
    for name in (shardio.INDEX_OFFSET, shardio.INDEX_LENGTH):
        col = table.column(name)
        if col.type != pa.int64() or col.null_count:
            raise ValueError(f"column {name!r} is {col.type} with {col.null_count} null(s), not int64")
        flat = col.combine_chunks()  # buffers, not to_numpy: that imports pandas in every fresh worker
        columns.append(np.frombuffer(flat.buffers()[1], dtype=np.int64, count=len(flat),
                                     offset=flat.offset * 8).copy() if len(flat) else np.zeros(0, np.int64))
    digests = table.column(shardio.INDEX_SHA256).combine_chunks()
    if digests.null_count:
        raise ValueError(f"column {shardio.INDEX_SHA256!r} has {digests.null_count} null(s)")
    data = digests.buffers()[1]
    raw = b"" if data is None else data.to_pybytes()[digests.offset * DIGEST_SIZE:
                                                      (digests.offset + len(digests)) * DIGEST_SIZE]
    return SampleIndex([str(k) for k in table.column("key").to_pylist()], columns[0], columns[1], raw)


def read_index(shard: ShardRef) -> SampleIndex:
    """The checked sample index of an indexed shard, read from its intensity table (``key`` and the
    ``sample_*`` columns only; memory-mapped when local).

    :class:`ShardUnavailable` when the table cannot be read, :class:`ShardMismatch` when it has no index
    or a damaged one (the set must be rebuilt: ``intint build-shards``).
    """
    try:
        table = shardio.read_intensity(shard.arrow)
    except (OSError, pa.ArrowException, ValueError) as exn:
        raise ShardUnavailable(f"shard {shard.arrow}: cannot read intensity table "
                               f"({type(exn).__name__}: {exn})") from exn
    try:
        index = index_from_table(table)
    except (KeyError, ValueError) as exn:
        raise ShardMismatch(f"shard {shard.arrow}: {exn.args[0]}; the manifest says format_version 2 "
                            "(rebuild the set: intint build-shards)") from None
    problem = index_problem(index, shard.num_samples)
    if problem is not None:
        raise ShardMismatch(f"shard {shard.arrow}: damaged sample index: {problem} "
                            "(restore the shard or rebuild the set)")
    return index


def note_unindexed(shard: ShardRef) -> None:
    """Log, once per shard set and process, that a set has no sample index (format_version 1), so runs of
    samples are read by streaming each tar from its start."""
    root = shard.tar.rsplit("/", 1)[0]
    if ("unindexed", root) not in _noted_sets:
        _noted_sets.add(("unindexed", root))
        log.warning("shard set %s has no sample index (format_version 1): a run of samples is read by "
                    "streaming its tar from the start; `intint build-shards` again gives range reads", root)


def note_no_range_reads(shard: ShardRef, why: str) -> None:
    """Log, once per shard set and process, that its storage serves no byte ranges (runs are streamed)."""
    root = shard.tar.rsplit("/", 1)[0]
    if ("no ranges", root) not in _noted_sets:
        _noted_sets.add(("no ranges", root))
        log.warning("%s: the storage of shard set %s serves no byte ranges; runs of samples are read by "
                    "streaming each tar from its start", why, root)
