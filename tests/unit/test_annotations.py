"""Safe PYSKL import and per-sample validation (issue 2, "Annotations")."""

from __future__ import annotations

import os
import pickle
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest

from intint.pose import annotations
from intint.pose.annotations import AnnotationError, validate
from intint.pose.safe_pickle import UnsafePickleError, safe_loads
from intint.store.annotation_file import read_annotations
from intint.testing import synthetic


def video(frame_dir: str, t: int = 6, m: int = 1, label: int = 0, dtype: Any = np.float16) -> dict[str, Any]:
    rng = np.random.default_rng(zlib.crc32(frame_dir.encode()))
    return {"frame_dir": frame_dir, "label": label, "total_frames": t, "img_shape": (240, 320),
            "original_shape": (240, 320),
            "keypoint": rng.uniform(1, 200, (m, t, 17, 2)).astype(dtype),
            "keypoint_score": rng.uniform(0.3, 1, (m, t, 17)).astype(dtype)}


def dataset(*videos: dict[str, Any], split: dict[str, list[str]] | None = None) -> dict[str, Any]:
    names = [v["frame_dir"] for v in videos]
    return {"split": split if split is not None else {"train": names}, "annotations": list(videos)}


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.target}",))


# ------------------------------------------------------------------------------------- safe load


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_read_annotations_round_trips_pyskl_pickles(tmp_path: Path, protocol: int, dtype: Any) -> None:
    raw = synthetic.make_annotations(6, 3, splits=("train", "val"), seed=1, dtype=dtype)
    raw["annotations"][0]["label"] = np.int64(2)  # NumPy scalars appear in real files
    path = tmp_path / "ann.pkl"
    path.write_bytes(pickle.dumps(raw, protocol=protocol))
    loaded = read_annotations(str(path))
    assert loaded["split"] == raw["split"]
    for a, b in zip(loaded["annotations"], raw["annotations"], strict=True):
        assert a["keypoint"].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a["keypoint"], b["keypoint"])
        np.testing.assert_array_equal(a["keypoint_score"], b["keypoint_score"])
        assert a["label"] == b["label"] and a["img_shape"] == b["img_shape"]


def test_read_annotations_reads_fsspec_urls() -> None:
    raw = synthetic.make_annotations(4, 2, seed=2)
    url = "memory://test_annotations/ann.pkl"
    with fsspec.open(url, "wb") as f:
        f.write(pickle.dumps(raw))
    loaded = read_annotations(url)
    assert [a["frame_dir"] for a in loaded["annotations"]] == [a["frame_dir"] for a in raw["annotations"]]


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    payload = dataset(video("a"))
    payload["annotations"][0]["label"] = _Evil(target)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(UnsafePickleError, match=r"posix\.system|os\.system|nt\.system"):
        read_annotations(str(path))
    assert not target.exists()


@pytest.mark.parametrize("obj", [eval, getattr, __import__, pickle.loads, Path])
def test_other_globals_are_refused(obj: Any) -> None:
    with pytest.raises(UnsafePickleError, match="refusing to load global"):
        safe_loads(pickle.dumps({"split": {}, "annotations": [obj]}))


def test_top_level_must_be_pyskl_dict() -> None:
    with pytest.raises(AnnotationError, match="'annotations'"):
        annotations.check_top_level({"split": {}})
    with pytest.raises(AnnotationError, match="expected a dict"):
        annotations.check_top_level([1, 2])


# ------------------------------------------------------------------------------------- validation


def _drop(field: str) -> Callable[[dict], None]:
    return lambda v: v.pop(field)


def _set(field: str, value: Any) -> Callable[[dict], None]:
    return lambda v: v.__setitem__(field, value)


BAD_SAMPLES = [
    ("missing keypoint_score", _drop("keypoint_score"), "keypoint_score", "missing"),
    ("missing total_frames", _drop("total_frames"), "total_frames", "missing"),
    ("label missing", _drop("label"), "label", "missing"),
    ("label out of range", _set("label", 3), "label", "out of range"),
    ("label negative", _set("label", -1), "label", "out of range"),
    ("label not an int", _set("label", "run"), "label", "expected an int"),
    ("score shape disagrees", lambda v: v.__setitem__("keypoint_score", v["keypoint_score"][:, :-1]),
     "keypoint_score", "disagrees"),
    ("total_frames disagrees", _set("total_frames", 7), "total_frames", "disagrees with keypoint T = 6"),
    ("V != 17", lambda v: v.update(keypoint=np.zeros((1, 6, 18, 2), np.float16),
                                   keypoint_score=np.zeros((1, 6, 18), np.float16)), "keypoint", "V = 18"),
    ("T = 0", lambda v: v.update(keypoint=np.zeros((1, 0, 17, 2), np.float16),
                                 keypoint_score=np.zeros((1, 0, 17), np.float16), total_frames=0),
     "keypoint", "T = 0"),
    ("keypoint not an array", _set("keypoint", [[1.0]]), "keypoint", "NumPy array"),
    ("bad img_shape", _set("img_shape", (240,)), "img_shape", "(h, w)"),
]


