"""The demo's motion programs: what each class does (its burst) and the idle footage around it.

A burst planner draws all its randomness up front (timing, side, amplitudes) and returns a `Burst`: its
length and how to write it, by blending joint-angle channels of `intint.demo.body.Motion` towards target
poses, into a motion starting at a given frame. `PROGRAMS` maps every demo class to its planner and how
often the burst repeats; `idle_footage` is the low-motion footage every class shares.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from intint.demo.body import Motion, envelope

_SIDES = ("l", "r")


@dataclass(frozen=True)
class Burst:
    """A planned burst: its length in frames and how to write it into a motion starting at a frame."""

    duration: int
    apply: Callable[[Motion, int], None]


def rand_int(rng: np.random.Generator, lo: int, hi: int) -> int:
    """A uniform integer in [lo, hi], both ends included."""
    return int(rng.integers(lo, hi + 1))


def _guard_punch(rng: np.random.Generator, uppercut: bool) -> Burst:
    """Guard up, one fast strike with a random arm, back, guard down.

    The two variants share the guard and timing and differ at the strike's apex (held 3-5 frames):
    a straight punch ends with the whole arm horizontal and forwards, an uppercut with the upper arm
    raised forwards and the forearm vertical (fist above the head), so glimpses of the guard do not
    tell them apart.
    """
    side = _SIDES[rand_int(rng, 0, 1)]
    rise, ext, hold = rand_int(rng, 5, 7), rand_int(rng, 3, 4), rand_int(rng, 3, 5)
    ret, fall = rand_int(rng, 4, 6), rand_int(rng, 6, 8)
    pre, post = rand_int(rng, 1, 4), rand_int(rng, 1, 4)
    inner = pre + ext + hold + ret + post
    twist = rng.uniform(0.15, 0.3) * (1.0 if side == "l" else -1.0)
    if uppercut:
        strike = {f"ua_a_{side}": 1.9, f"ua_b_{side}": 1.45, f"fa_a_{side}": 2.85, f"fa_b_{side}": 1.5}
    else:
        strike = {f"ua_a_{side}": 1.55, f"ua_b_{side}": 1.4, f"fa_a_{side}": 1.55, f"fa_b_{side}": 1.4}

    def apply(m: Motion, s: int) -> None:
        guard = envelope(m.num_frames, s, rise, inner, fall)
        m.blend(guard, {f"{seg}_{ang}_{sd}": v for sd in _SIDES
                        for seg, ang, v in (("ua", "a", 0.55), ("ua", "b", 1.3), ("fa", "a", 2.3),
                                            ("fa", "b", 1.45))})
        hit = envelope(m.num_frames, s + rise + pre, ext, hold, ret)
        m.blend(hit, strike)
        m.add("yaw", twist * hit)
        m.add("pitch", 0.08 * hit)

    return Burst(rise + inner + fall, apply)


def _kick(rng: np.random.Generator, high: bool) -> Burst:
    """Chamber the knee, snap the leg out, retract, put it down; high vs low differ in the apex angle."""
    side = _SIDES[rand_int(rng, 0, 1)]
    chamber, ext, hold = rand_int(rng, 4, 6), rand_int(rng, 3, 4), rand_int(rng, 2, 4)
    ret, lower = rand_int(rng, 3, 5), rand_int(rng, 4, 6)
    apex = rng.uniform(1.5, 1.8) if high else rng.uniform(0.5, 0.7)
    lean = -0.12 if high else -0.05

    def apply(m: Motion, s: int) -> None:
        whole = envelope(m.num_frames, s, chamber, ext + hold + ret, lower)
        m.blend(whole, {f"th_a_{side}": 0.9, f"th_b_{side}": np.pi / 2, f"sh_a_{side}": -0.5,
                        f"sh_b_{side}": np.pi / 2, "ua_a_l": 0.7, "ua_b_l": 0.2, "ua_a_r": 0.7,
                        "ua_b_r": 0.2})
        snap = envelope(m.num_frames, s + chamber, ext, hold, ret)
        m.blend(snap, {f"th_a_{side}": apex, f"sh_a_{side}": apex})
        m.add("pitch", lean * whole)

    return Burst(chamber + ext + hold + ret + lower, apply)


def _hand_up(rng: np.random.Generator, wave: bool) -> Burst:
    """Raise a hand above the head and hold it; a wave swings the whole arm fast from side to side.

    Same rise, hold and fall timing in both variants, so only the motion *during* the hold (seen
    whole by the intensity window, sampled every ~8 frames by the uniform clip) separates them.
    """
    side = _SIDES[rand_int(rng, 0, 1)]
    rise, hold, fall = rand_int(rng, 5, 7), rand_int(rng, 16, 26), rand_int(rng, 5, 7)
    period, amp, phase = rng.uniform(6.0, 9.0), rng.uniform(0.7, 0.9), rng.uniform(0, 2 * np.pi)
    tilt = rng.uniform(0.05, 0.2)

    def apply(m: Motion, s: int) -> None:
        t = np.arange(m.num_frames, dtype=np.float64)
        lean = tilt + (amp * np.sin(2 * np.pi * (t - s) / period + phase) if wave else 0.0)
        env = envelope(m.num_frames, s, rise, hold, fall)
        sway = 0.8 * (lean - tilt) if wave else 0.0            # the upper arm swings along
        m.blend(env, {f"ua_a_{side}": 2.4 + sway, f"ua_b_{side}": 0.3, f"fa_a_{side}": np.pi - lean,
                      f"fa_b_{side}": 0.0})

    return Burst(rise + hold + fall, apply)


def _crouch(m: Motion, env: np.ndarray, depth: float) -> None:
    """Bend both knees (thighs forwards, shins backwards; the feet stay on the ground)."""
    for sd in _SIDES:
        m.blend(env, {f"th_a_{sd}": depth, f"th_b_{sd}": np.pi / 2, f"sh_a_{sd}": -0.6 * depth,
                      f"sh_b_{sd}": np.pi / 2})


def _jump(rng: np.random.Generator) -> Burst:
    """Crouch with arms back, take off swinging the arms up, fly a parabola, land in a crouch."""
    crouch, flight = rand_int(rng, 5, 7), rand_int(rng, 10, 14)
    land, recover = rand_int(rng, 3, 5), rand_int(rng, 5, 7)
    height, depth = rng.uniform(0.15, 0.25), rng.uniform(0.7, 0.9)

    def apply(m: Motion, s: int) -> None:
        n = m.num_frames
        takeoff = s + crouch
        load = envelope(n, s, crouch, 0, 3)
        _crouch(m, load, depth)
        m.blend(load, {"ua_a_l": -0.6, "ua_b_l": np.pi / 2, "ua_a_r": -0.6, "ua_b_r": np.pi / 2})
        m.add("pitch", 0.3 * load)
        u = (np.arange(n, dtype=np.float64) - (takeoff + 2)) / flight
        m.add("air", height * 4.0 * np.clip(u, 0, 1) * (1.0 - np.clip(u, 0, 1)))
        arms = envelope(n, takeoff, 3, flight - 4, 4)
        m.blend(arms, {f"{seg}_{ang}_{sd}": v for sd in _SIDES
                       for seg, ang, v in (("ua", "a", 2.4), ("ua", "b", 1.0), ("fa", "a", 2.6),
                                           ("fa", "b", 1.2))})
        landing = envelope(n, takeoff + flight, 2, land, recover)
        _crouch(m, landing, 0.6 * depth)
        m.add("pitch", 0.2 * landing)

    return Burst(crouch + 2 + flight + land + recover, apply)


def _squat(rng: np.random.Generator) -> Burst:
    """Squat down fast with the arms forwards, hold briefly, stand up."""
    down, hold, up = rand_int(rng, 7, 10), rand_int(rng, 3, 6), rand_int(rng, 7, 10)
    depth = rng.uniform(1.2, 1.45)

    def apply(m: Motion, s: int) -> None:
        env = envelope(m.num_frames, s, down, hold, up)
        _crouch(m, env, depth)
        m.blend(env, {f"{seg}_{ang}_{sd}": 1.5 for sd in _SIDES for seg in ("ua", "fa") for ang in "ab"})
        m.add("pitch", 0.4 * env)

    return Burst(down + hold + up, apply)


# Class → (burst planner, repetitions). Planners draw all their randomness up front.
PROGRAMS: dict[str, tuple[Callable[[np.random.Generator], Burst], int]] = {
    "punch": (lambda r: _guard_punch(r, uppercut=False), 1),
    "uppercut": (lambda r: _guard_punch(r, uppercut=True), 1),
    "kick_high": (lambda r: _kick(r, high=True), 1),
    "kick_low": (lambda r: _kick(r, high=False), 1),
    "wave": (lambda r: _hand_up(r, wave=True), 1),
    "raise_hand": (lambda r: _hand_up(r, wave=False), 1),
    "jump": (_jump, 1),
    "squat": (_squat, 1),
    "squat_three_times": (_squat, 3),
    "jump_three_times": (_jump, 3),
}


def plan_bursts(rng: np.random.Generator, name: str) -> list[Burst]:
    """The bursts of one video of class `name` (three for a count class), their randomness drawn now."""
    planner, reps = PROGRAMS[name]
    return [planner(rng) for _ in range(reps)]


def idle_footage(m: Motion, rng: np.random.Generator, busy: list[tuple[int, int]],
                 decoys_per_300: int) -> None:
    """Low-motion footage shared by every class: breathing, sway, a little drift and turning, and
    optionally slow idle gestures (an arm raised to a random pose, a step, a lean) that make single
    frames of the bursts ambiguous. Gestures avoid the busy (burst) intervals."""
    n = m.num_frames
    t = np.arange(n, dtype=np.float64)

    def wave_(amp: float, lo: float, hi: float) -> np.ndarray:
        return amp * np.sin(2 * np.pi * t / rng.uniform(lo, hi) + rng.uniform(0, 2 * np.pi))

    m.add("pitch", wave_(0.015, 50, 90))
    sway = rng.uniform(0, 2 * np.pi)
    period = rng.uniform(100, 200)
    m.add("root_x", 0.015 * np.sin(2 * np.pi * t / period + sway) + rng.uniform(-0.06, 0.06) * t / n)
    m.add("roll", 0.03 * np.sin(2 * np.pi * t / period + sway))
    m.add("yaw", wave_(0.2, 200, 500))
    for sd in _SIDES:
        m.add(f"ua_a_{sd}", wave_(0.04, 60, 120))
        m.add(f"ua_b_{sd}", wave_(0.1, 80, 160))
    occupied = [(a - 10, b + 10) for a, b in busy]
    for _ in range(rand_int(rng, 0, decoys_per_300 * n // 300)):
        rise, hold, fall = rand_int(rng, 18, 35), rand_int(rng, 10, 60), rand_int(rng, 18, 35)
        dur = rise + hold + fall
        if dur >= n - 2:
            continue
        for _try in range(8):
            s = rand_int(rng, 0, n - dur - 1)
            if all(s + dur <= a or s >= b for a, b in occupied):
                break
        else:
            continue
        occupied.append((s, s + dur))
        env = envelope(n, s, rise, hold, fall)
        kind = rand_int(rng, 0, 3)
        if kind <= 1:                            # an arm to a random pose (covers punch/raise looks)
            sd = _SIDES[rand_int(rng, 0, 1)]
            m.blend(env, {f"ua_a_{sd}": rng.uniform(0.3, 2.4), f"ua_b_{sd}": rng.uniform(-0.3, 1.6),
                          f"fa_a_{sd}": rng.uniform(0.3, 2.9), f"fa_b_{sd}": rng.uniform(0.0, np.pi)})
        elif kind == 2:                          # a step to the side
            sd = _SIDES[rand_int(rng, 0, 1)]
            m.blend(env, {f"th_a_{sd}": rng.uniform(0.15, 0.35), f"th_b_{sd}": 0.0})
            m.add("root_x", rng.uniform(-0.05, 0.05) * env)
        else:                                    # lean forwards, or a shallow knee bend
            m.add("pitch", rng.uniform(0.1, 0.3) * env)
            _crouch(m, env * rng.uniform(0.0, 0.4), 0.5)
