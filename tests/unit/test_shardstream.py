"""Reading shard bytes: the tar member reader, the .npy decoder and the per-sample checks."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from webdataset import tariterators

from intint.store import tar_reader
from intint.store.shardstream import (
    CorruptSample,
    ShardRef,
    ShardUnavailable,
    _npy_fast,
    decode,
    raw_samples,
)
from intint.store.tar_reader import tar_members, tar_samples


def _tar(members: list[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT, extra_dir: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        if extra_dir:
            info = tarfile.TarInfo("folder")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_members_match_tarfile(fmt: int) -> None:
    long_dir = "d" * 120 if fmt != tarfile.USTAR_FORMAT else "d" * 60
    members = [("k1.json", b"{}"), ("k1.keypoint.npy", bytes(range(256)) * 3),
               (f"{long_dir}/k2.json", b"x" * 513), ("__index__", b"meta"), ("k3.json", b"")]
    if fmt == tarfile.PAX_FORMAT:
        members.append(("vidéo/k4.json", b"unicode name"))
    data = _tar(members, fmt, extra_dir=True)
    ours = [(name, bytes(body)) for name, body in tar_members(io.BytesIO(data), "mem.tar")]
    reference = [(m["fname"], m["data"]) for m in tariterators.tar_file_iterator(io.BytesIO(data))]
    assert ours == reference
    assert [name for name, _ in ours] == [n for n, _ in members if n != "__index__"]


def test_tar_members_raise_on_damage_that_tarfile_would_hide() -> None:
    data = bytearray(_tar([("k1.json", b"a" * 600), ("k2.json", b"b" * 10)]))
    bad = bytearray(data)
    bad[1536 + 10] ^= 0xFF  # a byte of the second header (first header 512 + data 1024)
    with pytest.raises(tarfile.ReadError, match="checksum"):
        list(tar_members(io.BytesIO(bytes(bad)), "x.tar"))
    with pytest.raises(tarfile.ReadError, match="end of data"):
        list(tar_members(io.BytesIO(bytes(data[:700])), "x.tar"))


def _video(key: str, frames: int = 6, label: int = 1) -> list[tuple[str, bytes]]:
    meta = {"frame_dir": f"dir/{key}.avi", "label": label, "total_frames": frames, "img_shape": [40, 60],
            "original_shape": [40, 60]}
    return [(f"{key}.keypoint.npy", _npy(np.ones((1, frames, 17, 2), np.float16))),
            (f"{key}.keypoint_score.npy", _npy(np.ones((1, frames, 17), np.float16))),
            (f"{key}.json", json.dumps(meta).encode())]


def test_truncated_shard_counts_its_lost_samples(tmp_path) -> None:
    data = _tar(_video("ka") + _video("kb") + _video("kc"))
    path = tmp_path / "s.tar"
    path.write_bytes(data[:3584 + 2000])  # a video is 3584 bytes of tar: cut inside the second one
    lost: list[tuple[int, str]] = []
    shard = ShardRef(0, str(path), "unused", 3)
    got = [s["__key__"] for s in raw_samples(shard, lambda n, m: lost.append((n, m)))]
    assert got == ["ka"]
    assert lost and lost[0][0] == 2 and "s.tar" in lost[0][1]


def test_missing_or_garbage_tar_is_unavailable(tmp_path) -> None:
    with pytest.raises(ShardUnavailable, match="nope.tar"):
        list(raw_samples(ShardRef(0, str(tmp_path / "nope.tar"), "a", 1), lambda n, m: None))
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar file" * 40)
    with pytest.raises(ShardUnavailable, match="junk.tar"):
        list(raw_samples(ShardRef(0, str(junk), "a", 1), lambda n, m: None))


@pytest.mark.parametrize("arr", [np.zeros((2, 30, 17, 2), np.float16),
                                 np.arange(6, dtype=">f4").reshape(2, 3),
                                 np.asfortranarray(np.random.default_rng(0).random((3, 4))), np.float64(2.5),
                                 np.zeros((0, 5), np.float32)])
def test_npy_reader_round_trips(arr: np.ndarray) -> None:
    out = _npy_fast(_npy(arr))
    assert out is not None and out.dtype == arr.dtype and out.shape == arr.shape and np.array_equal(out, arr)


def test_decode_never_unpickles_and_names_key_frame_dir_and_field() -> None:
    raw = {"__key__": "kz", **{name.split(".", 1)[1]: data for name, data in _video("kz")}}
    video = decode(raw, "s.tar", num_classes=4, peaks={"kz": 3})
    assert video.keypoint.shape == (1, 6, 17, 2) and video.peak == 3 and video.label == 1

    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CorruptSample, match=r"s.tar: sample kz \('dir/kz.avi'\): field 'keypoint'"):
        decode({**raw, "keypoint.npy": buf.getvalue()}, "s.tar", 4, None)
    with pytest.raises(CorruptSample, match="field 'label'"):
        decode(raw, "s.tar", num_classes=1, peaks=None)
    with pytest.raises(CorruptSample, match="field 'intensity'"):
        decode(raw, "s.tar", num_classes=4, peaks={})
    with pytest.raises(CorruptSample, match="field 'keypoint_score'"):
        decode({**raw, "keypoint_score.npy": _npy(np.ones((1, 5, 17), np.float16))}, "s.tar", 4, None)


def _wds_samples(data: bytes) -> list[dict]:
    members = tariterators.tar_file_iterator(io.BytesIO(data))
    return list(tariterators.group_by_keys({**m, "__url__": "x.tar"} for m in members))


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_samples_group_as_webdataset(fmt: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Our chunked reader groups members into samples exactly as webdataset's tarfile-based pipeline,
    also when members straddle the reader's chunks (a chunk far smaller than a member here)."""
    rng = np.random.default_rng(0)
    long_dir = "d" * 120 if fmt != tarfile.USTAR_FORMAT else "d" * 60
    members = [("a/k1.JSON", b"{}"), ("a/k1.keypoint.npy", rng.bytes(3000)), ("a/k1.keypoint_score.npy", b""),
               ("__index__", b"meta"), ("noext", b"skipped"), (".hidden", b"skipped too"),
               (f"{long_dir}/k2.json", rng.bytes(513)), (f"{long_dir}/k2.x.y", rng.bytes(1024)),
               ("k3.json", rng.bytes(70_000)), ("k4.json", b"last")]
    data = _tar(members, fmt, extra_dir=True)
    want = _wds_samples(data)
    for chunk in (1 << 20, 700, 512):
        monkeypatch.setattr(tar_reader, "_CHUNK", chunk)
        got = [{k: (bytes(v) if isinstance(v, memoryview) else v) for k, v in s.items()}
               for s in tar_samples(io.BytesIO(data), "x.tar")]
        assert got == want
    assert [s["__key__"] for s in want] == ["a/k1", f"{long_dir}/k2", "k3", "k4"]
    assert set(want[0]) >= {"json", "keypoint.npy", "keypoint_score.npy"}


