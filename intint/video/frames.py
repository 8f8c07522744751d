"""Decoding a video file into RGB frames with OpenCV, and the reasons a file is not a usable video.

Why the checks happen here: a folder of user videos holds empty files, half-copied files, renamed
documents and codecs the local FFmpeg lacks. Each of those must become one reject line naming the file
and the reason (:class:`VideoReadError`), never a traceback, so the rest of the folder is still
extracted. OpenCV is imported lazily (the ``video`` extra), with FFmpeg's own console messages off:
they would repeat what the reject line says, mid progress bar.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import ModuleType

import numpy as np

from intint.video.estimators import VIDEO_EXTRA_HINT, EstimatorUnavailable

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg",
                                     ".wmv", ".flv", ".3gp", ".ts")


class VideoReadError(ValueError):
    """A file that is not a usable video: ``reason`` says why, the message names the file too."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple:  # picklable across processes despite the two-argument constructor
        return (type(self), (self.path, self.reason))


def quiet_opencv_logs() -> None:
    """Silence FFmpeg's and OpenCV's console logging; OpenCV reads these when it first opens a video."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")


quiet_opencv_logs()  # at import: a caller may open a video with its own cv2 before calling us


def import_cv2() -> ModuleType:
    """OpenCV (the ``video`` extra), with its console logging silenced."""
    quiet_opencv_logs()
    try:
        import cv2
    except ImportError as e:
        raise EstimatorUnavailable(f"reading videos needs OpenCV ({e}): {VIDEO_EXTRA_HINT}") from None
    return cv2


def has_video_extension(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def check_file(path: str) -> None:
    """A regular, non-empty file, or a :class:`VideoReadError` saying what it is instead."""
    if not os.path.exists(path):
        raise VideoReadError(path, "no such file")
    if not os.path.isfile(path):
        raise VideoReadError(path, "not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(path, "empty file (0 bytes)")


def iter_rgb_frames(path: str, frame_indices: set[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(index, H×W×3 uint8 RGB frame) for every decodable frame in order, or only those in
    ``frame_indices``. Decoding stops at the first frame FFmpeg cannot read (a truncated file keeps the
    frames before the damage). A file that cannot be opened raises :class:`VideoReadError`."""
    check_file(path)
    cv2 = import_cv2()
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise VideoReadError(path, "not a readable video (unknown container or codec, or a damaged file)")
        last = max(frame_indices) if frame_indices else None
        index = 0
        while last is None or index <= last:
            if frame_indices is not None and index not in frame_indices:
                if not cap.grab():
                    break
            else:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    break
                yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        cap.release()


def frames_per_second(path: str) -> float | None:
    """The container's frame rate, None when it does not say."""
    cv2 = import_cv2()
    cap = cv2.VideoCapture(path)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS)) if cap.isOpened() else 0.0
    finally:
        cap.release()
    return fps if np.isfinite(fps) and fps > 0 else None
