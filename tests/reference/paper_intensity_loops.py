"""Paper-mode intensity written as plain loops in float64, one term at a time: the oracle the
vectorised ``intint.pose.intensity_paper`` is checked against (docs/method.md §2, docs/intensity-modes.md).

Per person ``m``, frame ``t`` and joint/bone/angle ``k`` a series holds the term's value (a point, a
vector or a scalar ``1 - cos``) or None when it is not defined (absent joints, vectors without a
direction). ``next`` curves sum the change between consecutive frames, ``avr`` curves the deviation from
the per-person, per-``k`` mean over the frames where it is defined; both divide by the persons present.
"""

from __future__ import annotations

import math

import numpy as np

from intint.pose.skeleton import ANGLE_TABLE, REFERENCE_BONE_NEIGHBOUR

Series = list[list[list]]  # [m][t][k] -> value or None


def loop_paper(kp: np.ndarray, score: np.ndarray) -> dict[str, np.ndarray]:
    """The ten single paper-mode curves of one video (M×T×17×2 keypoints, M×T×17 scores)."""
    kp = kp.astype(np.float64)
    present = _presence(kp, score)
    person = present.any(axis=2)
    out = {}
    for name, series in _series(kp, present).items():
        out[f"{name}_next"] = _next_curve(name, series, person)
        out[f"{name}_avr"] = _avr_curve(name, series, person)
    return out


def _presence(kp: np.ndarray, score: np.ndarray) -> np.ndarray:
    """A joint is present when its score is > 0 and its coordinates are finite and not both 0."""
    m_count, frames = kp.shape[:2]
    present = np.zeros((m_count, frames, 17), bool)
    for m in range(m_count):
        for t in range(frames):
            for v in range(17):
                x, y = kp[m, t, v]
                present[m, t, v] = score[m, t, v] > 0 and math.isfinite(x) and math.isfinite(y) and (x or y)
    return present


def _omc(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cos of the angle between two vectors."""
    return 1 - (a @ b) / (np.hypot(*a) * np.hypot(*b))


def _vector(head: np.ndarray | None, tail: np.ndarray | None) -> np.ndarray | None:
    """head - tail, or None when an end is missing or the vector is too short to have a direction."""
    if head is None or tail is None or np.hypot(*(head - tail)) < 1e-5:
        return None
    return head - tail


def _series(kp: np.ndarray, present: np.ndarray) -> dict[str, Series]:
    """The per-term values of the five families: joints, local and centre bones, local and centre angles."""
    m_count, frames = kp.shape[:2]

    def point(m, t, j):
        """Joint j, or for j = 'hip'/'shoulder' the midpoint; None when not present."""
        pair = {"hip": (11, 12), "shoulder": (5, 6)}.get(j)
        joints = pair if pair else (j,)
        if not all(present[m, t, k] for k in joints):
            return None
        return sum(kp[m, t, k] for k in joints) / len(joints)

    def angles(m, t, centre):
        """Local: the angle at each vertex between its two arms; centre: between vertex and trunk."""
        row = []
        for vtx, (e1, e2) in ANGLE_TABLE.items():
            if centre:
                tail, head1, head2 = point(m, t, "hip"), point(m, t, vtx), point(m, t, "shoulder")
            else:
                tail, head1, head2 = point(m, t, vtx), point(m, t, e1), point(m, t, e2)
            a1, a2 = _vector(head1, tail), _vector(head2, tail)
            row.append(None if a1 is None or a2 is None else _omc(a1, a2))
        return row

    bone_end = {j: ("shoulder" if j == 0 else REFERENCE_BONE_NEIGHBOUR[j]) for j in range(17)}
    per_frame = {
        "jnt": lambda m, t: [point(m, t, j) for j in range(17)],
        "boneL": lambda m, t: [_vector(point(m, t, bone_end[j]), point(m, t, j)) for j in range(17)],
        "boneC": lambda m, t: [_vector(point(m, t, "hip"), point(m, t, j)) for j in range(17)],
        "angL": lambda m, t: angles(m, t, centre=False),
        "angC": lambda m, t: angles(m, t, centre=True),
    }
    return {name: [[row(m, t) for t in range(frames)] for m in range(m_count)]
            for name, row in per_frame.items()}


def _dist(name: str, a, b) -> float:
    """How far apart two terms are: pixels for joints, 1 - cos for bones, the difference for angles."""
    if name == "jnt":
        return float(np.hypot(*(a - b)))
    if name.startswith("bone"):
        return _omc(a, b)
    return abs(a - b)


def _next_curve(name: str, s: Series, person: np.ndarray) -> np.ndarray:
    """Σ over terms defined in frames t and t+1 of their change, / persons present in both frames."""
    m_count, frames = person.shape
    nxt = np.zeros(frames)
    for t in range(frames - 1):
        for m in range(m_count):
            for k in range(17):
                if s[m][t][k] is not None and s[m][t + 1][k] is not None:
                    nxt[t] += _dist(name, s[m][t + 1][k], s[m][t][k])
        nxt[t] /= max(1, sum(person[m, t] and person[m, t + 1] for m in range(m_count)))
    return nxt


def _avr_curve(name: str, s: Series, person: np.ndarray) -> np.ndarray:
    """Σ over defined terms of their deviation from their mean over the video, / persons present."""
    m_count, frames = person.shape
    means = {}
    for m in range(m_count):
        for k in range(17):
            vals = [s[m][t][k] for t in range(frames) if s[m][t][k] is not None]
            if vals:
                mean = sum(vals) / len(vals)
                if name.startswith("bone") and np.hypot(*mean) < 1e-5:
                    continue
                means[m, k] = mean
    avr = np.zeros(frames)
    for t in range(frames):
        for m in range(m_count):
            for k in range(17):
                if s[m][t][k] is not None and (m, k) in means:
                    avr[t] += _dist(name, s[m][t][k], means[m, k])
        avr[t] /= max(1, person[:, t].sum())
    return avr
