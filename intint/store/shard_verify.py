"""Check a finished shard set against its manifest (``intint inspect --verify``).

Every file is re-read and hashed against the manifest's SHA-256; a shard whose files match is then
read back with the loader's own tar reader and decoder, so "verified" means the training loader can
read every video of it, in the order the intensity table lists them. In a set of format_version 2 the
sample index is checked too: it is sane (``sample_index.index_problem``: no negative offsets, huge
lengths or overlaps, nothing past the file's end), its spans tile the tar from its first byte to the
end-of-archive blocks, and every span reads back, with the loader's range reader, to the sample of the
row's key whose bytes hash to the row's SHA-256. A damaged index is a one-line problem of its shard,
never a crash or an allocation its numbers ask for. The manifest is read with
``shardio.read_manifest``, which refuses shard names outside the set's folder or listed twice, so
verifying never reads a file the set does not own.
"""

from __future__ import annotations

import sys
import tarfile
from dataclasses import dataclass

import pyarrow as pa
from tqdm import tqdm

from intint.store import fsio
from intint.store.range_reader import indexed_samples
from intint.store.sample_decode import decode
from intint.store.sample_index import SampleIndex, index_from_table, index_problem
from intint.store.shardio import (
    INDEXED_FORMAT_VERSION,
    REJECTS_NAME,
    Manifest,
    ShardEntry,
    curve_column,
    read_intensity,
    read_manifest,
    root_url,
)
from intint.store.shardref import ShardRef, ShardUnavailable
from intint.store.tar_reader import tar_samples

_BLOCK = 512


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


def verify(url: str, progress: bool | None = None) -> VerifyReport:
    """Re-read every file of a shard set against its checksum and count its samples.

    Checks, per shard: both files exist and match the manifest SHA-256; every sample of the tar
    decodes; tar samples and arrow rows equal the manifest count; the arrow rows follow the tar's key
    order; all intensity columns are there; the sample index (format_version 2, see the module).
    Per split: shard counts sum to the split count. And ``rejects.jsonl`` has ``rejects`` lines.
    ``progress``: a bar over the shards on stderr (None: only when stderr is a terminal).
    """
    manifest = read_manifest(url)
    root = root_url(url)
    report = VerifyReport(shards=[], problems=[])
    total_shards = sum(len(info.shards) for info in manifest.splits.values())
    with tqdm(total=total_shards, unit="shard", desc="verifying shards", file=sys.stderr,
              disable=None if progress is None else not progress) as bar:
        for split, info in manifest.splits.items():
            total = sum(e.num_samples for e in info.shards)
            if total != info.num_samples:
                report.problems.append(
                    f"split {split!r}: shards hold {total} samples, manifest says {info.num_samples}")
            for entry in info.shards:
                report.shards.append(_check_shard(root, split, entry, manifest))
                bar.update(1)
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
    if manifest.format_version >= INDEXED_FORMAT_VERSION and not check.problems:
        problem = _index_problem(tar_url, entry, table)
        if problem is not None:
            check.problems.append(f"{entry.arrow}: sample index: {problem}")
    return check


def _index_problem(tar_url: str, entry: ShardEntry, table: pa.Table) -> str | None:
    """What is wrong with a shard's sample index, or None (see the module)."""
    try:
        index = index_from_table(table)
        fs, path = fsio.url_to_fs(tar_url)
        size = int(fs.size(path))
    except (KeyError, ValueError, pa.ArrowException) as exn:
        return str(exn.args[0] if exn.args else exn)
    problem = index_problem(index, entry.num_samples, size) or _tiling_problem(tar_url, index, size)
    if problem is not None or not len(index):
        return problem
    wrong: list[str] = []
    ref = ShardRef(0, tar_url, "", entry.num_samples, indexed=True)
    try:
        read = sum(1 for _ in indexed_samples(ref, index, 0, len(index), lambda n, m: wrong.append(m),
                                              verify=True))
    except ShardUnavailable as exn:
        return str(exn)
    if wrong:
        return f"{len(wrong)} span(s) do not read back to their row's sample; first: {wrong[0]}"
    return None if read == len(index) else f"{read} of {len(index)} spans read back"


def _tiling_problem(tar_url: str, index: SampleIndex, size: int) -> str | None:
    """Spans that do not tile the tar from its first byte, or bytes after the last one that are not the
    end-of-archive blocks (at least two zero blocks, then zeros to the end of the file)."""
    first = int(index.offsets[0]) if len(index) else 0
    ends = index.offsets + index.lengths
    gaps = index.offsets[1:] != ends[:-1]
    if first != 0 or gaps.any():
        row = 0 if first != 0 else int(gaps.argmax()) + 1
        return (f"row {row} ({index.keys[row]}): span starts at {index.offsets[row]}, not where the "
                "previous one ends (the spans must tile the tar)")
    tail = size - (int(ends[-1]) if len(index) else 0)
    if tail < 2 * _BLOCK or tail % _BLOCK:
        return f"{tail} byte(s) after the last span, not the end-of-archive blocks"
    fs, path = fsio.url_to_fs(tar_url)
    with fs.open(path, "rb") as stream:
        stream.seek(size - tail)
        while tail > 0:
            chunk = stream.read(min(tail, fsio.CHUNK))
            if not chunk or chunk.count(0) != len(chunk):
                return "the bytes after the last span are not the end-of-archive blocks"
            tail -= len(chunk)
    return None


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
