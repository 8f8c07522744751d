"""The embedded demo dataset: valid PYSKL data, reproducible, and it shows the method's point."""

from __future__ import annotations

import pickletools

import numpy as np
import pytest

from intint.demo.dataset import (
    DEMO_CLASSES,
    DEMO_COUNT_CLASSES,
    MIN_REPEAT_GAP,
    DemoConfig,
    generate_demo,
    make_demo_annotations,
    write_class_names,
    write_demo,
)
from intint.store.annotation_file import read_annotations as safe_load

SMALL = {"num_per_class_train": 3, "num_per_class_val": 1, "num_per_class_test": 2}


@pytest.fixture(scope="module")
def small() -> dict:
    return make_demo_annotations(**SMALL, seed=0)


@pytest.fixture(scope="module")
def test_split():
    """Eight test videos per class with their ground-truth burst intervals."""
    return generate_demo(DemoConfig(num_per_class_train=0, num_per_class_val=0, num_per_class_test=8, seed=3))


def test_format_is_pyskl(small: dict) -> None:
    assert set(small) == {"split", "annotations"}
    for a in small["annotations"]:
        fd = a["frame_dir"]
        m, t = a["keypoint"].shape[:2]
        assert a["keypoint"].shape == (m, t, 17, 2), fd
        assert a["keypoint_score"].shape == (m, t, 17), fd
        assert a["keypoint"].dtype == np.float16 and a["keypoint_score"].dtype == np.float16, fd
        assert m in (1, 2), fd
        assert 60 <= t <= 400 and a["total_frames"] == t, fd
        assert isinstance(a["label"], int) and 0 <= a["label"] < len(DEMO_CLASSES), fd
        h, w = a["img_shape"]
        assert a["original_shape"] == a["img_shape"] and isinstance(h, int) and isinstance(w, int), fd
        kp = a["keypoint"].astype(np.float32)
        sc = a["keypoint_score"].astype(np.float32)
        assert np.isfinite(kp).all() and ((sc >= 0) & (sc <= 1)).all(), fd
        absent = (kp == 0).all(-1)
        # The PYSKL convention: an absent joint is exactly (0, 0) with score 0, and only then.
        assert np.array_equal(absent, sc == 0), fd
        present = kp[~absent]
        assert (present[:, 0] > 0).all() and (present[:, 0] < w).all(), fd
        assert (present[:, 1] > 0).all() and (present[:, 1] < h).all(), fd


def test_splits_disjoint_covering_and_balanced(small: dict) -> None:
    names = [a["frame_dir"] for a in small["annotations"]]
    assert len(set(names)) == len(names)
    listed = [fd for split in ("train", "val", "test") for fd in small["split"][split]]
    assert sorted(listed) == sorted(names)                      # every video in exactly one split
    label_of = {a["frame_dir"]: a["label"] for a in small["annotations"]}
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        counts = np.bincount([label_of[fd] for fd in small["split"][split]], minlength=len(DEMO_CLASSES))
        assert (counts == n).all(), (split, counts)


def test_two_persons_and_missing_joints_occur() -> None:
    data = make_demo_annotations(num_per_class_train=6, num_per_class_val=0, num_per_class_test=0)
    persons = {a["keypoint"].shape[0] for a in data["annotations"]}
    assert persons == {1, 2}
    assert any((a["keypoint_score"] == 0).any() for a in data["annotations"])


def test_seeded_and_stable(small: dict) -> None:
    again = make_demo_annotations(**SMALL, seed=0)
    other = make_demo_annotations(**SMALL, seed=1)
    bigger = make_demo_annotations(num_per_class_train=4, num_per_class_val=1, num_per_class_test=2, seed=0)
    by_name = {a["frame_dir"]: a for a in bigger["annotations"]}
    for a, b, c in zip(small["annotations"], again["annotations"], other["annotations"], strict=True):
        assert a["frame_dir"] == b["frame_dir"] == c["frame_dir"]
        assert np.array_equal(a["keypoint"], b["keypoint"]) and np.array_equal(a["keypoint_score"],
                                                                                b["keypoint_score"])
        # A video does not change when more videos per class are asked for.
        assert np.array_equal(a["keypoint"], by_name[a["frame_dir"]]["keypoint"])
    assert any(a["keypoint"].shape != c["keypoint"].shape or not np.array_equal(a["keypoint"], c["keypoint"])
               for a, c in zip(small["annotations"], other["annotations"], strict=True))


