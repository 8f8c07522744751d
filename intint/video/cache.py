"""The resumable part of an extraction: one small file per finished video in a cache folder beside the
output, so a run that was stopped (or a folder that grew) only decodes the videos not done yet.

Why per video and keyed by the file's identity: a killed run keeps every video finished before the kill,
and a video replaced by a new file (another size or modification time) or extracted with another
estimator is done again instead of being served stale poses. Entries are written atomically
(a temporary name, then ``os.replace``), so an entry that exists is complete. Poses are ``.npz`` read with
``allow_pickle=False``; a rejected video leaves a ``.reject.json`` with its reason (it is not retried
until the file changes). An unreadable entry is treated as missing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid

import numpy as np

from intint.video.estimators import EstimatorSpec
from intint.video.video_poses import VideoOutcome, VideoPoses

CACHE_VERSION = 1  # bump when what an entry holds changes


def cache_folder(output: str) -> str:
    """``poses.pkl`` → ``poses.cache`` (beside it)."""
    return os.path.splitext(output)[0] + ".cache"


def cache_key(path: str, spec: EstimatorSpec) -> str:
    """Hex digest of the file's absolute path, size and modification time, and the estimator."""
    try:
        st = os.stat(path)
        identity = [st.st_size, st.st_mtime_ns]
    except OSError:
        identity = [-1, -1]
    text = json.dumps([CACHE_VERSION, os.path.abspath(path), *identity, spec.label()])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def _atomic_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class PoseCache:
    """The cache folder of one output; created on first use."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        os.makedirs(folder, exist_ok=True)

    def _poses_path(self, key: str) -> str:
        return os.path.join(self.folder, f"{key}.npz")

    def _reject_path(self, key: str) -> str:
        return os.path.join(self.folder, f"{key}.reject.json")

    def load(self, key: str) -> VideoOutcome | None:
        """The stored outcome of ``key``, or None when there is none (or it cannot be read)."""
        try:
            if os.path.exists(self._poses_path(key)):
                with np.load(self._poses_path(key), allow_pickle=False) as z:
                    h, w = (int(v) for v in z["img_shape"])
                    poses = VideoPoses(z["keypoint"].astype(np.float32),
                                       z["keypoint_score"].astype(np.float32), (h, w), int(z["found"]))
                return VideoOutcome(poses, None, 0.0)
            if os.path.exists(self._reject_path(key)):
                with open(self._reject_path(key), encoding="utf-8") as f:
                    return VideoOutcome(None, str(json.load(f)["reason"]), 0.0)
        except (OSError, ValueError, KeyError, TypeError, EOFError):
            return None
        return None

    def store(self, key: str, outcome: VideoOutcome) -> None:
        if outcome.poses is not None:
            p = outcome.poses
            buffer = io.BytesIO()
            np.savez(buffer, keypoint=p.keypoint, keypoint_score=p.keypoint_score,
                     img_shape=np.array(p.img_shape, np.int64), found=np.array(p.found, np.int64))
            _atomic_bytes(self._poses_path(key), buffer.getvalue())
        else:
            _atomic_bytes(self._reject_path(key), json.dumps({"reason": outcome.reason}).encode("utf-8"))