@pytest.mark.parametrize("case", BAD_SAMPLES, ids=[c[0] for c in BAD_SAMPLES])
def test_bad_sample_is_rejected_naming_frame_dir_and_field(case: tuple) -> None:
    _, mutate, field, reason = case
    bad = video("clips/bad.avi", label=1)
    mutate(bad)
    raw = dataset(video("clips/ok.avi"), bad, split={"train": ["clips/ok.avi", "clips/bad.avi"],
                                                     "test": ["clips/bad.avi"]})
    v = validate(raw, num_classes=3)
    assert list(v.samples) == ["clips/ok.avi"]
    assert v.splits == {"train": ["clips/ok.avi"], "test": []}
    # one reject line per split that lists the bad sample
    assert [(r.frame_dir, r.split, r.field) for r in v.rejects] == [
        ("clips/bad.avi", "train", field), ("clips/bad.avi", "test", field)]
    assert reason in v.rejects[0].reason
    assert v.listed == {"train": 2, "test": 1} and v.split_rejects == {"train": 1, "test": 1}

    with pytest.raises(AnnotationError) as exc:
        validate(raw, num_classes=3, strict=True)
    assert exc.value.frame_dir == "clips/bad.avi" and exc.value.field == field
    assert "clips/bad.avi" in str(exc.value) and repr(field) in str(exc.value)


def test_nonfinite_coordinates_become_absent_joints_and_are_counted() -> None:
    v0 = video("a", t=5, m=2, dtype=np.float32)
    v0["keypoint"][0, 1, 3, 0] = np.nan
    v0["keypoint"][1, 4, 16, 1] = np.inf
    v0["keypoint_score"][0, 2, 5] = np.nan
    original = v0["keypoint"].copy()
    v = validate(dataset(v0), strict=True)  # not fatal, even when strict
    s = v.samples["a"]
    assert v.nonfinite == 3 and not v.rejects
    for m, t, j in [(0, 1, 3), (1, 4, 16), (0, 2, 5)]:
        assert (s.keypoint[m, t, j] == 0).all() and s.keypoint_score[m, t, j] == 0
    assert np.isfinite(s.keypoint).all() and np.isfinite(s.keypoint_score).all()
    untouched = np.ones((2, 5, 17), bool)
    untouched[0, 1, 3] = untouched[1, 4, 16] = untouched[0, 2, 5] = False
    np.testing.assert_array_equal(s.keypoint[untouched], original[untouched])
    assert np.isnan(v0["keypoint"][0, 1, 3, 0])  # the caller's arrays are not modified
    assert s.keypoint.dtype == np.float32


def test_split_entry_without_annotation_and_annotation_in_no_split() -> None:
    raw = dataset(video("a"), video("orphan"), split={"train": ["a", "ghost"], "test": ["a"]})
    v = validate(raw)
    assert v.splits == {"train": ["a"], "test": ["a"]}
    got = {(r.frame_dir, r.split, r.field) for r in v.rejects}
    assert got == {("ghost", "train", "split"), ("orphan", None, "split")}
    assert next(r for r in v.rejects if r.frame_dir == "orphan").reason == "annotation is in no split"
    assert v.inputs == 2 and v.rejected_inputs == 1
    with pytest.raises(AnnotationError, match="orphan"):
        validate(raw, strict=True)


def test_duplicate_frame_dir_rejects_every_copy() -> None:
    raw = dataset(video("a"), video("dup"), video("dup", label=2), split={"train": ["a", "dup"]})
    v = validate(raw)
    assert list(v.samples) == ["a"]
    assert [(r.frame_dir, r.split, r.field) for r in v.rejects] == [("dup", "train", "frame_dir")]
    assert "duplicate" in v.rejects[0].reason
    assert v.inputs == 3 and v.rejected_inputs == 2
    with pytest.raises(AnnotationError, match="duplicate"):
        validate(raw, strict=True)


def test_entry_listed_twice_in_a_split_is_written_once() -> None:
    v = validate(dataset(video("a"), split={"train": ["a", "a"]}))
    assert v.splits == {"train": ["a"]} and v.listed == {"train": 2}
    assert [(r.frame_dir, r.split) for r in v.rejects] == [("a", "train")]


def test_split_selection_and_accounting() -> None:
    raw = synthetic.make_annotations(30, 4, splits=("train1", "test1", "train2"), seed=5)
    v = validate(raw, splits=["test1"])
    assert list(v.splits) == ["test1"] and v.splits["test1"] == raw["split"]["test1"]
    assert v.inputs == len(v.samples) + v.rejected_inputs + v.unselected
    assert v.unselected == 30 - len(raw["split"]["test1"])
    with pytest.raises(ValueError, match="not in the annotation file"):
        validate(raw, splits=["val"])


def test_frame_dir_falls_back_to_filename_and_missing_id_is_rejected() -> None:
    v1 = video("x")
    v1["filename"] = v1.pop("frame_dir")
    v2 = video("y")
    del v2["frame_dir"]
    v = validate({"split": {"train": ["x"]}, "annotations": [v1, v2]})
    assert list(v.samples) == ["x"]
    assert [(r.frame_dir, r.field) for r in v.rejects] == [("<annotations[1]>", "frame_dir")]


def test_synthetic_data_is_valid_and_has_absent_persons() -> None:
    raw = synthetic.make_annotations(40, 5, seed=0, dtype=np.float16)
    v = validate(raw, num_classes=5, strict=True)
    assert len(v.samples) == 40 and v.nonfinite == 0
    kps = [s.keypoint for s in v.samples.values()]
    assert {k.shape[0] for k in kps} == {1, 2, 3}
    assert all(20 <= k.shape[1] <= 400 and k.dtype == np.float16 for k in kps)
    # some slot is absent (all zero, score 0) in part of some video but present elsewhere in it
    def partly_absent(s: annotations.Sample) -> bool:
        absent = (s.keypoint == 0).all(axis=(2, 3)) & (s.keypoint_score == 0).all(axis=2)  # M×T
        return bool((absent.any(axis=1) & ~absent.all(axis=1)).any())

    assert sum(partly_absent(s) for s in v.samples.values()) >= 5
    again = synthetic.make_annotations(40, 5, seed=0, dtype=np.float16)
    assert all(np.array_equal(a["keypoint"], b["keypoint"]) for a, b in
               zip(raw["annotations"], again["annotations"], strict=True))
