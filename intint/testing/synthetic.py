"""A small seeded generator of PYSKL-format annotation dicts (docs/method.md §1) for tests and the demo job.

Real datasets are large and licensed; tests and the placeholder main job need a file with the same
structure and the same awkward cases: float16 or float32 arrays, several splits, videos from 20 to
400 frames, 1-3 person slots, persons absent for part of the video (all-zero coordinates, score 0),
and motion that is plausible for a skeleton. Each class gets its own limb rhythm plus one burst of
fast motion, so a model trained on the output can learn something and intensity curves have a
clear peak.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from intint.pose.skeleton import NUM_JOINTS
from intint.store import fsio

# COCO-17 template in person units (height ≈ 1, y down, x to the image right), facing the camera.
_TEMPLATE = np.array([
    (0.00, -0.42), (0.03, -0.45), (-0.03, -0.45), (0.06, -0.43), (-0.06, -0.43),
    (0.12, -0.30), (-0.12, -0.30), (0.17, -0.12), (-0.17, -0.12), (0.19, 0.04), (-0.19, 0.04),
    (0.08, 0.05), (-0.08, 0.05), (0.09, 0.28), (-0.09, 0.28), (0.10, 0.50), (-0.10, 0.50),
], dtype=np.float64)
# (root, middle, end) chains rotated about their root: arms about the shoulders, legs about the hips.
_CHAINS: tuple[tuple[int, int, int], ...] = ((5, 7, 9), (6, 8, 10), (11, 13, 15), (12, 14, 16))
_IMG_SHAPES: tuple[tuple[int, int], ...] = ((1080, 1920), (480, 640), (240, 320))


def _rotate(vec: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotate 2-vectors ``vec`` (…×2) by ``angle`` (…) radians."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([c * vec[..., 0] - s * vec[..., 1], s * vec[..., 0] + c * vec[..., 1]], axis=-1)


def _class_params(num_classes: int, seed: int) -> np.ndarray:
    """Per class and chain: (amplitude rad, frequency cycles/frame, phase) — the class's rhythm."""
    rng = np.random.default_rng([seed, 7])
    amp = rng.uniform(0.1, 1.2, (num_classes, len(_CHAINS)))
    freq = rng.uniform(0.01, 0.12, (num_classes, len(_CHAINS)))
    phase = rng.uniform(0, 2 * np.pi, (num_classes, len(_CHAINS)))
    return np.stack([amp, freq, phase], axis=-1)


