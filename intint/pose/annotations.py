"""Validation of PYSKL 2D skeleton annotation files (docs/method.md §1).

The bytes are unpickled by :mod:`intint.pose.safe_pickle` (an allow-list unpickler: a downloaded file
can never run code); reading a file from a path or URL is ``intint.store.annotation_file``'s job.

Why validation collects rejects instead of failing: a 30K-video dataset with three broken videos
should still build, with the three in ``rejects.jsonl``; ``strict=True`` turns the first problem
into an :class:`AnnotationError` instead. Every problem names the sample (``frame_dir``) and the
field.

What a sample may carry (anything else is a reject line, never a stopped build): a printable UTF-8
frame_dir (``intint.pose.names``); a label below ``num_classes``, or below
:data:`MAX_LABELS_WITHOUT_CLASSES` without a class count (a label of 2**31 must not name 2**31
classes); image sides up to :data:`MAX_IMAGE_SIDE`; coordinates within ±:data:`COORD_LIMIT_FACTOR` ×
the larger side of ``img_shape`` (further off is a broken file, and overflows the float32 intensity
maths); scores within ±:data:`SCORE_LIMIT`. NaN/inf joints become absent joints, not rejects. Split
names become file names, so a bad one refuses the whole file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from intint.pose.names import display_name, frame_dir_problem, split_name_problem
from intint.pose.pickle_builders import bounded_repr
from intint.pose.safe_pickle import safe_loads
from intint.pose.skeleton import NUM_JOINTS

REQUIRED_FIELDS: tuple[str, ...] = ("frame_dir", "label", "total_frames", "img_shape", "keypoint",
                                    "keypoint_score")
POSE_DTYPES: tuple[np.dtype, ...] = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
MAX_LABELS_WITHOUT_CLASSES = 100_000  # labels must be below this when no class count bounds them
MAX_IMAGE_SIDE = 1 << 16  # pixels, per side of img_shape / original_shape
COORD_LIMIT_FACTOR = 16  # |x|, |y| <= COORD_LIMIT_FACTOR * max(img_shape)
SCORE_LIMIT = 1000.0  # |score| bound: scores are confidences (PYSKL's lie in [0, 1])


class AnnotationError(ValueError):
    """A problem with one sample (or split entry), naming the sample and the field."""

    def __init__(self, frame_dir: str | None, field: str, reason: str, split: str | None = None) -> None:
        self.frame_dir = frame_dir
        self.field = field
        self.reason = reason
        self.split = split
        where = f" in split {split!r}" if split is not None else ""
        sample = f"sample {bounded_repr(frame_dir)}{where}, " if frame_dir is not None else ""
        super().__init__(f"{sample}field {field!r}: {reason}")


def parse_annotations(data: bytes, source: str = "<annotations>") -> dict:
    """Unpickle a PYSKL annotation file's bytes, never executing code from them, and check its top level.

    Checks only the top level (a dict with ``split`` and ``annotations``); per-sample checks are
    :func:`validate`'s job. ``source`` names the file in errors.
    """
    return check_top_level(safe_loads(data), source=source)


def check_top_level(raw: Any, source: str = "<annotations>") -> dict:
    if not isinstance(raw, dict):
        raise AnnotationError(None, "<top level>", f"{source}: expected a dict, got {type(raw).__name__}")
    for key in ("split", "annotations"):
        if key not in raw:
            raise AnnotationError(None, key, f"{source}: top-level key {key!r} is missing")
    if not isinstance(raw["split"], dict):
        raise AnnotationError(None, "split", f"{source}: expected a dict of split name -> list of frame_dir")
    if not isinstance(raw["annotations"], list):
        raise AnnotationError(None, "annotations", f"{source}: expected a list of per-video dicts")
    return raw


@dataclass
class Sample:
    """One validated video, arrays in the file's dtype (float16 or float32 kept)."""

    frame_dir: str
    label: int
    total_frames: int
    img_shape: tuple[int, int]
    original_shape: tuple[int, int]
    keypoint: np.ndarray  # M×T×V×2
    keypoint_score: np.ndarray  # M×T×V


@dataclass(frozen=True)
class Reject:
    """A rejected sample or split entry; ``split`` is None when no split lists it."""

    frame_dir: str
    split: str | None
    field: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"frame_dir": self.frame_dir, "split": self.split, "field": self.field, "reason": self.reason}


