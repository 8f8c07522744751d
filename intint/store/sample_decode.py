"""One raw WebDataset sample (its members' bytes) → a decoded, checked video, or a ``CorruptSample``
naming the key, the video and the field.

Nothing read is trusted: ``.npy`` members are plain float arrays of a fixed list of dtypes whose declared
size is the bytes present (``intint.store.npy_reader``: never ``np.load``, never a pickle), and every decoded
video is checked against the format (M×T×17×2 keypoints, M×T×17 scores, T = ``total_frames``, the label a
class, the peak a frame). Both shard readers (``shardstream``, ``range_reader``) and ``inspect --verify``
decode through :func:`decode`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from intint.pose.skeleton import NUM_JOINTS
from intint.store import shardio
from intint.store.npy_reader import NpyError, read_npy

MEMBERS: tuple[str, ...] = shardio.MEMBER_SUFFIXES  # ("keypoint.npy", "keypoint_score.npy", "json")
MEMBER_SET = frozenset(MEMBERS)
_MAX_META = 1 << 20  # bytes of a sample's JSON metadata (a few hundred in practice)


class CorruptSample(ValueError):
    """One video's members cannot be decoded or contradict each other."""

    def __init__(self, shard: str, key: str, frame_dir: str | None, field: str, reason: str) -> None:
        who = f"{key} ({frame_dir!r})" if frame_dir else key
        super().__init__(f"{shard}: sample {who}: field {field!r}: {reason}")
        self.shard, self.key, self.frame_dir, self.field = shard, key, frame_dir, field


@dataclass
class Video:
    """A decoded, checked video: what the clip samplers and transforms consume."""

    key: str
    frame_dir: str
    label: int
    keypoint: np.ndarray  # M×T×V×2, stored dtype
    keypoint_score: np.ndarray  # M×T×V
    img_shape: tuple[int, int]
    peak: int | None  # precomputed intensity peak, None when not requested
    shard: str


def _npy(data: bytes | memoryview, shard: str, key: str, frame_dir: str, field: str) -> np.ndarray:
    """A float array member in the native byte order (``npy_reader``: never unpickling, size checked)."""
    try:
        arr = read_npy(data)
    except NpyError as exn:
        raise CorruptSample(shard, key, frame_dir, field, f"not a plain float .npy array ({exn})") from exn
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def _meta(raw: dict[str, Any], shard: str, key: str) -> tuple[str, int, int, tuple[int, int]]:
    try:
        if len(raw["json"]) > _MAX_META:
            raise ValueError(f"{len(raw['json'])} bytes, more than {_MAX_META}")
        meta = json.loads(bytes(raw["json"]))  # a memoryview from the tar reader
        frame_dir = str(meta["frame_dir"])
    except Exception as exn:
        raise CorruptSample(shard, key, None, "json",
                            f"unreadable metadata ({type(exn).__name__}: {exn})") from exn
    try:
        label, total = int(meta["label"]), int(meta["total_frames"])
        h, w = (int(v) for v in meta["img_shape"])
    except Exception as exn:
        raise CorruptSample(shard, key, frame_dir, "json",
                            f"bad label/total_frames/img_shape ({exn})") from exn
    if h <= 0 or w <= 0:
        raise CorruptSample(shard, key, frame_dir, "img_shape", f"must be positive, got {(h, w)}")
    return frame_dir, label, total, (h, w)


def decode(raw: dict[str, Any], shard_url: str, num_classes: int, peaks: dict[str, int] | None) -> Video:
    """Decode and check one raw sample (``npy_reader``: float arrays only, never unpickling): the members
    are all there, keypoints M×T×17×2 with M, T >= 1, scores M×T×17, T = ``total_frames``, the label a
    class and the peak a frame; :class:`CorruptSample` naming the sample and field otherwise.

    ``peaks`` is the shard's key → peak map when the intensity pathway needs it, else None.
    """
    key = raw["__key__"]
    missing = [m for m in MEMBERS if m not in raw]
    if "json" in missing:
        raise CorruptSample(shard_url, key, None, "json", f"member missing (members: {sorted(raw)})")
    frame_dir, label, total, img_shape = _meta(raw, shard_url, key)
    if missing:
        raise CorruptSample(shard_url, key, frame_dir, missing[0], "member missing")
    kp = _npy(raw["keypoint.npy"], shard_url, key, frame_dir, "keypoint")
    score = _npy(raw["keypoint_score.npy"], shard_url, key, frame_dir, "keypoint_score")
    if kp.ndim != 4 or kp.shape[2:] != (NUM_JOINTS, 2) or kp.shape[0] < 1 or kp.shape[1] < 1:
        raise CorruptSample(shard_url, key, frame_dir, "keypoint",
                            f"expected M×T×{NUM_JOINTS}×2 (M, T >= 1), got shape {kp.shape}")
    if score.shape != kp.shape[:-1]:
        raise CorruptSample(shard_url, key, frame_dir, "keypoint_score",
                            f"shape {score.shape} does not match keypoint's M×T×V {kp.shape[:-1]}")
    if kp.shape[1] != total:
        raise CorruptSample(shard_url, key, frame_dir, "total_frames",
                            f"{total} but keypoint has {kp.shape[1]} frames")
    if not 0 <= label < num_classes:
        raise CorruptSample(shard_url, key, frame_dir, "label", f"{label} outside [0, {num_classes})")
    peak = None
    if peaks is not None:
        if key not in peaks:
            raise CorruptSample(shard_url, key, frame_dir, "intensity",
                                "no row in the shard's intensity table")
        peak = int(peaks[key])
        if not 0 <= peak < total:
            raise CorruptSample(shard_url, key, frame_dir, "intensity", f"peak {peak} outside [0, {total})")
    return Video(key, frame_dir, label, kp, score, img_shape, peak, shard_url)
