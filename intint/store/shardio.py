"""The shard-set format (docs/architecture.md, format_version 2): names, manifest, writing, and the
intensity tables with their sample index.

One module owns the bytes on disk so the builder, the loader, ``intint inspect`` and the tests agree
on them. Writing is deterministic (fixed member order, mtime 0, uid/gid 0, empty owner names,
``sort_keys`` JSON, no timestamps) so a rebuild from the same input and seed is byte-identical and
the manifest's SHA-256 values identify a build. Reading the tars is ``intint.store.shardstream``'s job
(which never unpickles: ``.npy`` members are read without pickle support), checking a finished set
``intint.store.shard_verify``'s.

A manifest is data, not a list of paths to trust: :meth:`Manifest.from_json` (so every reader, through
:func:`read_manifest`) refuses one whose split names are not valid split names, whose shard entries are
not exactly ``{split}-{i:06d}.tar`` / ``.intensity.arrow`` for the i-th shard of their split, that lists
a file twice, or holds a negative count; :func:`shard_urls` joins names with ``fsio.child``. So no
reader, verifier or ``--overwrite`` ever touches a file outside the set's folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from intint.pose.annotations import Reject, Sample
from intint.pose.names import split_name_problem
from intint.pose.pickle_builders import bounded_repr
from intint.store import fsio

FORMAT_VERSION = 2  # what the builder writes
INDEXED_FORMAT_VERSION = 2  # the first with the sample index (the ``sample_*`` columns)
READABLE_VERSIONS = (1, 2)  # format 1 is read by streaming its tars (no range reads)
MANIFEST_NAME = "manifest.json"
REJECTS_NAME = "rejects.jsonl"
MEMBER_SUFFIXES: tuple[str, ...] = ("keypoint.npy", "keypoint_score.npy", "json")
META_COLUMNS: tuple[str, ...] = ("key", "frame_dir", "label", "total_frames")
# The sample index (format_version 2): per row, where the sample lies in the tar (from its first member's
# header to the end of its last member's padded data) and the SHA-256 of those bytes.
INDEX_OFFSET, INDEX_LENGTH, INDEX_SHA256 = "sample_offset", "sample_length", "sample_sha256"
INDEX_COLUMNS: tuple[str, ...] = (INDEX_OFFSET, INDEX_LENGTH, INDEX_SHA256)


class ShardFormatError(ValueError):
    """A shard set does not match its format (names the file and what is wrong)."""


def sample_key(frame_dir: str) -> str:
    """WebDataset key of a video: ``k`` + first 16 hex of sha1(frame_dir).

    frame_dir values contain dots and slashes, which WebDataset would read as extension and folder
    separators; a hash keeps keys safe, fixed-length and unique enough (64 bits).
    """
    return "k" + hashlib.sha1(frame_dir.encode("utf-8")).hexdigest()[:16]


def shard_names(split: str, index: int) -> tuple[str, str]:
    """File names of shard ``index`` of ``split``: (tar, arrow)."""
    stem = f"{split}-{index:06d}"
    return f"{stem}.tar", f"{stem}.intensity.arrow"


def curve_column(mode: str, definition: str) -> str:
    return f"{mode}/{definition}"


def peak_column(mode: str, definition: str) -> str:
    return f"peak/{mode}/{definition}"


# ---------------------------------------------------------------------------------------- manifest


@dataclass
class ShardEntry:
    tar: str
    arrow: str
    num_samples: int
    sha256: dict[str, str]  # {"tar": hex, "arrow": hex}


@dataclass
class SplitInfo:
    num_samples: int
    shards: list[ShardEntry]


@dataclass
class IntensityInfo:
    modes: list[str]
    definitions: list[str]
    jba_weights: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    """``manifest.json`` as a typed object; ``to_json``/``from_json`` round-trip it exactly."""

    dataset: str
    classes: list[str]
    splits: dict[str, SplitInfo]
    intensity: IntensityInfo
    build_args: dict[str, Any]
    rejects: int
    format_version: int = FORMAT_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["num_classes"] = self.num_classes
        return d

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), sort_keys=True, indent=1) + "\n").encode()

    @classmethod
    def from_json(cls, d: Mapping[str, Any], source: str = MANIFEST_NAME) -> Manifest:
        try:
            version = d["format_version"]
            if version not in READABLE_VERSIONS:
                raise ShardFormatError(f"{source}: format_version {bounded_repr(version)}, this code reads "
                                       f"{', '.join(map(str, READABLE_VERSIONS))}")
            splits = {
                name: SplitInfo(
                    num_samples=int(s["num_samples"]),
                    shards=[ShardEntry(tar=e["tar"], arrow=e["arrow"], num_samples=int(e["num_samples"]),
                                       sha256=dict(e["sha256"])) for e in s["shards"]])
                for name, s in d["splits"].items()
            }
            it = d["intensity"]
            m = cls(dataset=d["dataset"], classes=list(d["classes"]), splits=splits,
                    intensity=IntensityInfo(modes=list(it["modes"]), definitions=list(it["definitions"]),
                                            jba_weights=dict(it.get("jba_weights", {}))),
                    build_args=dict(d["build_args"]), rejects=int(d["rejects"]), format_version=version)
        except (KeyError, TypeError, AttributeError) as e:
            raise ShardFormatError(f"{source}: malformed manifest ({type(e).__name__}: {e})") from e
        if d.get("num_classes", m.num_classes) != m.num_classes:
            raise ShardFormatError(
                f"{source}: num_classes {bounded_repr(d['num_classes'])} != len(classes) {m.num_classes}")
        check_shard_entries(m, source)
        return m


def check_shard_entries(manifest: Manifest, source: str = MANIFEST_NAME) -> None:
    """Refuse (:class:`ShardFormatError`) a manifest whose files are not exactly the ones its format
    allows: valid split names, the i-th shard of split ``s`` named ``shard_names(s, i)``, no file listed
    twice, counts >= 0. Every name it lists is then a plain file name inside the set's folder."""
    seen: set[str] = set()
    for split, info in manifest.splits.items():
        problem = split_name_problem(split)
        if problem is not None:
            raise ShardFormatError(f"{source}: {problem}")
        if info.num_samples < 0:
            raise ShardFormatError(f"{source}: split {split!r} has num_samples {info.num_samples} < 0")
        for i, entry in enumerate(info.shards):
            names = (entry.tar, entry.arrow)
            twice = next((n for n in names if isinstance(n, str) and n in seen), None)
            if twice is not None:
                raise ShardFormatError(
                    f"{source}: split {split!r} lists the file {bounded_repr(twice)} twice")
            want = shard_names(split, i)
            if names != want:
                raise ShardFormatError(
                    f"{source}: split {split!r}, shard {i} names {bounded_repr(entry.tar)} and "
                    f"{bounded_repr(entry.arrow)}; only {want[0]!r} and {want[1]!r} are allowed there")
            seen.update(names)
            if entry.num_samples < 0:
                raise ShardFormatError(f"{source}: {entry.tar} has num_samples {entry.num_samples} < 0")


