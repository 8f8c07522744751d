"""One video's poses: decode every frame, run the estimator, pack the people into PYSKL's M×T×17 arrays.

PYSKL's layout (docs/method.md §1) has a fixed number of person slots M for the whole video; an absent
person or joint is (0, 0) with score 0. The estimator reports the people of each frame in its own order,
so slot m of frame t holds its m-th person (BlazePose reports at most one, so M = 1). A frame with nobody
leaves every slot empty; a video with nobody in any frame is not a training sample and is rejected.

Every way a file can fail (unreadable, empty, no person, the estimator refusing a frame) ends in a
:class:`VideoOutcome` with a reason instead of an exception, so the executors (a process pool here, Ray
tasks in ``intint.train.video_tasks``) never lose the other videos to one bad file.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from intint.pose.skeleton import NUM_JOINTS
from intint.video.estimators import EstimatorSpec, FramePoses, PoseEstimator, make_estimator
from intint.video.frames import VideoReadError, import_cv2, iter_rgb_frames


@dataclass
class VideoPoses:
    """``keypoint`` M×T×17×2 (x, y pixels) and ``keypoint_score`` M×T×17, float32; ``img_shape`` (h, w);
    ``found``: frames in which at least one person was found."""

    keypoint: np.ndarray
    keypoint_score: np.ndarray
    img_shape: tuple[int, int]
    found: int

    @property
    def total_frames(self) -> int:
        return int(self.keypoint.shape[1])

    def annotation(self, frame_dir: str, label: int) -> dict[str, Any]:
        """The PYSKL annotation dict of this video (fresh float32 arrays with NumPy's own dtype object, so
        the pickle's bytes do not depend on where the arrays came from: a worker, the cache)."""
        return {"frame_dir": frame_dir, "label": int(label), "img_shape": tuple(self.img_shape),
                "original_shape": tuple(self.img_shape), "total_frames": self.total_frames,
                "keypoint": self.keypoint.astype(np.float32),
                "keypoint_score": self.keypoint_score.astype(np.float32)}


@dataclass
class VideoOutcome:
    """What happened to one video: its poses, or the reason it is rejected; and the seconds spent."""

    poses: VideoPoses | None
    reason: str | None
    seconds: float


def pack_frames(per_frame: Sequence[FramePoses], img_shape: tuple[int, int]) -> VideoPoses:
    """Per-frame people → PYSKL arrays with M = the most people any frame holds (at least 1)."""
    t = len(per_frame)
    m = max([1, *(p.keypoint.shape[0] for p in per_frame)])
    keypoint = np.zeros((m, t, NUM_JOINTS, 2), np.float32)
    score = np.zeros((m, t, NUM_JOINTS), np.float32)
    found = 0
    for i, people in enumerate(per_frame):
        n = people.keypoint.shape[0]
        keypoint[:n, i] = people.keypoint
        score[:n, i] = people.score
        found += n > 0
    return VideoPoses(keypoint, score, img_shape, found)


def estimate_video(path: str, estimator: PoseEstimator) -> VideoPoses:
    """Every frame of ``path`` through ``estimator``; :class:`VideoReadError` for a file with no frame,
    frames that change size, or nobody in any frame."""
    estimator.reset()
    per_frame: list[FramePoses] = []
    shape: tuple[int, int] | None = None
    for index, rgb in iter_rgb_frames(path):
        if shape is None:
            shape = (int(rgb.shape[0]), int(rgb.shape[1]))
        elif rgb.shape[:2] != shape:
            raise VideoReadError(path, f"frame {index} is {rgb.shape[1]}×{rgb.shape[0]}, the first frame "
                                       f"{shape[1]}×{shape[0]}")
        per_frame.append(estimator.estimate(rgb))
    if shape is None:
        raise VideoReadError(path, "no frame could be decoded (a zero-length or damaged video)")
    poses = pack_frames(per_frame, shape)
    if poses.found == 0:
        raise VideoReadError(path, f"no person found in any of its {poses.total_frames} frames")
    return poses


_ESTIMATORS: dict[EstimatorSpec, PoseEstimator] = {}  # one per spec per process, reused across videos


def process_estimator(spec: EstimatorSpec) -> PoseEstimator:
    """This process's estimator for ``spec``, built on first use (pool workers and Ray workers keep
    theirs between videos: a MediaPipe graph takes a moment to build)."""
    if spec not in _ESTIMATORS:
        _ESTIMATORS[spec] = make_estimator(spec)
    return _ESTIMATORS[spec]


def extract_video(path: str, spec: EstimatorSpec) -> VideoOutcome:
    """One video's poses or the reason it is rejected; only a bug in intint escapes as an exception."""
    start = time.perf_counter()
    estimator = process_estimator(spec)  # EstimatorUnavailable concerns every video: it is raised
    try:
        poses = estimate_video(path, estimator)
    except VideoReadError as e:
        return VideoOutcome(None, e.reason, time.perf_counter() - start)
    except (import_cv2().error, ValueError, RuntimeError, OSError, MemoryError) as e:
        # The estimator or decoder refused this file (a damaged stream, a frame it cannot take).
        _ESTIMATORS.pop(spec, None)  # its state is unknown now: build a fresh one for the next video
        reason = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
        return VideoOutcome(None, reason, time.perf_counter() - start)
    return VideoOutcome(poses, None, time.perf_counter() - start)