def test_tar_samples_refuse_a_repeated_member() -> None:
    data = _tar([("k1.json", b"a"), ("k1.json", b"b")])
    with pytest.raises(ValueError, match="duplicate"):
        list(tar_samples(io.BytesIO(data), "x.tar"))


def test_tar_reader_errors_survive_small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad checksum, a garbage size field and a short member are errors whatever the chunking; the
    members before the damage are delivered."""
    data = bytearray(_tar([("k1.json", b"a" * 600), ("k2.json", b"b" * 10), ("k3.json", b"c" * 5)]))
    for chunk in (1 << 20, 512, 1000):
        monkeypatch.setattr(tar_reader, "_CHUNK", chunk)
        bad = bytearray(data)
        bad[1536 + 10] ^= 0xFF  # the second header
        got = []
        with pytest.raises(tarfile.ReadError, match="checksum"):
            got.extend(name for name, _ in tar_members(io.BytesIO(bytes(bad)), "x.tar"))
        assert got == ["k1.json"]
        size_bad = bytearray(data)
        size_bad[1536 + 124:1536 + 136] = b"zzzzzzzzzzz\0"  # garbage size, checksum fixed to match
        size_bad[1536 + 148:1536 + 156] = b" " * 8
        size_bad[1536 + 148:1536 + 155] = f"{sum(size_bad[1536:2048]):06o}\0".encode()
        with pytest.raises(tarfile.ReadError, match="size field"):
            list(tar_members(io.BytesIO(bytes(size_bad)), "x.tar"))
        with pytest.raises(tarfile.ReadError, match="end of data"):
            list(tar_members(io.BytesIO(bytes(data[:700])), "x.tar"))
        with pytest.raises(tarfile.ReadError, match="truncated header"):
            list(tar_members(io.BytesIO(bytes(data[:1536 + 100])), "x.tar"))
        ends = [name for name, _ in tar_members(io.BytesIO(bytes(data[:2048 + 512])), "x.tar")]
        assert ends == ["k1.json", "k2.json"]  # a stream may end at a member boundary without the marker
