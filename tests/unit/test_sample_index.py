"""The sample index (format_version 2) and runs of samples read with range reads (issue 17, store side).

What a user relies on: the builder writes, beside the intensity columns, where every sample lies in its
tar and its SHA-256, in the tar's order; ``shard_videos(..., start=, stop=)`` delivers exactly the samples
of the run, reading only the run's bytes; damage inside a run costs only the samples it touches (counted,
never delivered changed when checksums are verified); a set built before the index (format_version 1)
still reads, by streaming, and says once how to get range reads; ``inspect --verify`` checks the index,
and a hostile index is a one-line error, never a crash or a huge allocation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import shutil
import tarfile
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from intint.cli import app
from intint.store import shard_verify, shardio
from intint.store.shardstream import (
    ChecksumMismatch,
    ShardMismatch,
    ShardRef,
    ShardUnavailable,
    read_index,
    shard_refs,
    shard_videos,
)

NUM_CLASSES = 4  # tests/conftest.py's tiny set


def _videos(ref: ShardRef, **kw: Any) -> tuple[list[Any], list[int]]:
    """The videos ``shard_videos`` delivers and the skip counts it reported."""
    skipped: list[int] = []
    videos = list(shard_videos(ref, NUM_CLASSES, None, lambda n, message: skipped.append(n), **kw))
    return videos, skipped


def _keys(ref: ShardRef, **kw: Any) -> tuple[list[str], int]:
    videos, skipped = _videos(ref, **kw)
    return [v.key for v in videos], sum(skipped)


def _copy(tiny_shards: Path, tmp_path: Path) -> Path:
    out = tmp_path / "set"
    shutil.copytree(tiny_shards, out)
    return out


def _rewrite_index(root: Path, split: str, shard: int, **columns: pa.Array) -> None:
    """Replace sample-index columns of one shard's table (None: drop it) and re-sign the table in the
    manifest, as a hostile but self-consistent set would."""
    _, arrow_name = shardio.shard_names(split, shard)
    table = shardio.read_intensity(str(root / arrow_name))
    for name, array in columns.items():
        i = table.column_names.index(name)
        table = table.remove_column(i) if array is None else table.set_column(i, name, array)
    sha = shardio.write_intensity(str(root / arrow_name), table)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["splits"][split]["shards"][shard]["sha256"]["arrow"] = sha
    (root / "manifest.json").write_text(json.dumps(manifest))


# ------------------------------------------------------------------------------------ the index


def test_builder_indexes_every_sample_in_tar_order(tiny_shards: Path) -> None:
    """Each row's span starts at its first member's header, ends after its last member's padding, holds
    exactly the row key's members and hashes to the row's SHA-256; the spans tile the tar up to the
    end-of-archive blocks; the manifest says format_version 2."""
    assert json.loads((tiny_shards / "manifest.json").read_text())["format_version"] == 2
    for split in ("train", "val", "test"):
        for ref in shard_refs(str(tiny_shards), split):
            data = Path(ref.tar).read_bytes()
            index = read_index(ref)
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                members = tar.getmembers()
            tar_keys = list(dict.fromkeys(m.name.split(".", 1)[0] for m in members))
            assert ref.indexed and index.keys == tar_keys  # row order is the tar's order
            assert index.offsets[0] == 0
            assert list(index.offsets[1:]) == [index.end(i) for i in range(len(index) - 1)]
            assert set(data[index.end(len(index) - 1):]) == {0}  # then only the end-of-archive blocks
            for i, key in enumerate(index.keys):
                span = data[index.offsets[i]:index.end(i)]
                assert hashlib.sha256(span).digest() == index.digest(i)
                with tarfile.open(fileobj=io.BytesIO(span + bytes(1024))) as one:
                    assert sorted(one.getnames()) == sorted(f"{key}.{s}" for s in shardio.MEMBER_SUFFIXES)


def test_any_run_reads_exactly_its_samples(tiny_shards: Path) -> None:
    """Every run [start, stop) of a shard: the same videos, arrays and order as the whole-shard read."""
    ref = shard_refs(str(tiny_shards), "train")[0]
    whole, skipped = _videos(ref, verify=True)
    assert not skipped and len(whole) == ref.num_samples
    for start in range(ref.num_samples + 1):
        for stop in range(start, ref.num_samples + 1):
            for verify in (False, True):
                run, skipped = _videos(ref, start=start, stop=stop, verify=verify)
                assert not skipped
                assert [v.key for v in run] == [v.key for v in whole[start:stop]]
                for got, want in zip(run, whole[start:stop], strict=True):
                    assert np.array_equal(got.keypoint, want.keypoint) and got.label == want.label
    keep = {whole[1].key, whole[3].key}
    assert _keys(ref, start=1, stop=5, keep=keep) == ([whole[1].key, whole[3].key], 0)
    index = read_index(ref)
    assert _keys(ref, start=2, stop=None, index=index) == ([v.key for v in whole[2:]], 0)
    with pytest.raises(ValueError, match=r"run \[3, 9\)"):
        _keys(ref, start=3, stop=9)


def test_a_run_reads_only_its_own_bytes(tiny_shards: Path, tmp_path: Path) -> None:
    """The bytes before the run are garbage and the tar is cut right after it: the run still reads whole,
    while streaming the tar from its start cannot."""
    root = _copy(tiny_shards, tmp_path)
    ref = shard_refs(str(root), "train")[0]
    index = read_index(ref)
    data = bytearray(Path(ref.tar).read_bytes())
    data[:index.offsets[2]] = b"\xff" * int(index.offsets[2])
    Path(ref.tar).write_bytes(bytes(data[:index.end(3)]))
    assert _keys(ref, start=2, stop=4, verify=True) == (index.keys[2:4], 0)
    with pytest.raises(ShardUnavailable, match="not a readable tar"):
        _keys(dataclasses.replace(ref, indexed=False), start=2, stop=4)


def _flip_in_member(data: bytearray, index: Any, row: int, suffix: str, at: int = -3) -> None:
    """Change one byte of a member's data (near its end: a coordinate, not the .npy header)."""
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        member = tar.getmember(f"{index.keys[row]}.{suffix}")
    data[member.offset_data + member.size + at] ^= 0x10


