"""Hostile and broken input to the shard builder (issue 13, "Paths" and "Samples that stop the build
instead of being rejected"): names are data, never paths; the old set survives a failed or killed
build; pool workers die with the build; every per-sample problem is a ``rejects.jsonl`` line."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from intint.cli import app
from intint.pose import annotations, intensity
from intint.pose.annotations import AnnotationError
from intint.store import build, shard_verify, shardio
from intint.store.shard_writer import run_local
from intint.testing import synthetic

REPO = Path(__file__).resolve().parents[2]
NUM_CLASSES = 3


def config(src: Path | str, out: Path | str, **kw: Any) -> build.BuildConfig:
    kw.setdefault("progress", False)
    kw.setdefault("workers", 1)
    kw.setdefault("modes", ("reference",))
    return build.BuildConfig(input=str(src), output=str(out), **kw)


def small_raw(n: int = 12, seed: int = 9, dtype: Any = np.float32) -> dict[str, Any]:
    return synthetic.make_annotations(n, NUM_CLASSES, splits=("train", "test"), seed=seed, dtype=dtype,
                                      frames=(20, 30))


def write_source(tmp_path: Path, raw: dict[str, Any], name: str = "in.pkl") -> Path:
    src = tmp_path / name
    synthetic.write_pickle(raw, str(src))
    return src


def tree_hashes(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) → its SHA-256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def reject_lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text("utf-8").splitlines()]


def split_of(raw: dict[str, Any], frame_dir: str) -> str:
    return next(s for s, names in raw["split"].items() if frame_dir in names)


@pytest.fixture()
def old_set(tmp_path: Path) -> Path:
    """A valid shard set at ``tmp_path/set`` (3 shards per split)."""
    out = tmp_path / "set"
    build.build(config(write_source(tmp_path, small_raw(), "old.pkl"), out, num_classes=NUM_CLASSES,
                       num_shards=3))
    return out


def edit_manifest(root: Path, edit: Any) -> None:
    d = json.loads((root / "manifest.json").read_text())
    edit(d)
    (root / "manifest.json").write_text(json.dumps(d))


# ------------------------------------------------------------------------------------------ paths


@pytest.mark.parametrize("split", ["../../x", "sub/dir", "", "..", "train\udc80", "a b"])
def test_split_name_that_is_a_path_refuses_the_build(tmp_path: Path, split: str) -> None:
    raw = small_raw()
    raw["split"][split] = raw["split"].pop("train")
    src = write_source(tmp_path, raw)
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(AnnotationError) as exc:
        build.build(config(src, out, num_classes=NUM_CLASSES))
    assert exc.value.field == "split" and "split name" in str(exc.value)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["in.pkl"]  # nothing written anywhere

    res = CliRunner().invoke(app, ["build-shards", str(src), "-o", str(out), "--num-classes", "3",
                                   "--workers", "1", "--no-progress"])
    assert res.exit_code == 1 and "error:" in res.output and "split name" in res.output
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["in.pkl"]


def test_manifest_naming_a_file_outside_the_set_is_refused_and_overwrite_keeps_it(
        old_set: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours")
    edit_manifest(old_set, lambda d: d["splits"]["train"]["shards"][1].update(tar="../victim.txt"))

    with pytest.raises(shardio.ShardFormatError, match="victim"):
        shardio.read_manifest(str(old_set))
    with pytest.raises(shardio.ShardFormatError):
        shardio.shard_urls(str(old_set), "train")  # what every loader opens the set with
    with pytest.raises(shardio.ShardFormatError):
        shard_verify.verify(str(old_set))
    res = CliRunner().invoke(app, ["inspect", str(old_set), "--verify"])
    assert res.exit_code == 1 and "victim" in res.output

    src = write_source(tmp_path, small_raw(seed=4), "new.pkl")
    build.build(config(src, old_set, num_classes=NUM_CLASSES, num_shards=1, overwrite=True))
    assert victim.read_text() == "not yours"  # --overwrite deleted nothing outside the set
    assert shard_verify.verify(str(old_set)).ok


@pytest.mark.parametrize("edit", [
    pytest.param(lambda s: s.append(dict(s[0])), id="shard listed twice"),
    pytest.param(lambda s: s.__setitem__(1, dict(s[0])), id="shard listed twice in place of another"),
    pytest.param(lambda s: s.reverse(), id="shards out of index order"),
    pytest.param(lambda s: s[0].update(tar="sub/train-000000.tar"), id="name in a subfolder"),
    pytest.param(lambda s: s[0].update(arrow="test-000000.intensity.arrow"), id="another split's file"),
    pytest.param(lambda s: s[0].update(num_samples=-1), id="negative count"),
])
def test_manifest_whose_shard_list_is_not_the_sets_own_is_refused(old_set: Path, edit: Any) -> None:
    edit_manifest(old_set, lambda d: edit(d["splits"]["train"]["shards"]))
    with pytest.raises(shardio.ShardFormatError):
        shardio.read_manifest(str(old_set))
    res = CliRunner().invoke(app, ["inspect", str(old_set), "--verify"])
    assert res.exit_code == 1 and "error:" in res.output


def test_manifest_with_a_split_name_that_is_a_path_is_refused(old_set: Path) -> None:
    def rename(d: dict[str, Any]) -> None:
        info = d["splits"].pop("train")
        for i, e in enumerate(info["shards"]):
            e["tar"], e["arrow"] = shardio.shard_names("../train", i)
        d["splits"]["../train"] = info

    edit_manifest(old_set, rename)
    with pytest.raises(shardio.ShardFormatError, match="split name"):
        shardio.read_manifest(str(old_set))


def _failing_executor(tasks: list, workers: int, progress: bool) -> list:
    run_local(tasks[: len(tasks) // 2], 1, progress)  # half the shards are written, then a task fails
    raise RuntimeError("a shard task failed")


@pytest.mark.parametrize("failure", ["strict bad sample", "too many shards", "task fails",
                                     "bad class file"])
def test_failed_overwrite_leaves_the_old_set_untouched(old_set: Path, tmp_path: Path, failure: str) -> None:
    before = tree_hashes(old_set)
    raw = small_raw(seed=5)
    kw: dict[str, Any] = {"num_classes": NUM_CLASSES, "overwrite": True, "num_shards": 2}
    run_tasks = run_local
    if failure == "strict bad sample":
        raw["annotations"][3]["keypoint"] = raw["annotations"][3]["keypoint"][:, :, :16]
        kw["strict"] = True
    elif failure == "too many shards":
        kw["num_shards"] = 1000
    elif failure == "task fails":
        run_tasks = _failing_executor
    else:
        (tmp_path / "classes.txt").write_text("a\n\nb\n")
        kw.update(classes=str(tmp_path / "classes.txt"), num_classes=None)
    with pytest.raises((ValueError, RuntimeError)):
        build.build(config(write_source(tmp_path, raw, "new.pkl"), old_set, **kw), run_tasks=run_tasks)
    assert tree_hashes(old_set) == before  # manifest, rejects and every shard byte-identical
    assert shard_verify.verify(str(old_set)).ok
    assert sorted(p.name for p in old_set.iterdir() if p.name.startswith(".")) == []


def test_next_build_removes_temporaries_of_a_killed_build(old_set: Path, tmp_path: Path) -> None:
    hexid = uuid.uuid4().hex
    staged = old_set / f".staging-{hexid}"
    staged.mkdir()
    (staged / "train-000000.tar").write_bytes(b"half a shard")
    (staged / f"train-000001.tar.tmp-{uuid.uuid4().hex}").write_bytes(b"x")
    leftovers = [f"train-000000.tar.tmp-{hexid}", f"manifest.json.tmp-{uuid.uuid4().hex}",
                 f"rejects.jsonl.tmp-{uuid.uuid4().hex}"]
    for name in leftovers:
        (old_set / name).write_bytes(b"partial")
    mine = ["notes.txt", ".staging-notauuid", "train.tmp-plan"]  # not a build's temporaries: kept
    for name in mine:
        (old_set / name).write_text("keep")

    src = write_source(tmp_path, small_raw(seed=6), "new.pkl")
    build.build(config(src, old_set, num_classes=NUM_CLASSES, num_shards=2, overwrite=True))
    names = sorted(p.name for p in old_set.iterdir())
    assert not staged.exists() and not any(n in names for n in leftovers)
    assert all(n in names for n in mine)
    assert not any(".tmp-" in n and n not in mine for n in names)
    assert shard_verify.verify(str(old_set)).ok


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (Linux /proc)."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and int(stat[1]) == pid and stat[0] != "Z":
                kids.append(int(entry))
    return kids


def _stat(pid: int) -> list[str] | None:
    """(state, ppid, ...) of a process from /proc/<pid>/stat, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_build_leaves_no_orphaned_workers(tmp_path: Path, sig: signal.Signals) -> None:
    """``intint build-shards --workers 2`` killed mid-build: its pool workers are gone within seconds
    (they used to block forever), and the next build removes what the killed one left."""
    raw = synthetic.make_annotations(800, NUM_CLASSES, seed=0, dtype=np.float32, frames=(20, 30),
                                     max_persons=1)
    src = write_source(tmp_path, raw)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "intint", "build-shards", str(src), "-o", str(out), "--num-classes", "3",
           "--shard-size", "1", "--workers", "2", "--no-progress", "--modes", "reference"]
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    log = (tmp_path / "build.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and proc.poll() is None and time.monotonic() < deadline:
            workers = _children(proc.pid)
            time.sleep(0.05)
        assert len(workers) == 2 and proc.poll() is None, (tmp_path / "build.log").read_text()
        time.sleep(0.3)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 5
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [w for w in workers if _alive(w)], "pool workers outlived the killed build"
    finally:
        for w in workers:  # the processes this test started, should the assertion above fail
            if _alive(w):
                os.kill(w, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()

    assert not (out / "manifest.json").exists()
    assert any(p.name.startswith(".staging-") for p in out.iterdir())  # killed mid-build
    build.build(config(write_source(tmp_path, small_raw(), "next.pkl"), out, num_classes=NUM_CLASSES))
    assert not [p.name for p in out.iterdir() if p.name.startswith(".staging-") or ".tmp-" in p.name]
    assert shard_verify.verify(str(out)).ok


# ------------------------------------------------------------------------------ samples: reject


def _rejected_build(tmp_path: Path, raw: dict[str, Any], **kw: Any
                    ) -> tuple[build.BuildSummary, list[dict[str, Any]], Path]:
    """Build ``raw`` (one of whose annotations is broken): the build completes, with one reject."""
    out = tmp_path / "out"
    kw.setdefault("num_classes", NUM_CLASSES)
    summary = build.build(config(write_source(tmp_path, raw), out, **kw))
    lines = reject_lines(out)
    assert len(lines) == 1 and summary.rejects == 1 and summary.rejected_inputs == 1
    assert summary.written_inputs == len(raw["annotations"]) - 1
    assert shard_verify.verify(str(out)).ok
    return summary, lines, out


def _one_joint(kp: np.ndarray, value: float) -> np.ndarray:
    kp = kp.copy()
    kp[0, 1, 2, 0] = value
    return kp


@pytest.mark.parametrize("dtype, huge", [
    pytest.param(np.float32, lambda kp: kp * np.float32(1e20), id="float32 x 1e20"),
    pytest.param(np.float64, lambda kp: np.full_like(kp, 1e200), id="float64 1e200"),
    pytest.param(np.float32, lambda kp: _one_joint(kp, -1e30), id="one float32 joint at -1e30"),
])
def test_huge_finite_coordinates_are_a_reject_not_a_stopped_build(tmp_path: Path, dtype: Any,
                                                                  huge: Any) -> None:
    raw = small_raw(dtype=dtype)
    ann = raw["annotations"][2]
    ann["keypoint"] = huge(ann["keypoint"])
    assert np.isfinite(ann["keypoint"]).all() and ann["keypoint"].dtype == dtype
    _, lines, _ = _rejected_build(tmp_path, raw, modes=intensity.MODES)  # paper mode used to stop the build
    assert (lines[0]["frame_dir"], lines[0]["field"]) == (ann["frame_dir"], "keypoint")
    assert lines[0]["split"] == split_of(raw, ann["frame_dir"]) and "img_shape" in lines[0]["reason"]
    with pytest.raises(AnnotationError) as exc:
        build.build(config(tmp_path / "in.pkl", tmp_path / "strict", num_classes=NUM_CLASSES, strict=True))
    assert exc.value.field == "keypoint"


def test_coordinate_bound_is_16_times_the_larger_image_side() -> None:
    raw = small_raw(n=2)
    a, b = raw["annotations"]
    for ann, value in ((a, 16.0 * max(a["img_shape"])), (b, np.nextafter(16.0 * max(b["img_shape"]), 1e9))):
        ann["keypoint"] = ann["keypoint"].astype(np.float64)
        ann["keypoint"][0, 0, 0, 1] = -value
    v = annotations.validate(raw)
    assert list(v.samples) == [a["frame_dir"]]
    assert [(r.frame_dir, r.field) for r in v.rejects] == [(b["frame_dir"], "keypoint")]


@pytest.mark.parametrize("frame_dir", [
    pytest.param("clips/bad\udc80name.avi", id="lone surrogate"),
    pytest.param("clips/nul\x00.avi", id="NUL"),
    pytest.param("clips/two\nlines.avi", id="newline"),
    pytest.param("clips/\u202egnp.exe", id="bidi override"),
    pytest.param("x" * 5000, id="5000 characters"),
])
def test_frame_dir_that_is_not_printable_utf8_is_a_reject(tmp_path: Path, frame_dir: str) -> None:
    raw = small_raw()
    ann = raw["annotations"][4]
    split = split_of(raw, ann["frame_dir"])
    raw["split"][split][raw["split"][split].index(ann["frame_dir"])] = frame_dir
    ann["frame_dir"] = frame_dir
    _, lines, out = _rejected_build(tmp_path, raw)
    assert (lines[0]["field"], lines[0]["split"]) == ("frame_dir", split)
    shown = lines[0]["frame_dir"]  # a bounded, escaped, printable rendering of the bad name
    assert shown.isprintable() and len(shown) <= 200 and shown.encode("utf-8")
    (out / "rejects.jsonl").read_bytes().decode("utf-8")
    with pytest.raises(AnnotationError) as exc:
        annotations.validate(raw, strict=True)
    assert exc.value.field == "frame_dir" and len(str(exc.value)) < 500


@pytest.mark.parametrize("count", [0, -2])
def test_num_classes_must_be_positive(tmp_path: Path, count: int) -> None:
    src = write_source(tmp_path, small_raw())
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        build.build(config(src, tmp_path / "out", num_classes=count))
    assert not (tmp_path / "out").exists()
    res = CliRunner().invoke(app, ["build-shards", str(src), "-o", str(tmp_path / "cli"), "--num-classes",
                                   str(count), "--no-progress"])
    assert res.exit_code == 1 and "error:" in res.output and "num_classes" in res.output
    assert not (tmp_path / "cli").exists()


def test_label_without_a_class_count_is_bounded(tmp_path: Path) -> None:
    raw = small_raw()
    raw["annotations"][1]["label"] = 2**31
    v = annotations.validate(raw)
    assert [(r.frame_dir, r.field) for r in v.rejects] == [(raw["annotations"][1]["frame_dir"], "label")]
    assert "no class count" in v.rejects[0].reason

    raw["annotations"][1]["label"] = 10**6
    _, lines, out = _rejected_build(tmp_path, raw, num_classes=None)
    assert lines[0]["field"] == "label"
    assert shardio.read_manifest(str(out)).num_classes == NUM_CLASSES  # not a million class names


@pytest.mark.parametrize("mutate, field", [
    pytest.param(lambda a: a.update(label=10**5000), "label", id="label of 5000 digits"),
    pytest.param(lambda a: a.update(label="L" * 10**6), "label", id="label a 1 MB string"),
    pytest.param(lambda a: a.update(total_frames="9" * 10**6), "total_frames", id="total_frames 1 MB string"),
    pytest.param(lambda a: a.update(img_shape=(10**30, 640)), "img_shape", id="img_shape 1e30"),
    pytest.param(lambda a: a.update(original_shape=(480, 2**40)), "original_shape", id="original_shape"),
    pytest.param(lambda a: a["keypoint_score"].__setitem__((0, 0, 0), 1e30), "keypoint_score",
                 id="score 1e30"),
])
def test_anything_else_a_sample_carries_is_a_bounded_reject(tmp_path: Path, mutate: Any, field: str) -> None:
    raw = small_raw()
    mutate(raw["annotations"][5])
    _, lines, _ = _rejected_build(tmp_path, raw)
    assert (lines[0]["frame_dir"], lines[0]["field"]) == (raw["annotations"][5]["frame_dir"], field)
    assert len(lines[0]["reason"]) < 300


def test_split_entry_that_is_not_a_string_is_a_reject() -> None:
    raw = small_raw(n=4)
    raw["split"]["train"].append(["not", "a", "name"])
    v = annotations.validate(raw)
    assert [(r.split, r.field) for r in v.rejects] == [("train", "split")]
    assert v.listed["train"] == len(v.splits["train"]) + v.split_rejects["train"]