def manifest_url(url: str) -> str:
    """The manifest of a shard set given its folder URL (or the manifest URL itself)."""
    return url if url.rstrip("/").endswith(MANIFEST_NAME) else fsio.join(url, MANIFEST_NAME)


def root_url(url: str) -> str:
    u = url.rstrip("/")
    return u[: -len(MANIFEST_NAME) - 1] if u.endswith("/" + MANIFEST_NAME) else u


def read_manifest(url: str) -> Manifest:
    """Read ``manifest.json`` of the shard set at ``url`` (folder or manifest URL)."""
    murl = manifest_url(url)
    try:
        data = fsio.read_bytes(murl)
    except FileNotFoundError:
        raise FileNotFoundError(f"no shard set at {root_url(url)!r}: {murl} does not exist") from None
    return Manifest.from_json(json.loads(data), source=murl)


def write_manifest(url: str, manifest: Manifest) -> str:
    return fsio.atomic_write(manifest_url(url), manifest.dumps())


def write_rejects(url: str, rejects: Sequence[Reject]) -> str:
    data = b"".join((json.dumps(r.to_json(), sort_keys=True) + "\n").encode() for r in rejects)
    return fsio.atomic_write(fsio.join(root_url(url), REJECTS_NAME), data)


def shard_urls(url: str, split: str, manifest: Manifest | None = None) -> list[tuple[str, str, int]]:
    """``[(tar_url, arrow_url, num_samples), ...]`` of one split, in shard-index order."""
    manifest = manifest or read_manifest(url)
    if split not in manifest.splits:
        raise KeyError(
            f"split {split!r} not in shard set {root_url(url)!r}; it has {sorted(manifest.splits)}")
    root = root_url(url)
    return [(fsio.child(root, e.tar), fsio.child(root, e.arrow), e.num_samples)
            for e in manifest.splits[split].shards]