@dataclass
class Validated:
    """What :func:`validate` found.

    ``samples``: valid samples by frame_dir, in file order. ``splits``: per selected split, the
    frame_dirs that will be written, in split-list order. ``listed``: per split, the entries the file
    lists (= written + rejected). ``inputs``: annotation count. ``unselected``: valid annotations
    listed only by splits not selected. ``nonfinite``: joints turned absent because of NaN/inf.
    """

    samples: dict[str, Sample]
    splits: dict[str, list[str]]
    listed: dict[str, int]
    rejects: list[Reject]
    inputs: int
    nonfinite: int
    unselected: int = 0
    rejected_inputs: int = 0
    split_rejects: dict[str, int] = field(default_factory=dict)


def _as_int(value: Any) -> int | None:
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, np.ndarray) and value.shape == () and np.issubdtype(value.dtype, np.integer):
        return int(value)
    return None


def _as_shape(value: Any) -> tuple[int, int] | None:
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.shape == (2,) else None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        return None
    ints = [_as_int(v) for v in value]
    if any(v is None or v <= 0 or v > MAX_IMAGE_SIDE for v in ints):
        return None
    return (ints[0], ints[1])  # type: ignore[return-value]


def sample_id(ann: Any, index: int) -> str | None:
    """The video id: ``frame_dir``, or ``filename`` as PYSKL's loader also accepts; None if absent."""
    if isinstance(ann, dict):
        for key in ("frame_dir", "filename"):
            if isinstance(ann.get(key), str) and ann[key]:
                return ann[key]
    return None


def check_sample(ann: dict, frame_dir: str, num_classes: int | None) -> tuple[Sample, int]:
    """Validate one annotation dict; returns the sample and the number of joints made absent.

    Raises :class:`AnnotationError` naming ``frame_dir`` and the field. Non-finite coordinates or
    scores are not an error: those joints become absent (coords 0, score 0) and are counted.
    """
    for name in REQUIRED_FIELDS:
        if name != "frame_dir" and name not in ann:
            raise AnnotationError(frame_dir, name, "field is missing")
    kp, score = _checked_pose_arrays(ann, frame_dir)
    t = kp.shape[1]
    label = _checked_label(ann, frame_dir, t, num_classes)
    img_shape, original_shape = _checked_frame_shapes(ann, frame_dir)
    kp, score, nonfinite = _absent_where_nonfinite(kp, score)
    _check_magnitudes(kp, score, img_shape, frame_dir)
    sample = Sample(frame_dir=frame_dir, label=label, total_frames=t, img_shape=img_shape,
                    original_shape=original_shape, keypoint=np.ascontiguousarray(kp),
                    keypoint_score=np.ascontiguousarray(score))
    return sample, nonfinite


