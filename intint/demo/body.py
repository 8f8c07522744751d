"""An articulated 2D-projected human body for the demo dataset: joint-angle channels → COCO-17 pixels.

Why a body model instead of random curves: the demo must look like what a pose detector gives
(bones keep their length, feet stay on the ground, a turn foreshortens the shoulders), so that
heatmaps of its skeletons teach the same things real ones do and the intensity curves behave like
real ones. Motion is written as time series of segment angles ("channels"); forward kinematics
turns them into 3D joint positions, which a yaw rotation and an orthographic camera project to
pixels. Everything is vectorised over frames.

Body frame: X = the person's left, Y = up, Z = forward (towards the camera at yaw 0). A segment
direction is given by two angles: ``alpha`` from straight down (0 = hanging, π/2 = horizontal,
π = straight up) and ``beta`` around the vertical (0 = sideways outwards, π/2 = forwards,
-π/2 = backwards, π = inwards). Lengths are in units of the person's standing height.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from intint.pose.skeleton import NUM_JOINTS

# Segment angle channels: (upper arm, forearm, thigh, shin) × (left, right) × (alpha, beta).
LIMB_CHANNELS: tuple[str, ...] = tuple(
    f"{seg}_{ang}_{side}" for side in ("l", "r") for seg in ("ua", "fa", "th", "sh") for ang in ("a", "b")
)
# Whole-body channels: horizontal root offset (heights), airborne height (heights), yaw (rad, 0 faces
# the camera), torso pitch (rad, + leans forward), torso roll (rad, + leans to the person's right).
BODY_CHANNELS: tuple[str, ...] = ("root_x", "air", "yaw", "pitch", "roll")
CHANNELS: tuple[str, ...] = BODY_CHANNELS + LIMB_CHANNELS
CHANNEL_INDEX: dict[str, int] = {name: i for i, name in enumerate(CHANNELS)}

# Rest pose: arms hang slightly out with the forearm a little forward, legs nearly straight.
REST_POSE: dict[str, float] = {
    **{f"ua_a_{s}": 0.12 for s in "lr"}, **{f"ua_b_{s}": 0.0 for s in "lr"},
    **{f"fa_a_{s}": 0.18 for s in "lr"}, **{f"fa_b_{s}": np.pi / 2 for s in "lr"},
    **{f"th_a_{s}": 0.05 for s in "lr"}, **{f"th_b_{s}": 0.0 for s in "lr"},
    **{f"sh_a_{s}": 0.03 for s in "lr"}, **{f"sh_b_{s}": 0.0 for s in "lr"},
    "root_x": 0.0, "air": 0.0, "yaw": 0.0, "pitch": 0.0, "roll": 0.0,
}


@dataclass(frozen=True)
class BodyProportions:
    """Segment lengths and offsets as fractions of standing height (adult averages): the segments that
    forward kinematics chains from the hips and shoulders, and where those joints sit on the torso."""

    upper_arm: float = 0.17
    forearm: float = 0.15
    thigh: float = 0.245
    shin: float = 0.245
    ankle_height: float = 0.03
    neck_height: float = 0.29          # hip midpoint → shoulder midpoint
    shoulder_half_width: float = 0.115
    hip_half_width: float = 0.085


# Head and shoulder points in the torso frame, relative to the hip midpoint (x is the person's left).
_HEAD_POINTS = np.array([
    [0.0, 0.39, 0.05],       # nose
    [0.03, 0.41, 0.04],      # left eye
    [-0.03, 0.41, 0.04],     # right eye
    [0.065, 0.40, -0.01],    # left ear
    [-0.065, 0.40, -0.01],   # right ear
])


class Motion:
    """Channel time series of one person; events are written into it by blending towards targets.

    Blending (``value ← (1 − e)·value + e·target`` with an envelope e in [0, 1]) lets motions be
    layered: an idle gesture, then a guard pose, then a punch from the guard, each only describing
    where it wants the limbs to go and how fast.
    """

    def __init__(self, num_frames: int, rest: dict[str, float] | None = None) -> None:
        rest = REST_POSE if rest is None else rest
        self.num_frames = num_frames
        self.values = np.empty((len(CHANNELS), num_frames), dtype=np.float64)
        for name, i in CHANNEL_INDEX.items():
            self.values[i] = rest[name]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[CHANNEL_INDEX[name]]

    def add(self, name: str, delta: np.ndarray | float) -> None:
        """Add an offset to a channel (used for small idle oscillations)."""
        self.values[CHANNEL_INDEX[name]] += delta

    def blend(self, env: np.ndarray, targets: dict[str, np.ndarray | float]) -> None:
        """Move channels towards ``targets`` by the envelope ``env`` (length T, values in [0, 1])."""
        for name, target in targets.items():
            row = self.values[CHANNEL_INDEX[name]]
            row *= 1.0 - env
            row += env * target


def smoothstep(x: np.ndarray) -> np.ndarray:
    """C1-smooth ramp 0 → 1 on [0, 1]; keeps velocities continuous so speeds have no spikes."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def envelope(num_frames: int, start: float, rise: float, hold: float, fall: float) -> np.ndarray:
    """Trapezoid with smooth ramps: 0 → 1 over ``rise`` frames, ``hold`` frames at 1, 1 → 0 over ``fall``."""
    t = np.arange(num_frames, dtype=np.float64)
    up = smoothstep((t - start) / max(rise, 1e-6))
    down = 1.0 - smoothstep((t - (start + rise + hold)) / max(fall, 1e-6))
    return np.minimum(up, down)