def test_damage_in_a_run_costs_only_its_samples(tiny_shards: Path, tmp_path: Path) -> None:
    """A changed coordinate is caught by the row's SHA-256 (with verify: skipped and counted, not
    delivered); a broken header costs its sample only, the read resumes at the next span; a cut tar counts
    the rest of the run as lost. The whole-shard rule still raises ChecksumMismatch for a clean decode."""
    root = _copy(tiny_shards, tmp_path)
    ref = shard_refs(str(root), "train")[0]
    index = read_index(ref)
    clean = bytes(Path(ref.tar).read_bytes())
    data = bytearray(clean)
    _flip_in_member(data, index, 2, "keypoint.npy")
    Path(ref.tar).write_bytes(bytes(data))
    assert _keys(ref, start=1, stop=5, verify=True) == ([index.keys[i] for i in (1, 3, 4)], 1)
    assert _keys(ref, start=1, stop=5) == (index.keys[1:5], 0)  # unverified: it decodes, changed
    with pytest.raises(ChecksumMismatch, match="delivered with changed content"):
        _keys(ref, verify=True)

    data = bytearray(clean)
    data[int(index.offsets[3]) + 148] ^= 0x01  # sample 3's first header checksum
    Path(ref.tar).write_bytes(bytes(data))
    for verify in (False, True):
        assert _keys(ref, start=1, stop=5, verify=verify) == ([index.keys[i] for i in (1, 2, 4)], 1)

    Path(ref.tar).write_bytes(clean[:index.offsets[3] + 700])  # cut inside sample 3
    videos, skipped = _videos(ref, start=1, stop=5)
    assert [v.key for v in videos] == index.keys[1:3] and skipped == [2]


def test_a_missing_tar_is_unavailable_for_a_run(tiny_shards: Path, tmp_path: Path) -> None:
    root = _copy(tiny_shards, tmp_path)
    ref = shard_refs(str(root), "train")[1]
    Path(ref.tar).unlink()
    with pytest.raises(ShardUnavailable) as err:
        _keys(ref, start=1, stop=3)
    assert err.value.delivered == 0 and ref.tar in str(err.value)


