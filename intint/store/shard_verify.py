"""Check a finished shard set against its manifest (``intint inspect --verify``).

Every file is re-read and hashed against the manifest's SHA-256; a shard whose files match is then
read back with the loader's own tar reader and decoder, so "verified" means the training loader can
read every video of it, in the order the intensity table lists them. The manifest is read with
``shardio.read_manifest``, which refuses shard names outside the set's folder or listed twice, so
verifying never reads a file the set does not own.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass

from intint.store import fsio
from intint.store.shardio import (
    REJECTS_NAME,
    Manifest,
    ShardEntry,
    curve_column,
    read_intensity,
    read_manifest,
    root_url,
)
from intint.store.shardstream import decode
from intint.store.tar_reader import tar_samples


@dataclass
class ShardCheck:
    """What verifying one shard found; ``problems`` is empty when it is sound."""

    split: str
    tar: str
    arrow: str
    expected: int
    tar_samples: int
    arrow_rows: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class VerifyReport:
    shards: list[ShardCheck]
    problems: list[str]  # set-level problems (manifest, rejects.jsonl)

    @property
    def ok(self) -> bool:
        return not self.problems and all(s.ok for s in self.shards)


def verify(url: str) -> VerifyReport:
    """Re-read every file of a shard set against its checksum and count its samples.

    Checks, per shard: both files exist and match the manifest SHA-256; every sample of the tar
    decodes; tar samples and arrow rows equal the manifest count; the arrow rows follow the tar's key
    order; all intensity columns are there. Per split: shard counts sum to the split count. And
    ``rejects.jsonl`` has ``rejects`` lines.
    """
    manifest = read_manifest(url)
    root = root_url(url)
    report = VerifyReport(shards=[], problems=[])
    for split, info in manifest.splits.items():
        total = sum(e.num_samples for e in info.shards)
        if total != info.num_samples:
            report.problems.append(
                f"split {split!r}: shards hold {total} samples, manifest says {info.num_samples}")
        for entry in info.shards:
            report.shards.append(_check_shard(root, split, entry, manifest))
    rurl = fsio.join(root, REJECTS_NAME)
    try:
        lines = [ln for ln in fsio.read_bytes(rurl).splitlines() if ln.strip()]
        if len(lines) != manifest.rejects:
            report.problems.append(f"{REJECTS_NAME}: {len(lines)} lines, manifest says {manifest.rejects}")
    except FileNotFoundError:
        report.problems.append(f"{rurl}: missing")
    return report


def _check_shard(root: str, split: str, entry: ShardEntry, manifest: Manifest) -> ShardCheck:
    check = ShardCheck(split, entry.tar, entry.arrow, entry.num_samples, 0, 0, [])
    tar_url, arrow_url = fsio.child(root, entry.tar), fsio.child(root, entry.arrow)
    check.problems += _checksum_problems(entry, tar_url, arrow_url)
    if check.problems:
        return check
    try:
        tar_keys = _decoded_keys(tar_url, manifest.num_classes)
        table = read_intensity(arrow_url)
    except (tarfile.TarError, ValueError) as e:  # ValueError: corrupt sample, bad JSON, ArrowInvalid
        check.problems.append(f"unreadable: {e}")
        return check
    check.tar_samples, check.arrow_rows = len(tar_keys), table.num_rows
    if len(tar_keys) != entry.num_samples:
        check.problems.append(f"{entry.tar}: {len(tar_keys)} samples, manifest says {entry.num_samples}")
    if table.num_rows != entry.num_samples:
        check.problems.append(f"{entry.arrow}: {table.num_rows} rows, manifest says {entry.num_samples}")
    if table.column("key").to_pylist() != tar_keys:
        check.problems.append(f"{entry.arrow}: row keys are not the tar's keys in the tar's order")
    info = manifest.intensity
    expected_cols = [curve_column(m, d) for m in info.modes for d in info.definitions]
    have = set(table.column_names)
    missing = [c for c in expected_cols if c not in have or "peak/" + c not in have]
    if missing:
        check.problems.append(f"{entry.arrow}: missing intensity column(s) {missing}")
    return check


def _checksum_problems(entry: ShardEntry, tar_url: str, arrow_url: str) -> list[str]:
    """A missing file or a SHA-256 that is not the manifest's, per file of the shard."""
    problems = []
    for kind, url in (("tar", tar_url), ("arrow", arrow_url)):
        try:
            digest = fsio.sha256_url(url)
        except FileNotFoundError:
            problems.append(f"{url}: missing")
            continue
        if digest != entry.sha256.get(kind):
            want = entry.sha256.get(kind, "")
            problems.append(f"{url}: sha256 {digest[:12]}… != manifest {want[:12]}…")
    return problems


def _decoded_keys(tar_url: str, num_classes: int) -> list[str]:
    """The sample keys of a shard tar in order, every sample decoded and checked as the loader does."""
    fs, path = fsio.url_to_fs(tar_url)
    with fs.open(path, "rb") as stream:
        return [decode(raw, tar_url, num_classes, None).key for raw in tar_samples(stream, tar_url)]