def _checked_pose_arrays(ann: dict, frame_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """``keypoint`` (M×T×17×2, M, T >= 1) and ``keypoint_score`` (M×T×17): float NumPy arrays."""
    kp, score = ann["keypoint"], ann["keypoint_score"]
    for name, arr in (("keypoint", kp), ("keypoint_score", score)):
        if not isinstance(arr, np.ndarray):
            raise AnnotationError(frame_dir, name, f"expected a NumPy array, got {type(arr).__name__}")
        if arr.dtype not in POSE_DTYPES:
            raise AnnotationError(frame_dir, name, f"dtype {arr.dtype} is not float16/float32/float64")
    if kp.ndim != 4 or kp.shape[-1] != 2:
        raise AnnotationError(frame_dir, "keypoint", f"shape {kp.shape} is not M×T×V×2")
    m, t, v, _ = kp.shape
    if v != NUM_JOINTS:
        raise AnnotationError(frame_dir, "keypoint", f"V = {v} joints, expected {NUM_JOINTS} (COCO-17)")
    if t == 0:
        raise AnnotationError(frame_dir, "keypoint", "T = 0 frames")
    if m == 0:
        raise AnnotationError(frame_dir, "keypoint", "M = 0 person slots")
    if score.shape != kp.shape[:3]:
        raise AnnotationError(frame_dir, "keypoint_score",
                              f"shape {score.shape} disagrees with keypoint {kp.shape} "
                              f"(expected {kp.shape[:3]})")
    return kp, score


def _checked_label(ann: dict, frame_dir: str, frames: int, num_classes: int | None) -> int:
    """``total_frames`` must equal the keypoint frame count; returns the label, an int in range."""
    total = _as_int(ann["total_frames"])
    if total is None:
        raise AnnotationError(frame_dir, "total_frames",
                              f"expected an int, got {bounded_repr(ann['total_frames'])}")
    if total != frames:
        raise AnnotationError(frame_dir, "total_frames",
                              f"{bounded_repr(total)} disagrees with keypoint T = {frames}")
    label = _as_int(ann["label"])
    if label is None:
        raise AnnotationError(frame_dir, "label", f"expected an int, got {bounded_repr(ann['label'])}")
    top = num_classes if num_classes is not None else MAX_LABELS_WITHOUT_CLASSES
    if label < 0 or label >= top:
        bound = f"0..{top - 1}" + ("" if num_classes is not None else " (no class count given)")
        raise AnnotationError(frame_dir, "label", f"{bounded_repr(label)} is out of range {bound}")
    return label


def _checked_frame_shapes(ann: dict, frame_dir: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """``img_shape`` and ``original_shape`` (default: ``img_shape``) as (h, w) ints in 1..MAX_IMAGE_SIDE."""
    shapes = []
    for name in ("img_shape", "original_shape"):
        value = ann[name] if name in ann else ann["img_shape"]
        shape = _as_shape(value)
        if shape is None:
            raise AnnotationError(frame_dir, name,
                                  f"expected (h, w) ints in 1..{MAX_IMAGE_SIDE}, got {bounded_repr(value)}")
        shapes.append(shape)
    return shapes[0], shapes[1]


def _absent_where_nonfinite(kp: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores in the keypoints' dtype, joints with a NaN/inf coordinate or score made absent (copies)."""
    if score.dtype != kp.dtype:
        score = score.astype(kp.dtype)
    bad = ~(np.isfinite(kp).all(axis=-1) & np.isfinite(score))
    nonfinite = int(bad.sum())
    if nonfinite:
        kp = kp.copy()
        score = score.copy()
        kp[bad] = 0
        score[bad] = 0
    return kp, score, nonfinite


def _check_magnitudes(kp: np.ndarray, score: np.ndarray, img_shape: tuple[int, int], frame_dir: str) -> None:
    """Finite coordinates within ±COORD_LIMIT_FACTOR × max(img_shape) and scores within ±SCORE_LIMIT."""
    limit = COORD_LIMIT_FACTOR * max(img_shape)
    top = float(np.abs(kp).max())  # kp and score are non-empty (M, T >= 1) and finite here
    if top > limit:
        raise AnnotationError(frame_dir, "keypoint", f"coordinate {top:.3g} is beyond ±{limit} "
                              f"({COORD_LIMIT_FACTOR} × the larger side of img_shape {img_shape})")
    top = float(np.abs(score).max())
    if top > SCORE_LIMIT:
        raise AnnotationError(frame_dir, "keypoint_score", f"score {top:.3g} is beyond ±{SCORE_LIMIT:g}")


def _check_splits(raw_split: Mapping[Any, Any]) -> dict[str, list[Any]]:
    """Split name → its entries. A bad split name refuses the file (it would become a file name);
    bad entries are rejected later, one by one (:func:`_split_entries`)."""
    splits: dict[str, list[Any]] = {}
    for name, entries in raw_split.items():
        problem = split_name_problem(name)
        if problem is not None:
            raise AnnotationError(None, "split", problem)
        if not isinstance(entries, (list, tuple)):
            raise AnnotationError(None, "split", f"split {name!r} is not a list of frame_dir strings")
        splits[name] = list(entries)
    return splits


@dataclass
class _RejectLog:
    """Rejects in the order they are found; with ``strict`` the first one raises instead."""

    strict: bool
    rejects: list[Reject] = field(default_factory=list)

    def add(self, err: AnnotationError, split: str | None) -> None:
        if self.strict:
            raise AnnotationError(err.frame_dir, err.field, err.reason, split=split)
        self.rejects.append(Reject(display_name(err.frame_dir or ""), split, err.field, err.reason))


@dataclass
class _CheckedAnnotations:
    """What the pass over the annotation list found (see :class:`Validated`)."""

    samples: dict[str, Sample] = field(default_factory=dict)
    problems: dict[str, AnnotationError] = field(default_factory=dict)  # frame_dir -> why not writable
    nonfinite: int = 0
    unselected: int = 0
    rejected_inputs: int = 0


def validate(raw: dict, num_classes: int | None = None, splits: Iterable[str] | None = None,
             strict: bool = False) -> Validated:
    """Validate a loaded annotation dict; see the module docstring for reject vs strict.

    ``splits`` selects the splits to build (default: all in the file, in file order); naming one
    the file lacks is an error. Every entry of a selected split ends either in ``Validated.splits``
    or in ``rejects`` (one line per split that lists a bad sample), and every annotation that no
    split lists is rejected with ``split=None``.
    """
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    raw = check_top_level(raw)
    all_splits = _check_splits(raw["split"])
    selected = _selected_splits(all_splits, splits)
    reject_log = _RejectLog(strict)
    found = _check_annotations(raw["annotations"], all_splits, selected, num_classes, reject_log)
    out_splits: dict[str, list[str]] = {}
    split_rejects: dict[str, int] = {}
    for s in selected:
        out_splits[s], split_rejects[s] = _split_entries(s, all_splits[s], found, reject_log)
    return Validated(samples=found.samples, splits=out_splits,
                     listed={s: len(all_splits[s]) for s in selected}, rejects=reject_log.rejects,
                     inputs=len(raw["annotations"]), nonfinite=found.nonfinite, unselected=found.unselected,
                     rejected_inputs=found.rejected_inputs, split_rejects=split_rejects)


def _selected_splits(all_splits: Mapping[str, list[str]], splits: Iterable[str] | None) -> list[str]:
    selected = list(all_splits) if splits is None else list(splits)
    unknown = [s for s in selected if s not in all_splits]
    if unknown:
        raise ValueError(f"split(s) {unknown} not in the annotation file; it has {sorted(all_splits)}")
    if len(set(selected)) != len(selected):
        raise ValueError(f"split selection {selected} names a split twice")
    return selected


def _check_annotations(anns: list[Any], all_splits: Mapping[str, list[str]], selected: list[str],
                       num_classes: int | None, reject_log: _RejectLog) -> _CheckedAnnotations:
    """One pass over the annotation list: annotations without an id or in no split are rejected,
    those only in unselected splits counted, the rest checked (a bad one is remembered as a problem,
    rejected later once per split that lists it)."""
    listed_anywhere = {fd for entries in all_splits.values() for fd in entries if isinstance(fd, str)}
    listed_selected = {fd for s in selected for fd in all_splits[s] if isinstance(fd, str)}
    id_counts = Counter(sample_id(a, i) for i, a in enumerate(anns))
    found = _CheckedAnnotations()
    for i, ann in enumerate(anns):
        fd = sample_id(ann, i)
        if fd is None:
            what = ("annotation is not a dict" if not isinstance(ann, dict)
                    else "field is missing or not a string")
            reject_log.add(AnnotationError(f"<annotations[{i}]>", "frame_dir", what), None)
            found.rejected_inputs += 1
        elif fd not in listed_anywhere:
            reject_log.add(AnnotationError(fd, "split", "annotation is in no split"), None)
            found.rejected_inputs += 1
        elif fd not in listed_selected:
            found.unselected += 1
        else:
            try:
                problem = frame_dir_problem(fd)
                if problem is not None:
                    raise AnnotationError(fd, "frame_dir", problem)
                if id_counts[fd] > 1:
                    raise AnnotationError(fd, "frame_dir",
                                          f"duplicate frame_dir: {id_counts[fd]} annotations share it")
                sample, bad = check_sample(ann, fd, num_classes)
            except AnnotationError as err:
                if reject_log.strict:
                    raise
                found.problems[fd] = err
                found.rejected_inputs += 1
                continue
            found.samples[fd] = sample
            found.nonfinite += bad
    return found


def _split_entries(split: str, entries: list[Any], found: _CheckedAnnotations,
                   reject_log: _RejectLog) -> tuple[list[str], int]:
    """The entries of ``split`` that will be written, in list order, and how many were rejected
    (not a string, listed twice, a bad sample, or no annotation)."""
    seen: set[str] = set()
    keep: list[str] = []
    rejected = 0
    for i, fd in enumerate(entries):
        if not isinstance(fd, str):
            what = f"entry is {bounded_repr(fd)}, not a frame_dir string"
            reject_log.add(AnnotationError(f"<split[{split!r}][{i}]>", "split", what), split)
            rejected += 1
            continue
        if fd in seen:
            reject_log.add(AnnotationError(fd, "split", f"listed more than once in split {split!r}"), split)
            rejected += 1
        elif fd in found.problems:
            reject_log.add(found.problems[fd], split)
            rejected += 1
        elif fd not in found.samples:
            no_annotation = f"split {split!r} names a frame_dir with no annotation"
            reject_log.add(AnnotationError(fd, "split", no_annotation), split)
            rejected += 1
        else:
            keep.append(fd)
        seen.add(fd)
    return keep, rejected