def direction(alpha: np.ndarray, beta: np.ndarray, side: np.ndarray | float) -> np.ndarray:
    """Unit segment directions (...×3) from (alpha, beta); ``side`` = +1 left, -1 right mirrors 'outwards'."""
    sa = np.sin(alpha)
    return np.stack([side * sa * np.cos(beta), -np.cos(alpha), sa * np.sin(beta)], axis=-1)


def _torso_rotation(pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """T×3×3 rotation ``R_roll @ R_pitch``: pitch about X (up tilts to +Z, forwards), then roll about Z
    (up tilts to −X), written out in closed form because building it per frame dominated the cost."""
    cp, sp, cr, sr = np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rot = np.empty((pitch.shape[0], 3, 3))
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 0, 2] = cr, -sr * cp, sr * sp
    rot[:, 1, 0], rot[:, 1, 1], rot[:, 1, 2] = sr, cr * cp, -cr * sp
    rot[:, 2, 0], rot[:, 2, 1], rot[:, 2, 2] = 0.0, sp, cp
    return rot


_SIDE_SIGN = np.array([1.0, -1.0])[:, None, None]          # left, right
# COCO slots of (left, right) pairs: contiguous, so plain slices address both sides at once.
_ELBOW, _WRIST, _HIP, _KNEE, _ANKLE = slice(7, 9), slice(9, 11), slice(11, 13), slice(13, 15), slice(15, 17)


def forward_kinematics(motion: Motion, body: BodyProportions = BodyProportions()) -> np.ndarray:
    """3D COCO-17 joints (T×17×3, heights) relative to the ground point under the root.

    The lower ankle is kept on the ground (plus ``air`` when jumping), so squats and kicks move the
    pelvis the way a standing person's does without any extra bookkeeping in the motion programs.
    """
    t = motion.num_frames
    rot = _torso_rotation(motion["pitch"], motion["roll"])                      # T×3×3
    # LIMB_CHANNELS is ordered side, segment (ua, fa, th, sh), angle: one reshape gives all eight.
    seg = motion.values[len(BODY_CHANNELS):].reshape(2, 4, 2, t)
    lengths = np.array([body.upper_arm, body.forearm, body.thigh, body.shin])[None, :, None, None]
    vec = direction(seg[:, :, 0], seg[:, :, 1], _SIDE_SIGN) * lengths            # side×seg×T×3
    arms = np.einsum("tij,sgtj->sgti", rot, vec[:, :2])                          # in the torso frame
    upper_local = np.concatenate([_HEAD_POINTS, [
        [body.shoulder_half_width, body.neck_height - 0.01, 0.0],
        [-body.shoulder_half_width, body.neck_height - 0.01, 0.0]]])
    upper = upper_local @ rot.transpose(0, 2, 1)                                # T×7×3
    joints = np.empty((t, NUM_JOINTS, 3), dtype=np.float64)
    joints[:, 0:7] = upper
    joints[:, _ELBOW] = upper[:, 5:7] + arms[:, 0].transpose(1, 0, 2)
    joints[:, _WRIST] = joints[:, _ELBOW] + arms[:, 1].transpose(1, 0, 2)
    joints[:, _HIP] = [[body.hip_half_width, 0.0, 0.0], [-body.hip_half_width, 0.0, 0.0]]
    joints[:, _KNEE] = joints[:, _HIP] + vec[:, 2].transpose(1, 0, 2)
    joints[:, _ANKLE] = joints[:, _KNEE] + vec[:, 3].transpose(1, 0, 2)
    pelvis_height = -joints[:, _ANKLE, 1].min(axis=1) + body.ankle_height + motion["air"]
    joints[:, :, 1] += pelvis_height[:, None]
    yaw = motion["yaw"]
    cy, sy = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    x, z = joints[:, :, 0].copy(), joints[:, :, 2].copy()
    joints[:, :, 0] = x * cy + z * sy + motion["root_x"][:, None]
    joints[:, :, 2] = -x * sy + z * cy
    return joints


def project(joints: np.ndarray, height_px: float, root_x_px: float, ground_y_px: float) -> np.ndarray:
    """Orthographic camera: body X → image x (a person facing the camera has their left on image right),
    body Y (up) → image y (down). Returns T×17×2 pixels."""
    x = root_x_px + height_px * joints[:, :, 0]
    y = ground_y_px - height_px * joints[:, :, 1]
    return np.stack([x, y], axis=-1)