def _person(rng: np.random.Generator, t: int, params: np.ndarray, img_shape: tuple[int, int]) -> np.ndarray:
    """One person's T×17×2 pixel trajectory: class rhythm + a motion burst + drift + jitter."""
    h, w = img_shape
    frames = np.arange(t, dtype=np.float64)
    burst_len = max(2, t // 6)
    burst_start = int(rng.integers(0, max(1, t - burst_len)))
    boost = np.ones(t)
    boost[burst_start:burst_start + burst_len] = 3.0
    # Integrate frequency so the burst speeds the rhythm up without a jump in position.
    cycles = np.cumsum(params[:, 1, None] * boost[None, :], axis=1)
    angles = params[:, 0, None] * np.sqrt(boost) * np.sin(2 * np.pi * cycles + params[:, 2, None])
    pose = np.broadcast_to(_TEMPLATE, (t, NUM_JOINTS, 2)).copy()
    for (root, mid, end), ang in zip(_CHAINS, angles, strict=True):
        base = _TEMPLATE[root]
        pose[:, mid] = base + _rotate(_TEMPLATE[mid] - base, ang)
        pose[:, end] = pose[:, mid] + _rotate(_TEMPLATE[end] - _TEMPLATE[mid], 1.5 * ang)
    lean = 0.1 * np.sin(2 * np.pi * frames / max(t, 2) + rng.uniform(0, 2 * np.pi))
    pose = _rotate(pose, lean[:, None])
    height = rng.uniform(0.35, 0.6) * h
    centre = np.array([rng.uniform(0.25, 0.75) * w, rng.uniform(0.35, 0.65) * h])
    drift = np.cumsum(rng.normal(0, 0.002 * w, (t, 2)), axis=0)
    xy = pose * height + centre + drift[:, None, :] + rng.normal(0, 0.004 * height, (t, NUM_JOINTS, 2))
    return np.clip(xy, [1, 1], [w - 1, h - 1])


def _presence(rng: np.random.Generator, slot: int, t: int) -> np.ndarray:
    """Frames in which a slot is present: slot 0 mostly all of them (sometimes with a gap), other
    slots one contiguous interval (sometimes none at all)."""
    present = np.zeros(t, dtype=bool)
    if slot == 0:
        present[:] = True
        if t >= 10 and rng.random() < 0.3:
            a = int(rng.integers(1, t - 3))
            present[a:a + int(rng.integers(1, max(2, t // 5)))] = False
        return present
    if rng.random() < 0.1:
        return present
    a = int(rng.integers(0, max(1, t - 1)))
    b = int(rng.integers(a + 1, t + 1))
    present[a:b] = True
    return present


def _assign_splits(rng: np.random.Generator, frame_dirs: list[str],
                   splits: Sequence[str] | Mapping[str, float]) -> dict[str, list[str]]:
    weights = dict(splits) if isinstance(splits, Mapping) else {s: 1.0 for s in splits}
    if not weights:
        raise ValueError("make_annotations: at least one split is needed")
    frac = np.array(list(weights.values()), dtype=np.float64)
    bounds = np.round(np.cumsum(frac / frac.sum()) * len(frame_dirs)).astype(int)
    order = rng.permutation(len(frame_dirs))
    out: dict[str, list[str]] = {}
    start = 0
    for name, stop in zip(weights, bounds, strict=True):
        out[name] = [frame_dirs[i] for i in sorted(order[start:stop])]
        start = stop
    return out


def make_annotations(num_videos: int, num_classes: int,
                     splits: Sequence[str] | Mapping[str, float] | None = None,
                     seed: int = 0, dtype: Any = np.float16, frames: tuple[int, int] = (20, 400),
                     max_persons: int = 3) -> dict[str, Any]:
    """A PYSKL-format dict ``{"split": {...}, "annotations": [...]}``, identical for the same arguments.

    ``splits``: names (equal shares) or name → share; default ``{"train": 0.75, "val": 0.25}``. Each
    video is in exactly one split. ``frames``: inclusive range of T. Labels are balanced over ``num_classes``.
    """
    if num_videos < 0 or num_classes < 1 or max_persons < 1:
        raise ValueError("make_annotations: need num_videos >= 0, num_classes >= 1, max_persons >= 1")
    if splits is None:
        splits = {"train": 0.75, "val": 0.25}
    rng = np.random.default_rng(seed)
    params = _class_params(num_classes, seed)
    labels = rng.permutation(np.arange(num_videos) % num_classes)
    annotations: list[dict[str, Any]] = []
    for i in range(num_videos):
        label = int(labels[i])
        t = int(rng.integers(frames[0], frames[1] + 1))
        img_shape = _IMG_SHAPES[int(rng.integers(len(_IMG_SHAPES)))]
        m = int(rng.integers(1, max_persons + 1))
        kp = np.zeros((m, t, NUM_JOINTS, 2), dtype=np.float64)
        score = np.zeros((m, t, NUM_JOINTS), dtype=np.float64)
        for slot in range(m):
            present = _presence(rng, slot, t)
            kp[slot, present] = _person(rng, t, params[label], img_shape)[present]
            score[slot, present] = rng.uniform(0.3, 1.0, (int(present.sum()), NUM_JOINTS))
        annotations.append({
            "frame_dir": f"synth/video_{i:05d}.c{label:03d}",
            "label": label,
            "total_frames": t,
            "img_shape": img_shape,
            "original_shape": img_shape,
            "keypoint": kp.astype(dtype),
            "keypoint_score": score.astype(dtype),
        })
    split_lists = _assign_splits(rng, [a["frame_dir"] for a in annotations], splits)
    return {"split": split_lists, "annotations": annotations}


def write_pickle(obj: Any, path: str, protocol: int = 4) -> str:
    """Pickle ``obj`` to a path or fsspec URL atomically (our own data: pickling is safe here)."""
    return fsio.atomic_write(path, pickle.dumps(obj, protocol=protocol))