# ---------------------------------------------------------------------------------------- tar


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def sample_meta(sample: Sample) -> dict[str, Any]:
    return {"frame_dir": sample.frame_dir, "label": int(sample.label),
            "total_frames": int(sample.total_frames), "img_shape": list(sample.img_shape),
            "original_shape": list(sample.original_shape)}


def encode_sample(sample: Sample) -> list[tuple[str, bytes]]:
    """The tar members of one video, in the fixed order of :data:`MEMBER_SUFFIXES`."""
    key = sample_key(sample.frame_dir)
    meta = json.dumps(sample_meta(sample), sort_keys=True, ensure_ascii=False).encode("utf-8")
    return [(f"{key}.keypoint.npy", _npy_bytes(sample.keypoint)),
            (f"{key}.keypoint_score.npy", _npy_bytes(sample.keypoint_score)),
            (f"{key}.json", meta)]


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = 0
    ti.mode = 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.REGTYPE
    return ti


@dataclass
class SampleSpan:
    """Where one sample lies in its tar: ``offset`` of its first member's header, ``length`` up to the end
    of its last member's padded data, and the SHA-256 of those bytes."""

    offset: int
    length: int
    sha256: bytes


class _SpanHasher:
    """The tar writer's file object: passes bytes on, and hashes them into ``sample`` while one is set."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.sample: Any = None  # a hashlib object while a sample's members are written

    def write(self, data: bytes) -> int:
        if self.sample is not None:
            self.sample.update(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.raw.tell()


def write_tar(url: str, samples: Sequence[Sample]) -> tuple[str, list[SampleSpan]]:
    """Write a WebDataset tar of ``samples`` (in order) atomically; returns its SHA-256 and the span of
    every sample (the sample index).

    Mode ``"w"`` writes each header and data block straight through (no record buffering), so the
    archive offset before and after a sample's members is its span, and the bytes hashed in between are
    exactly its bytes; the file is byte-identical to a stream-mode (``"w|"``) write.
    """
    spans: list[SampleSpan] = []
    with fsio.atomic_open(url) as f:
        out = _SpanHasher(f)
        with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:  # type: ignore[call-overload]
            for sample in samples:
                start, out.sample = tar.offset, hashlib.sha256()
                for name, data in encode_sample(sample):
                    tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
                spans.append(SampleSpan(start, tar.offset - start, out.sample.digest()))
                out.sample = None
    return f.hexdigest(), spans


# ---------------------------------------------------------------------------------------- arrow


def _numeric_array(values: np.ndarray) -> pa.Array:
    """Zero-copy Arrow array of a 1-D NumPy array. (``pa.array`` would import pandas, ~0.5 s in
    every fresh worker process, for nothing.)"""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def _string_array(values: Sequence[str]) -> pa.Array:
    data = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(data) + 1, dtype=np.int32)
    np.cumsum([len(d) for d in data], out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), len(data),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))])


def index_arrays(spans: Sequence[SampleSpan]) -> dict[str, pa.Array]:
    """The sample-index columns of a shard's table: int64 offsets and lengths, 32-byte SHA-256 digests."""
    digests = b"".join(s.sha256 for s in spans)
    return {INDEX_OFFSET: _numeric_array(np.array([s.offset for s in spans], dtype=np.int64)),
            INDEX_LENGTH: _numeric_array(np.array([s.length for s in spans], dtype=np.int64)),
            INDEX_SHA256: pa.Array.from_buffers(pa.binary(32), len(spans), [None, pa.py_buffer(digests)])}


