"""Shard-set format and builder (issue 2, "Shards"): round trip, intensity columns, manifest,
determinism, memory:// output, rejects, --strict, verify. The Ray build is
tests/integration/test_shard_build_ray.py."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from reference.tarfile_reader import iter_tar
from typer.testing import CliRunner

from intint.cli import app
from intint.pose import intensity
from intint.pose.annotations import AnnotationError
from intint.pose.safe_pickle import UnsafePickleError
from intint.store import build, fsio, shard_verify, shardio
from intint.testing import synthetic

NUM_CLASSES = 6


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def config(src: Path | str, out: Path | str, **kw: Any) -> build.BuildConfig:
    kw.setdefault("progress", False)
    kw.setdefault("shard_size", 40)
    return build.BuildConfig(input=str(src), output=str(out), **kw)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """~200 float16 videos of 20-400 frames, 1-3 persons, two splits, as a PYSKL pickle."""
    raw = synthetic.make_annotations(200, NUM_CLASSES, splits={"train": 0.7, "test": 0.3}, seed=3,
                                     dtype=np.float16, frames=(20, 400))
    path = tmp_path_factory.mktemp("src") / "gym_hrnet.pkl"
    synthetic.write_pickle(raw, str(path))
    return path, raw


@pytest.fixture(scope="module")
def built(source: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("built") / "shards"
    build.build(config(source[0], out, workers=2))
    return out


def by_frame_dir(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["frame_dir"]: a for a in raw["annotations"]}


def test_every_sample_reads_back_equal_with_tarfile(built: Path, source: tuple[Path, dict]) -> None:
    raw = source[1]
    inputs = by_frame_dir(raw)
    manifest = shardio.read_manifest(str(built))
    for split, listed in raw["split"].items():
        seen: list[str] = []
        for tar_url, _, n in shardio.shard_urls(str(built), split):
            rows = list(iter_tar(tar_url))
            assert len(rows) == n
            assert len({r["label"] for r in rows}) > 1  # shuffled: shards mix classes
            for r in rows:
                a = inputs[r["frame_dir"]]
                assert r["key"] == shardio.sample_key(a["frame_dir"])
                assert r["keypoint"].dtype == np.float16 and r["keypoint_score"].dtype == np.float16
                np.testing.assert_array_equal(r["keypoint"], a["keypoint"])
                np.testing.assert_array_equal(r["keypoint_score"], a["keypoint_score"])
                assert (r["label"], r["total_frames"]) == (a["label"], a["total_frames"])
                assert r["img_shape"] == list(a["img_shape"])
                assert r["original_shape"] == list(a["original_shape"])
                seen.append(r["frame_dir"])
        assert sorted(seen) == sorted(listed)  # each listed video in exactly one shard of its split
        assert manifest.splits[split].num_samples == len(listed)
    assert manifest.classes == [f"class_{i}" for i in range(NUM_CLASSES)] and manifest.dataset == "gym_hrnet"


def test_webdataset_reads_the_shards(built: Path, source: tuple[Path, dict]) -> None:
    import webdataset as wds

    inputs = by_frame_dir(source[1])
    urls = [t for t, _, _ in shardio.shard_urls(str(built), "train")]
    ds = wds.WebDataset(urls, shardshuffle=False, nodesplitter=None, workersplitter=None).decode()
    count = 0
    for s in ds:
        meta = s["json"]
        assert s["__key__"] == shardio.sample_key(meta["frame_dir"])
        np.testing.assert_array_equal(s["keypoint.npy"], inputs[meta["frame_dir"]]["keypoint"])
        np.testing.assert_array_equal(s["keypoint_score.npy"], inputs[meta["frame_dir"]]["keypoint_score"])
        count += 1
    assert count == len(source[1]["split"]["train"])


def test_intensity_columns_equal_direct_compute(built: Path) -> None:
    manifest = shardio.read_manifest(str(built))
    assert manifest.intensity.modes == list(intensity.MODES)
    assert manifest.intensity.definitions == list(intensity.DEFINITIONS)
    for split in manifest.splits:
        for tar_url, arrow_url, n in shardio.shard_urls(str(built), split):
            table = shardio.read_intensity(arrow_url)
            rows = list(iter_tar(tar_url))
            assert table.num_rows == n
            assert table.column("key").to_pylist() == [r["key"] for r in rows]  # the tar's order
            assert table.schema.field("label").type == "int32"
            for i, r in enumerate(rows):
                assert table.column("frame_dir")[i].as_py() == r["frame_dir"]
                assert table.column("total_frames")[i].as_py() == r["total_frames"]
                for mode in manifest.intensity.modes:
                    want = intensity.compute(r["keypoint"], r["keypoint_score"], mode)
                    for d in intensity.DEFINITIONS:
                        got = table.column(f"{mode}/{d}")[i].values.to_numpy()
                        assert got.dtype == np.float32
                        np.testing.assert_array_equal(got, want[d])
                        assert table.column(f"peak/{mode}/{d}")[i].as_py() == intensity.peak(want[d])
    sub = shardio.read_intensity(arrow_url, ["key", "reference/J"])
    assert sub.column_names == ["key", "reference/J"]
    with pytest.raises(KeyError, match="no column"):
        shardio.read_intensity(arrow_url, ["reference/nope"])


def test_manifest_counts_and_checksums(built: Path, source: tuple[Path, dict]) -> None:
    data = json.loads((built / "manifest.json").read_text())
    assert data["format_version"] == 2 and data["num_classes"] == NUM_CLASSES and data["rejects"] == 0
    assert "time" not in json.dumps(data)  # no timestamps
    files = {p.name for p in built.iterdir()}
    listed = {"manifest.json", "rejects.jsonl"}
    for split, info in data["splits"].items():
        assert info["num_samples"] == len(source[1]["split"][split])
        sizes = [s["num_samples"] for s in info["shards"]]
        assert sum(sizes) == info["num_samples"] and max(sizes) - min(sizes) <= 1 and max(sizes) <= 40
        for i, s in enumerate(info["shards"]):
            assert (s["tar"], s["arrow"]) == (f"{split}-{i:06d}.tar", f"{split}-{i:06d}.intensity.arrow")
            for kind in ("tar", "arrow"):
                assert s["sha256"][kind] == hashlib.sha256((built / s[kind]).read_bytes()).hexdigest()
            listed |= {s["tar"], s["arrow"]}
    assert files == listed  # nothing else (no temp files) left behind
    assert shardio.read_manifest(str(built / "manifest.json")).to_json() == data
    report = shard_verify.verify(str(built))
    assert report.ok and sum(s.tar_samples for s in report.shards) == 200
    assert data["build_args"]["input_sha256"] == hashlib.sha256(source[0].read_bytes()).hexdigest()


def test_rebuild_is_byte_identical_and_seed_matters(built: Path, source: tuple[Path, dict],
                                                    tmp_path: Path) -> None:
    build.build(config(source[0], tmp_path / "again", workers=1))
    assert file_hashes(tmp_path / "again") == file_hashes(built)
    build.build(config(source[0], tmp_path / "seed1", workers=2, seed=1))
    other = file_hashes(tmp_path / "seed1")
    assert other.keys() == file_hashes(built).keys() and other["train-000000.tar"] != file_hashes(built)[
        "train-000000.tar"]


def test_memory_output_matches_local_build(built: Path, source: tuple[Path, dict]) -> None:
    url = f"memory://shards-{uuid.uuid4().hex}"
    build.build(config(source[0], url, workers=2))
    assert shard_verify.verify(url).ok
    fs = fsspec.filesystem("memory")
    for name, digest in file_hashes(built).items():
        assert hashlib.sha256(fs.cat(f"{url}/{name}")).hexdigest() == digest, name
    tar, arrow, n = shardio.shard_urls(url, "test")[0]
    assert len(list(iter_tar(tar))) == n == shardio.read_intensity(arrow).num_rows


def test_splits_subset_and_num_shards(source: tuple[Path, dict], built: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub"
    build.build(config(source[0], out, splits=("test",), num_shards=4, workers=2))
    m = shardio.read_manifest(str(out))
    assert list(m.splits) == ["test"]
    sizes = [e.num_samples for e in m.splits["test"].shards]
    assert len(sizes) == 4 and max(sizes) - min(sizes) <= 1 and sum(sizes) == len(source[1]["split"]["test"])
    # a split's shuffle depends on the seed and split name only: same videos per position as the full build
    full = [r["frame_dir"] for t, _, _ in shardio.shard_urls(str(built), "test") for r in iter_tar(t)]
    sub = [r["frame_dir"] for t, _, _ in shardio.shard_urls(str(out), "test") for r in iter_tar(t)]
    assert full == sub
    with pytest.raises(ValueError, match="too few for 1000 shards"):
        build.build(config(source[0], tmp_path / "x", num_shards=1000))


def _bad_input() -> dict[str, Any]:
    raw = synthetic.make_annotations(12, 3, splits=("train", "test"), seed=9, dtype=np.float32,
                                     frames=(20, 40))
    anns = raw["annotations"]
    anns[0]["keypoint"] = anns[0]["keypoint"][:, :, :16]  # V != 17
    anns[1]["label"] = 7  # out of range for 3 classes
    anns[2]["keypoint"][0, 3, 4, 0] = np.nan  # kept, joint made absent
    anns.append(dict(anns[3]))  # duplicate frame_dir
    raw["split"]["train"].append("missing/video")  # split entry without annotation
    orphan = dict(anns[4], frame_dir="orphan")
    anns.append(orphan)  # in no split
    return raw


def test_bad_inputs_go_to_rejects_and_totals_add_up(tmp_path: Path) -> None:
    raw = _bad_input()
    src = tmp_path / "bad.pkl"
    synthetic.write_pickle(raw, str(src))
    out = tmp_path / "out"
    summary = build.build(config(src, out, num_classes=3, workers=1))
    lines = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    fds = [a["frame_dir"] for a in raw["annotations"]]
    split_of = {fd: s for s, names in raw["split"].items() for fd in names}
    got = {(r["frame_dir"], r["split"], r["field"]) for r in lines}
    assert got == {(fds[0], split_of[fds[0]], "keypoint"), (fds[1], split_of[fds[1]], "label"),
                   (fds[3], split_of[fds[3]], "frame_dir"), ("missing/video", "train", "split"),
                   ("orphan", None, "split")}
    assert all(set(r) == {"frame_dir", "split", "field", "reason"} and r["reason"] for r in lines)
    assert summary.nonfinite == 1 and summary.rejects == len(lines) == 5
    assert summary.inputs == 14 == summary.written_inputs + summary.rejected_inputs + summary.unselected
    for name, s in summary.splits.items():
        assert s.listed == len(raw["split"][name]) == s.written + s.rejected
    text = "\n".join(summary.lines())
    assert "inputs: 14 annotations" in text and "listed" in text
    m = shardio.read_manifest(str(out))
    assert m.rejects == 5 and sum(i.num_samples for i in m.splits.values()) == 12 - 3
    assert fds[2] in {r["frame_dir"] for t, _, _ in shardio.shard_urls(str(out), split_of[fds[2]])
                      for r in iter_tar(t)}

    with pytest.raises(AnnotationError) as exc:
        build.build(config(src, tmp_path / "strict", num_classes=3, strict=True))
    assert exc.value.frame_dir == fds[0] and exc.value.field == "keypoint"
    assert not (tmp_path / "strict" / "manifest.json").exists()


def test_malicious_pickle_is_refused_by_the_build(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            import os

            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    src = tmp_path / "evil.pkl"
    src.write_bytes(pickle.dumps({"split": {"train": ["a"]}, "annotations": [Evil()]}))
    with pytest.raises(UnsafePickleError):
        build.build(config(src, tmp_path / "out"))
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "out").exists()


def test_existing_shard_set_needs_overwrite_and_stale_shards_go(built: Path, source: tuple[Path, dict],
                                                               tmp_path: Path) -> None:
    out = tmp_path / "ow"
    shutil.copytree(built, out)
    with pytest.raises(FileExistsError, match="overwrite"):
        build.build(config(source[0], out))
    build.build(config(source[0], out, shard_size=100, overwrite=True))
    assert shard_verify.verify(str(out)).ok
    assert not (out / "train-000003.tar").exists()  # 4 shards before, 2 now


def test_verify_and_inspect_detect_corruption(built: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["inspect", str(built), "--verify"])
    assert ok.exit_code == 0, ok.output
    assert "train: 140 videos in 4 shards" in ok.output and "OK" in ok.output

    bad = tmp_path / "bad"
    shutil.copytree(built, bad)
    tar = bad / "train-000001.tar"
    data = bytearray(tar.read_bytes())
    data[600] ^= 0xFF
    tar.write_bytes(bytes(data))
    (bad / "test-000000.intensity.arrow").unlink()
    report = shard_verify.verify(str(bad))
    problems = [p for s in report.shards for p in s.problems]
    assert not report.ok and len(problems) == 2
    assert any("train-000001.tar" in p and "sha256" in p for p in problems)
    assert any("test-000000.intensity.arrow" in p and "missing" in p for p in problems)
    res = runner.invoke(app, ["inspect", str(bad), "--verify"])
    assert res.exit_code == 1 and "FAILED" in res.output


def test_cli_build_shards_synthetic_and_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "syn"
    res = runner.invoke(app, ["build-shards", "--synthetic", "30", "--num-classes", "4", "-o", str(out),
                              "--shard-size", "10", "--workers", "1", "--no-progress",
                              "--modes", "reference"])
    assert res.exit_code == 0, res.output
    assert "inputs: 30 annotations = 30 written" in res.output
    m = shardio.read_manifest(str(out))
    assert m.num_classes == 4 and m.intensity.modes == ["reference"] and m.dataset == "synthetic"
    assert shard_verify.verify(str(out)).ok

    raw = _bad_input()
    src = tmp_path / "bad.pkl"
    src.write_bytes(pickle.dumps(raw))
    classes = tmp_path / "classes.txt"
    classes.write_text("a\nb\nc\n")
    res = runner.invoke(app, ["build-shards", str(src), "-o", str(tmp_path / "s"), "--classes", str(classes),
                              "--strict", "--no-progress"])
    assert res.exit_code == 1
    assert "field 'keypoint'" in res.output and raw["annotations"][0]["frame_dir"] in res.output


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    with pytest.raises(RuntimeError):
        with fsio.atomic_open(str(target)) as f:
            f.write(b"partial")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []
    assert fsio.atomic_write(str(target), b"done") == hashlib.sha256(b"done").hexdigest()
    assert target.read_bytes() == b"done" and list(tmp_path.iterdir()) == [target]


def test_sample_key_is_safe_for_webdataset() -> None:
    keys = [shardio.sample_key(f"a/b.c/{i}.mp4") for i in range(1000)]
    assert len(set(keys)) == 1000
    assert all(len(k) == 17 and k[0] == "k" and "." not in k and "/" not in k for k in keys)
    assert Counter(k[1] for k in keys).keys() <= set("0123456789abcdef")
