"""A shard as its readers see it (``ShardRef``: files, count, checksum, whether it is indexed), and the
ways reading one fails (``ShardUnavailable``, ``ShardMismatch``, ``ChecksumMismatch``).

Kept apart from the readers (``intint.store.shardstream`` streams a whole shard, ``intint.store.range_reader``
reads a run of its samples through the sample index) so both raise the same errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from intint.store import shardio


class ShardUnavailable(OSError):
    """A shard's tar or intensity table cannot be opened or read; ``delivered`` samples of it had
    already been yielded when an I/O error cut the stream (0 when it never opened)."""

    def __init__(self, message: str, delivered: int = 0) -> None:
        super().__init__(message)
        self.delivered = delivered

    def __reduce__(self) -> tuple[Any, ...]:  # keep ``delivered`` through pickling (DataLoader workers)
        return type(self), (str(self), self.delivered)


class ShardMismatch(shardio.ShardFormatError):
    """A shard's tar contradicts the manifest: its sample count, or (``ChecksumMismatch``) its SHA-256,
    or its sample index does not describe it."""


class ChecksumMismatch(ShardMismatch):
    """A shard's tar bytes do not hash to the manifest's SHA-256 (``verify_checksums``)."""


@dataclass(frozen=True)
class ShardRef:
    """One shard of a split: its position in the manifest, its two files, its sample count, the
    manifest's SHA-256 of its tar (None: nothing to verify against), and whether its intensity table
    holds the sample index (format_version >= 2: runs of samples are read with range reads)."""

    index: int
    tar: str
    arrow: str
    num_samples: int
    sha256: str | None = None
    indexed: bool = False


def shard_refs(url: str, split: str, manifest: shardio.Manifest | None = None) -> list[ShardRef]:
    """The shards of ``split`` in manifest order."""
    manifest = manifest or shardio.read_manifest(url)
    urls = shardio.shard_urls(url, split, manifest)
    digests = [entry.sha256.get("tar") for entry in manifest.splits[split].shards]
    indexed = manifest.format_version >= shardio.INDEXED_FORMAT_VERSION
    return [ShardRef(i, tar, arrow, n, digest, indexed)
            for i, ((tar, arrow, n), digest) in enumerate(zip(urls, digests, strict=True))]