def intensity_table(samples: Sequence[Sample], curves: Sequence[Mapping[str, np.ndarray]],
                    peaks: Sequence[Mapping[str, int]], columns: Sequence[str],
                    spans: Sequence[SampleSpan] | None = None) -> pa.Table:
    """The ``.intensity.arrow`` table: meta columns, one ``list<float32>`` column per name in
    ``columns`` (``"{mode}/{definition}"``), then the int32 ``"peak/..."`` columns in the same order,
    then (``spans`` given) the sample-index columns :data:`INDEX_COLUMNS`.

    Lists are assembled from one concatenated float32 buffer and an offsets array, not per row.
    """
    lengths = np.array([s.total_frames for s in samples], dtype=np.int64)
    offsets = _numeric_array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    arrays: dict[str, pa.Array] = {
        "key": _string_array([sample_key(s.frame_dir) for s in samples]),
        "frame_dir": _string_array([s.frame_dir for s in samples]),
        "label": _numeric_array(np.array([s.label for s in samples], dtype=np.int32)),
        "total_frames": _numeric_array(lengths.astype(np.int32)),
    }
    for col in columns:
        flat = (np.concatenate([np.asarray(c[col], dtype=np.float32) for c in curves]) if curves
                else np.zeros(0, np.float32))
        arrays[col] = pa.ListArray.from_arrays(offsets, _numeric_array(flat))
    for col in columns:
        arrays["peak/" + col] = _numeric_array(np.array([p[col] for p in peaks], dtype=np.int32))
    if spans is not None:
        arrays |= index_arrays(spans)
    return pa.Table.from_arrays(list(arrays.values()), names=list(arrays))


def write_intensity(url: str, table: pa.Table) -> str:
    """Write an Arrow IPC *file* (uncompressed, so a local reader can memory-map it) atomically."""
    with fsio.atomic_open(url) as f:
        sink = pa.PythonFile(f, mode="w")  # type: ignore[arg-type]
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    return f.hexdigest()


def read_intensity(arrow_url: str, columns: Sequence[str] | None = None) -> pa.Table:
    """Read an ``.intensity.arrow`` table (memory-mapped when local), optionally some columns only."""
    if fsio.is_local(arrow_url):
        _, path = fsio.url_to_fs(arrow_url)
        table = pa.ipc.open_file(pa.memory_map(path)).read_all()
    else:
        table = pa.ipc.open_file(pa.BufferReader(fsio.read_bytes(arrow_url))).read_all()
    if columns is None:
        return table
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise KeyError(f"{arrow_url}: no column(s) {missing}; it has {table.column_names}")
    return table.select(list(columns))


# ---------------------------------------------------------------------------------------- shard


def write_shard(tar_url: str, arrow_url: str, samples: Sequence[Sample],
                curves: Sequence[Mapping[str, np.ndarray]], peaks: Sequence[Mapping[str, int]],
                columns: Sequence[str]) -> dict[str, str]:
    """Write one shard (tar, then the intensity table with the tar's sample index, same video order);
    returns their SHA-256 values."""
    if not (len(samples) == len(curves) == len(peaks)):
        raise ValueError(
            f"{tar_url}: {len(samples)} samples but {len(curves)} curve rows, {len(peaks)} peaks")
    tar_sha, spans = write_tar(tar_url, samples)
    return {"tar": tar_sha,
            "arrow": write_intensity(arrow_url, intensity_table(samples, curves, peaks, columns, spans))}
