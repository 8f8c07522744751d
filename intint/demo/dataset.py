"""The embedded demo dataset: seeded, procedurally animated COCO-17 skeletons in the PYSKL format.

Why it exists: the project needs a dataset that ships with the package (no download, no licence)
and that *shows the method's point*, so an end-to-end run on a laptop demonstrates why two pathways
beat one:

- Burst classes (punch / uppercut, high / low kick, wave / raise hand, jump / squat): the
  discriminative motion is one short intense burst (~15-45 frames) at a random time inside long
  low-motion footage (breathing, swaying, turning; optionally slow decoy gestures). A 48-frame
  window centred on the joint-motion peak sees the whole burst; 48 uniformly spread frames of a
  400-frame video catch a few of its frames. Each pair differs only in the burst's detail.
- Count classes (squat ×3, jump ×3): the same burst repeated three times, spread over the video so
  one 48-frame window sees one repetition and looks exactly like the single-burst class; only the
  uniformly sampled Integrity clip sees the repetitions.

So the Intensity pathway wins the fine burst pairs, Integrity wins the count pairs, and late
fusion wins overall. The camera sees the actor from 43-72° off frontal (forward strikes and kicks are
not foreshortened away) and a bystander is rare: the demo trains a tiny network for a few CPU minutes,
so the classes must be learnable from a few hundred videos. Left/right pairs are deliberately absent:
the training flip and the test-time flip view mirror a left-arm action into a right-arm one, so such
labels are not learnable with the PoseC3D pipeline (the arm/leg used is random per video instead).
The classes' motions are `intint.demo.motions`; this module places them in videos, simulates the
detector and assembles the splits.

Detector realism: scores are highest for the torso, lower for wrists and ankles, and drop with
joint speed (motion blur); fast extremities are sometimes lost (coordinates 0, score 0), and
rarely a joint drops out during idle footage. Keypoints carry pixel noise and are stored float16
like PYSKL's own extraction. Persons never enter or leave mid-video: the reference joint
intensity counts a vanishing person as a jump to (0, 0) (docs/method.md §2.2), which would bury the bursts.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from intint.demo.body import Motion, forward_kinematics, project
from intint.demo.motions import PROGRAMS, Burst, idle_footage, plan_bursts, rand_int
from intint.pose.skeleton import NUM_JOINTS
from intint.store import fsio

DEMO_CLASSES: tuple[str, ...] = (
    "punch", "uppercut", "kick_high", "kick_low", "wave", "raise_hand", "jump", "squat",
    "squat_three_times", "jump_three_times",
)
# Classes told apart only by how often the burst repeats over the whole video.
DEMO_COUNT_CLASSES: tuple[str, ...] = ("squat_three_times", "jump_three_times")
DEMO_SPLITS: tuple[str, ...] = ("train", "val", "test")
DEMO_FRAME_SHAPES: tuple[tuple[int, int], ...] = ((1080, 1920), (720, 1280), (480, 640))

# Per-joint detector confidence when still (torso high, extremities low), COCO order.
_BASE_SCORE = np.array([0.92, 0.90, 0.90, 0.80, 0.80, 0.94, 0.94, 0.86, 0.86, 0.74, 0.74,
                        0.91, 0.91, 0.86, 0.86, 0.78, 0.78])
_EXTREMITIES = np.array([7, 8, 9, 10, 13, 14, 15, 16])      # elbows, wrists, knees, ankles


@dataclass(frozen=True)
class DemoConfig:
    """Size and realism knobs of the demo dataset; defaults fit a few-minute CPU training run."""

    num_per_class_train: int = 32
    num_per_class_val: int = 10
    num_per_class_test: int = 20
    seed: int = 0
    # Videos of 120-400 frames (count classes 200-400): without the very short videos where a single
    # burst fills most of the uniformly sampled clip and looks like three repetitions.
    min_frames: int = 120
    max_frames: int = 400
    min_frames_count_classes: int = 200    # three repetitions 48 frames apart need room
    two_person_prob: float = 0.1            # a bystander idles beside the actor for the whole video
    frame_shapes: tuple[tuple[int, int], ...] = DEMO_FRAME_SHAPES
    keypoint_noise: float = 0.002           # detector jitter σ, in person heights
    burst_dropout_rate: float = 0.03        # per-frame loss probability of a very fast extremity
    idle_dropout_prob: float = 0.03         # per person-video chance of one short idle joint dropout
    # Slow idle gestures (an arm to a random pose, a step, a lean) that mimic single burst frames: at most
    # this many per 300 frames. Off by default: they made the classes too slow to learn for the demo's
    # few-minute CPU budget; raise it for a harder dataset.
    decoy_gestures_per_300_frames: int = 0

    def __post_init__(self) -> None:
        for name in ("num_per_class_train", "num_per_class_val", "num_per_class_test"):
            if getattr(self, name) < 0:
                raise ValueError(f"DemoConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 48 <= self.min_frames_count_classes <= self.max_frames or self.min_frames < 2:
            raise ValueError("DemoConfig frame bounds must satisfy 2 <= min_frames and "
                             f"48 <= min_frames_count_classes <= max_frames, got {self}")
        if self.decoy_gestures_per_300_frames < 0:
            raise ValueError("DemoConfig.decoy_gestures_per_300_frames must be >= 0, got "
                             f"{self.decoy_gestures_per_300_frames}")
        if self.min_frames > self.max_frames:
            raise ValueError(f"DemoConfig.min_frames {self.min_frames} > max_frames {self.max_frames}")
        if not self.frame_shapes:
            raise ValueError("DemoConfig.frame_shapes must not be empty")


@dataclass(frozen=True)
class DemoSet:
    """The PYSKL dict plus the ground truth the format has no field for: where the bursts are."""

    annotations: dict
    bursts: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)  # frame_dir → [start, end)
assert tuple(PROGRAMS) == DEMO_CLASSES


_EDGE = 3              # frames kept free at both ends of a video
MIN_REPEAT_GAP = 48    # frames between repetitions: no 48-frame window touches two of them


def _place(rng: np.random.Generator, durations: list[int], num_frames: int) -> list[int]:
    """Start frames: one burst anywhere; repetitions spread over the video with random slack but at
    least ``MIN_REPEAT_GAP`` idle frames between them, so the intensity window sees only one."""
    if len(durations) == 1:
        return [rand_int(rng, _EDGE, max(_EDGE, num_frames - durations[0] - _EDGE))]
    gaps = MIN_REPEAT_GAP * (len(durations) - 1)
    slack = num_frames - 2 * _EDGE - sum(durations) - gaps
    if slack < 0:
        raise ValueError(f"{num_frames} frames cannot hold bursts of {durations} frames "
                         f"{MIN_REPEAT_GAP} frames apart")
    share = np.floor(rng.dirichlet([2.0] * (len(durations) + 1)) * slack).astype(int)
    starts, t = [], _EDGE + int(share[0])
    for d, extra in zip(durations, share[1:], strict=True):
        starts.append(t)
        t += d + MIN_REPEAT_GAP + int(extra)
    return starts


# ------------------------------------------------------------------------ detector simulation
def _detect(pixels: np.ndarray, height_px: float, img_shape: tuple[int, int], rng: np.random.Generator,
            cfg: DemoConfig) -> tuple[np.ndarray, np.ndarray]:
    """Turn true joint pixels (T×17×2) into detector output: noise, speed-dependent scores, losses."""
    n = pixels.shape[0]
    speed = np.zeros((n, NUM_JOINTS))
    if n > 1:
        d = np.diff(pixels, axis=0)
        step = np.sqrt((d * d).sum(axis=-1)) / height_px                        # heights per frame
        speed[1:] = step
        speed[:-1] = np.maximum(speed[:-1], step)
    quality = rng.uniform(0.88, 1.0)
    noise = rng.standard_normal((n, NUM_JOINTS, 3), dtype=np.float32)          # 2 for x, y; 1 for score
    score = _BASE_SCORE * quality * (1.0 - 0.55 * np.tanh(speed / 0.06)) + 0.03 * noise[..., 2]
    score = np.clip(score, 0.05, 0.99)
    sigma = cfg.keypoint_noise * height_px * (1.6 - score)[..., None]
    kp = pixels + noise[..., :2] * sigma
    h, w = img_shape
    kp[..., 0] = np.clip(kp[..., 0], 1.0, w - 1.0)
    kp[..., 1] = np.clip(kp[..., 1], 1.0, h - 1.0)
    lost = np.zeros(speed.shape, dtype=bool)
    # Only really fast joints get lost (a burst, not a slow idle gesture): linear ramp above 0.04 H/frame.
    fast = cfg.burst_dropout_rate * np.clip((speed[:, _EXTREMITIES] - 0.04) / 0.06, 0.0, 1.0)
    lost[:, _EXTREMITIES] = rng.random(fast.shape) < fast
    if rng.random() < cfg.idle_dropout_prob:
        j, s = int(rng.choice(_EXTREMITIES)), rand_int(rng, 0, n - 1)
        lost[s:s + rand_int(rng, 1, 3), j] = True
    kp[lost] = 0.0
    score[lost] = 0.0
    return kp, score


def _person(rng: np.random.Generator, n: int, bursts: list[Burst], starts: list[int], yaw: float,
            height_px: float, root_px: float, ground_px: float, img_shape: tuple[int, int],
            cfg: DemoConfig) -> tuple[np.ndarray, np.ndarray]:
    m = Motion(n)
    m.add("yaw", yaw)
    idle_footage(m, rng, [(s, s + b.duration) for b, s in zip(bursts, starts, strict=True)],
          cfg.decoy_gestures_per_300_frames)
    for b, s in zip(bursts, starts, strict=True):
        b.apply(m, s)
    pixels = project(forward_kinematics(m), height_px, root_px, ground_px)
    return _detect(pixels, height_px, img_shape, rng, cfg)


def make_video(class_index: int, rng: np.random.Generator, cfg: DemoConfig = DemoConfig()
               ) -> tuple[np.ndarray, np.ndarray, tuple[int, int], tuple[tuple[int, int], ...]]:
    """One video of class ``class_index``: keypoint M×T×17×2 and score M×T×17 (float16), the
    (h, w) frame shape and the burst intervals [start, end). The actor is person slot 0."""
    name = DEMO_CLASSES[class_index]
    bursts = plan_bursts(rng, name)
    lo = cfg.min_frames_count_classes if name in DEMO_COUNT_CLASSES else cfg.min_frames
    need = sum(b.duration for b in bursts) + 2 * _EDGE + MIN_REPEAT_GAP * (len(bursts) - 1)
    n = rand_int(rng, min(max(lo, need), cfg.max_frames), cfg.max_frames)
    starts = _place(rng, [b.duration for b in bursts], n)
    img_shape = cfg.frame_shapes[rand_int(rng, 0, len(cfg.frame_shapes) - 1)]
    h, w = img_shape
    height = rng.uniform(0.42, 0.6) * h
    ground = rng.uniform(0.9, 0.97) * h
    two = rng.random() < cfg.two_person_prob
    side = 1.0 if rng.random() < 0.5 else -1.0
    actor_x = (0.5 + side * rng.uniform(0.08, 0.2)) * w if two else rng.uniform(0.35, 0.65) * w
    yaw = rng.choice([-1.0, 1.0]) * rng.uniform(0.75, 1.25)
    people = [_person(rng, n, bursts, starts, yaw, height, actor_x, ground, img_shape, cfg)]
    if two:
        scale = rng.uniform(0.6, 0.95)
        people.append(_person(rng, n, [], [], rng.uniform(-1.2, 1.2), height * scale,
                              (0.5 - side * rng.uniform(0.3, 0.38)) * w, ground - rng.uniform(0, 0.06) * h,
                              img_shape, cfg))
    keypoint = np.stack([p[0] for p in people]).astype(np.float16)
    score = np.stack([p[1] for p in people]).astype(np.float16)
    return keypoint, score, img_shape, tuple((s, s + b.duration) for b, s in zip(bursts, starts, strict=True))


# ------------------------------------------------------------------------------ the dataset
def generate_demo(cfg: DemoConfig = DemoConfig()) -> DemoSet:
    """Build the whole dataset. Every video has its own generator seeded by (seed, split, class,
    index), so a video does not change when the number of videos per class does."""
    counts = {"train": cfg.num_per_class_train, "val": cfg.num_per_class_val, "test": cfg.num_per_class_test}
    annotations: list[dict] = []
    split: dict[str, list[str]] = {s: [] for s in DEMO_SPLITS}
    bursts: dict[str, tuple[tuple[int, int], ...]] = {}
    for split_index, split_name in enumerate(DEMO_SPLITS):
        for i in range(counts[split_name]):                 # index-major: every class early in the list
            for c, name in enumerate(DEMO_CLASSES):
                rng = np.random.default_rng([cfg.seed, split_index, c, i])
                keypoint, score, img_shape, events = make_video(c, rng, cfg)
                frame_dir = f"demo_{split_name}_{name}_{i:04d}"
                annotations.append({
                    "frame_dir": frame_dir, "label": c, "total_frames": int(keypoint.shape[1]),
                    "img_shape": img_shape, "original_shape": img_shape,
                    "keypoint": keypoint, "keypoint_score": score,
                })
                split[split_name].append(frame_dir)
                bursts[frame_dir] = events
    return DemoSet({"split": split, "annotations": annotations}, bursts)


def make_demo_annotations(num_per_class_train: int = DemoConfig.num_per_class_train,
                          num_per_class_val: int = DemoConfig.num_per_class_val,
                          num_per_class_test: int = DemoConfig.num_per_class_test,
                          seed: int = 0) -> dict:
    """The demo dataset as a PYSKL annotation dict ``{"split": {...}, "annotations": [...]}``."""
    cfg = DemoConfig(num_per_class_train=num_per_class_train, num_per_class_val=num_per_class_val,
                     num_per_class_test=num_per_class_test, seed=seed)
    return generate_demo(cfg).annotations


def write_demo(path: str | os.PathLike, **kw: int) -> Path:
    """Generate the dataset (``kw`` as for :func:`make_demo_annotations`) and pickle it atomically.

    Only plain dicts, lists, str, int, tuples and NumPy arrays are stored, so the project's
    restricted unpickler (``intint.store.annotation_file.read_annotations``) can read it.
    """
    fsio.atomic_write(os.fspath(path), pickle.dumps(make_demo_annotations(**kw), protocol=4))
    return Path(path)


def write_class_names(path: str | os.PathLike) -> Path:
    """Write the label map, one class name per line in label order (like PYSKL's label_map/*.txt)."""
    fsio.atomic_write(os.fspath(path), ("\n".join(DEMO_CLASSES) + "\n").encode())
    return Path(path)