# ------------------------------------------------------------------------------------ format 1


def test_a_format_1_set_is_streamed_and_says_so_once(tiny_shards: Path, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    root = _copy(tiny_shards, tmp_path)
    whole = {ref.index: _keys(ref)[0] for ref in shard_refs(str(root), "train")}
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["format_version"] = 1
    (root / "manifest.json").write_text(json.dumps(manifest))
    for i in range(len(whole)):
        _rewrite_index(root, "train", i, **dict.fromkeys(shardio.INDEX_COLUMNS))
    refs = shard_refs(str(root), "train")
    assert not any(ref.indexed for ref in refs)
    with caplog.at_level(logging.WARNING, logger="intint"):
        for ref in refs:
            for start, stop in ((1, 3), (0, 2), (4, None)):
                assert _keys(ref, start=start, stop=stop, verify=True) == (whole[ref.index][start:stop], 0)
    notes = [r for r in caplog.records if "no sample index" in r.getMessage()]
    assert len(notes) == 1 and "build-shards" in notes[0].getMessage()


# ------------------------------------------------------------------------------------ hostile index


def _int64(values: list[int]) -> pa.Array:
    return pa.array(values, type=pa.int64())


HOSTILE = {
    "negative offset": lambda ix: {shardio.INDEX_OFFSET: _int64([-512, *ix.offsets[1:]])},
    "overlapping spans": lambda ix: {shardio.INDEX_OFFSET: _int64([0, 0, *ix.offsets[2:]])},
    "huge length": lambda ix: {shardio.INDEX_LENGTH: _int64([*ix.lengths[:-1], 1 << 60])},
    "length not in blocks": lambda ix: {shardio.INDEX_LENGTH: _int64([*ix.lengths[:-1], 1000])},
    "offset past 1 PiB": lambda ix: {shardio.INDEX_OFFSET: _int64([*ix.offsets[:-1], (1 << 62)])},
    "wrong type": lambda ix: {shardio.INDEX_OFFSET: pa.array([str(v) for v in ix.offsets])},
    "missing column": lambda ix: {shardio.INDEX_SHA256: None},
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_index_is_a_one_line_error(case: str, tiny_shards: Path, tmp_path: Path) -> None:
    root = _copy(tiny_shards, tmp_path)
    ref = shard_refs(str(root), "train")[0]
    _rewrite_index(root, "train", 0, **HOSTILE[case](read_index(ref)))
    with pytest.raises(ShardMismatch) as err:
        _keys(ref, start=1, stop=3)
    assert "\n" not in str(err.value) and ref.arrow in str(err.value)
    problems = [p for s in shard_verify.verify(str(root), progress=False).shards for p in s.problems]
    assert len(problems) == 1 and "sample index" in problems[0] and "\n" not in problems[0]
    res = CliRunner().invoke(app, ["inspect", str(root), "--verify"])
    assert res.exit_code == 1 and "Traceback" not in res.output


def test_verify_reads_every_span_back(tiny_shards: Path, tmp_path: Path) -> None:
    """A sane-looking index that lies (a span past the file's end, two rows' digests swapped, spans with
    a gap) is found by inspect --verify; the loader counts a span past the end as lost, without
    allocating what it claims."""
    root = _copy(tiny_shards, tmp_path)
    ref = shard_refs(str(root), "train")[0]
    index = read_index(ref)
    assert shard_verify.verify(str(root), progress=False).ok
    digests = [index.digest(i) for i in range(len(index))]
    digests[1], digests[2] = digests[2], digests[1]
    size = Path(ref.tar).stat().st_size
    lies = {"past the tar": {shardio.INDEX_LENGTH: _int64([*index.lengths[:-1], 1 << 31])},
            "do not read back": {shardio.INDEX_SHA256: pa.array(digests, type=pa.binary(32))},
            "tile": {shardio.INDEX_OFFSET: _int64([0, *(index.offsets[1:] + 512)])}}
    truth = {shardio.INDEX_OFFSET: _int64(list(index.offsets)),
             shardio.INDEX_LENGTH: _int64(list(index.lengths)),
             shardio.INDEX_SHA256: pa.array([index.digest(i) for i in range(len(index))], pa.binary(32))}
    for words, columns in lies.items():
        _rewrite_index(root, "train", 0, **columns)
        problems = [p for s in shard_verify.verify(str(root), progress=False).shards for p in s.problems]
        assert len(problems) == 1 and words in problems[0], (words, problems)
        _rewrite_index(root, "train", 0, **truth)
    _rewrite_index(root, "train", 0, **lies["past the tar"])
    tracemalloc.start()
    try:
        videos, skipped = _videos(ref, start=ref.num_samples - 2, stop=ref.num_samples)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(videos) == 1 and skipped == [1] and peak < 64 << 20
    assert size < 1 << 20


# ------------------------------------------------------------------------------------ fuzzing


_OP = st.tuples(st.sampled_from(["flip", "zero", "truncate"]), st.integers(0, 1 << 20), st.integers(1, 255))


def _mutate(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, where, value in ops:
        pos = where % len(out) if out else 0
        if kind == "flip" and out:
            out[pos] ^= value
        elif kind == "zero":
            out[pos:pos + value] = bytes(len(out[pos:pos + value]))
        else:
            del out[pos:]
    return bytes(out)


@settings(max_examples=120, deadline=2000, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_OP, min_size=1, max_size=3), run=st.tuples(st.integers(0, 6), st.integers(0, 6)),
       verify=st.booleans())
def test_damaged_runs_deliver_samples_intact_or_count_them(tiny_shards: Path, tmp_path_factory: Any,
                                                           ops: list[tuple[str, int, int]],
                                                           run: tuple[int, int], verify: bool) -> None:
    """Any damage to the tar, any run: every position of the run is delivered or counted exactly once,
    never an exception; with verify every delivered video is the original, unverified it at least passed
    the format checks."""
    ref = shard_refs(str(tiny_shards), "train")[0]
    index = read_index(ref)
    originals = {v.key: v for v in _videos(ref)[0]}
    start, stop = min(run), max(run)
    stop = min(stop, ref.num_samples - 1) if start == 0 else stop  # a part: the whole shard is streamed
    tar = tmp_path_factory.mktemp("fuzz") / "shard.tar"
    tar.write_bytes(_mutate(Path(ref.tar).read_bytes(), ops))
    fuzzed = dataclasses.replace(ref, tar=str(tar))
    videos, skipped = _videos(fuzzed, start=start, stop=stop, verify=verify, index=index)
    assert len(videos) + sum(skipped) == stop - start
    assert all(v.key in index.keys[start:stop] for v in videos)
    assert len({v.key for v in videos}) == len(videos)
    for v in videos:
        assert v.keypoint.shape[2:] == (17, 2) and v.keypoint_score.shape == v.keypoint.shape[:3]
        if verify:
            original = originals[v.key]
            assert np.array_equal(v.keypoint, original.keypoint) and v.label == original.label


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_span_members_match_tarfile_with_their_offsets(fmt: int) -> None:
    """The buffer parser of range reads: the members tarfile sees, each with the offset of its first
    header (a GNU long-name or pax header before it included) and the end of its padded data."""
    from intint.store.tar_reader import span_members

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, size in (("k1.json", 10), ("d" * 120 + "/k2.keypoint.npy", 700), ("k3.json", 0)):
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BytesIO((bytes(range(256)) * 3)[:size]))
    data = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        want = [(m.offset, m.offset_data + -(-m.size // 512) * 512, m.name, m.size) for m in tar.getmembers()]
    end = want[-1][1]
    scan = span_members(data[:end], "t.tar")
    assert scan.error is None and scan.stop == end
    assert [(first, stop, name, len(body)) for first, stop, name, body in scan.members] == want
    broken = bytearray(data[:end])
    broken[want[1][0] + 148] ^= 1  # the second member's first header checksum
    scan = span_members(bytes(broken), "t.tar")
    assert [m[2] for m in scan.members] == [want[0][2]] and scan.stop == want[1][0] and scan.error