def test_scores_lower_for_wrists_than_torso(small: dict) -> None:
    sc = np.concatenate([a["keypoint_score"][0].astype(np.float32) for a in small["annotations"]])
    assert sc[:, [9, 10]].mean() < sc[:, [5, 6, 11, 12]].mean() - 0.1


def test_repetitions_are_spread(test_split) -> None:
    labels = {a["frame_dir"]: DEMO_CLASSES[a["label"]] for a in test_split.annotations["annotations"]}
    repeated = {fd for fd in test_split.bursts if labels[fd] in DEMO_COUNT_CLASSES}
    assert repeated and repeated != set(test_split.bursts)  # both kinds of class occur
    for fd, bursts in test_split.bursts.items():
        if fd in repeated:
            assert len(bursts) == 3, fd
            gaps = [b[0] - a[1] for a, b in zip(bursts, bursts[1:], strict=False)]
            assert min(gaps) >= MIN_REPEAT_GAP, (fd, bursts)
        else:
            assert len(bursts) == 1 and 15 <= bursts[0][1] - bursts[0][0] <= 45, (fd, bursts)


def _frames(bursts) -> set[int]:
    return {t for s, e in bursts for t in range(s, e)}


def test_intensity_peak_finds_the_burst(test_split) -> None:
    intensity = pytest.importorskip("intint.pose.intensity")
    sampling = pytest.importorskip("intint.pose.sampling")
    inside, cover_int, cover_uni, reps_int, reps_uni = [], [], [], [], []
    for a in test_split.annotations["annotations"]:
        bursts = test_split.bursts[a["frame_dir"]]
        t = a["total_frames"]
        peak = intensity.peak(intensity.compute(a["keypoint"], a["keypoint_score"])["J"])
        window = set(sampling.intensity_indices(t, peak, 48).tolist())
        uniform = set(sampling.uniform_indices(t, 48, test_mode=True).tolist())
        if DEMO_CLASSES[a["label"]] in DEMO_COUNT_CLASSES:
            reps_int.append(sum(bool(window & _frames([b])) for b in bursts))
            reps_uni.append(sum(bool(uniform & _frames([b])) for b in bursts))
        else:
            inside.append(any(s <= peak < e for s, e in bursts))
            cover_int.append(len(window & _frames(bursts)) / len(_frames(bursts)))
            cover_uni.append(len(uniform & _frames(bursts)) / len(_frames(bursts)))
    assert np.mean(inside) >= 0.8
    assert np.mean(cover_int) >= 0.8 and np.mean(cover_int) > np.mean(cover_uni) + 0.4
    # One 48-frame window never sees two repetitions; the uniform clip sees all three.
    assert max(reps_int) == 1 and min(reps_uni) == 3


def _globals_named(data: bytes) -> set[str]:
    names, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            names.add(f"{strings[-2]}.{strings[-1]}")
        elif op.name == "GLOBAL":
            names.add(arg.replace(" ", "."))
    return names


def test_write_demo_plain_pickle_readable_by_safe_load(tmp_path) -> None:
    path = write_demo(tmp_path / "sub" / "demo.pkl", num_per_class_train=1, num_per_class_val=1,
                      num_per_class_test=1)
    assert sorted(p.name for p in path.parent.iterdir()) == ["demo.pkl"]      # no temp file left
    data = path.read_bytes()
    # Only NumPy array reconstruction is named: no classes of ours, nothing callable besides.
    assert {n.rsplit(".", 1)[1] for n in _globals_named(data)} <= {"_reconstruct", "ndarray", "dtype",
                                                                     "scalar", "_frombuffer"}
    expected = make_demo_annotations(1, 1, 1)
    loaded = safe_load(str(path))
    assert loaded["split"] == expected["split"]
    assert np.array_equal(loaded["annotations"][-1]["keypoint"], expected["annotations"][-1]["keypoint"])
    assert loaded["annotations"][0]["img_shape"] == expected["annotations"][0]["img_shape"]


def test_class_names_file_names_each_label_of_the_data_once(tmp_path, small: dict) -> None:
    path = write_class_names(tmp_path / "classes.txt")
    names = path.read_text().splitlines()
    assert names == list(DEMO_CLASSES) and len(set(names)) == len(names)
    labels = {a["label"] for a in small["annotations"]}
    assert labels == set(range(len(names))) and len(labels) >= 8  # every class has videos; 8 or more


def test_config_rejects_impossible_sizes() -> None:
    with pytest.raises(ValueError, match="num_per_class_train"):
        DemoConfig(num_per_class_train=-1)
    with pytest.raises(ValueError, match="min_frames"):
        DemoConfig(min_frames=500)
