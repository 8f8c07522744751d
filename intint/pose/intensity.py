"""Motion-intensity curves: the ten Int&Int definitions and their ensembles, in two modes.

Intensity is a pure function of a whole video's keypoints, so the shard builder computes every
curve once and stores it beside the poses (docs/architecture.md); the loader only reads a column and
places the 48-frame window around its ``peak``. Two modes are offered because they answer different questions:

- ``"reference"`` reproduces the authors' published code bit for bit in its decisions (golden
  vectors in ``tests/data/golden.npz``), bugs included, so their numbers can be reproduced;
- ``"paper"`` implements the definitions as the paper states them, with absent persons and joints
  masked; ``docs/intensity-modes.md`` lists every difference and why.

Ensembles (docs/method.md §2.5). Every component curve is max-normalised, ``n(x) = x / max(1e-8, max x)``.
- reference: J, B, A = ``Σ n(x_k) / 10`` over the group's sub-curves (θ all 1 over ten slots, as the
  authors' samplers do); ``JBA_arithmetic`` = ``Σ n(x_k) / 10`` over all ten (the obvious
  reconstruction; the authors never published it); ``JBA_weighted`` = ``Σ θ_k/Σθ · n(x_k)`` over all
  ten, θ = ``REFERENCE_THETA`` by default (the authors' ``motion_all``).
- paper: J, B, A = mean of the group's normalised sub-curves; ``JBA_arithmetic`` = mean of
  n(J), n(B), n(A); ``JBA_weighted`` = ``Σ w_g n(g)`` with accuracy-derived group weights.

``ensembles`` is the one implementation of these combinations: ``compute`` applies it to one video,
``intint.store.reweighted_peaks`` to a whole shard's stored curves for new JBA weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from intint.pose import intensity_paper, intensity_reference
from intint.pose.skeleton import NUM_JOINTS

SINGLE_DEFINITIONS: tuple[str, ...] = (
    "jnt_next", "jnt_avr", "boneL_next", "boneC_next", "boneL_avr", "boneC_avr",
    "angL_next", "angC_next", "angL_avr", "angC_avr",
)
ENSEMBLES: tuple[str, ...] = ("J", "B", "A", "JBA_arithmetic", "JBA_weighted")
DEFINITIONS: tuple[str, ...] = SINGLE_DEFINITIONS + ENSEMBLES
MODES: tuple[str, ...] = ("reference", "paper")

GROUPS: dict[str, tuple[str, ...]] = {
    "J": ("jnt_next", "jnt_avr"),
    "B": ("boneL_next", "boneC_next", "boneL_avr", "boneC_avr"),
    "A": ("angL_next", "angC_next", "angL_avr", "angC_avr"),
}

# θ of the authors' `motion_all` sampler (docs/method.md §2.5), ≈ HMDB51 split-2 two-pathway accuracies / 10
# for Joint, Bone and Angle. Written in the reference's component order; it is the default for
# JBA_weighted in both modes (paper mode uses the group values 6.928 / 6.869 / 7.026).
REFERENCE_THETA: dict[str, float] = {
    "jnt_next": 6.928, "jnt_avr": 6.928,
    "boneC_next": 6.869, "boneL_next": 6.869, "boneC_avr": 6.869, "boneL_avr": 6.869,
    "angC_next": 7.026, "angL_next": 7.026, "angC_avr": 7.026, "angL_avr": 7.026,
}

# n(x) = x / max(NORM_FLOOR, max x): an all-zero curve stays zero instead of dividing by 0.
NORM_FLOOR = 1e-8


def real_num_person(keypoint: np.ndarray) -> np.ndarray:
    """The reference's per-frame person count ``R[t]`` (highest occupied slot + 1), int64 of length T."""
    return intensity_reference.real_num_person(np.asarray(keypoint))


def weights_from_accuracies(accuracies: Mapping[str, float], mode: str = "reference") -> dict[str, float]:
    """Turn per-definition or per-group accuracies into the normalised JBA_weighted weights of ``mode``.

    The paper weights each definition by its "normalised two-pathway accuracy"; this helper is where a
    user plugs in their own validation accuracies (any common scale: percent, fraction, or the
    reference's accuracy/10 — only ratios matter).

    ``accuracies`` holds either all ten ``SINGLE_DEFINITIONS`` or the three groups ``"J"``, ``"B"``,
    ``"A"`` (non-negative, finite, not all 0).
    - ``mode="reference"``: returns the ten per-definition weights ``θ_k / Σθ`` (a group accuracy is
      given to each of its sub-curves, as the authors' θ does; B and A then weigh twice J's total,
      docs/method.md §2.5).
    - ``mode="paper"``: returns three group weights ``a_g / Σa`` over ``J``, ``B``, ``A`` (a group's
      accuracy is the mean of its definitions' when per-definition values are given).
    """
    if mode not in MODES:
        raise ValueError(f"weights_from_accuracies: mode must be one of {MODES}, got {mode!r}")
    keys = set(accuracies)
    if keys == set(SINGLE_DEFINITIONS):
        per_definition = {d: float(accuracies[d]) for d in SINGLE_DEFINITIONS}
    elif keys == set(GROUPS):
        per_definition = {d: float(accuracies[g]) for g, members in GROUPS.items() for d in members}
    else:
        raise ValueError(
            "weights_from_accuracies: accuracies must have exactly the keys "
            f"{SINGLE_DEFINITIONS} or {tuple(GROUPS)}, got {sorted(keys)}"
        )
    bad = {k: v for k, v in per_definition.items() if not (math.isfinite(v) and v >= 0)}
    if bad:
        raise ValueError(f"weights_from_accuracies: accuracies must be finite and >= 0, got {bad}")
    if mode == "reference":
        values = per_definition
    else:
        values = {g: sum(per_definition[d] for d in members) / len(members) for g, members in GROUPS.items()}
    total = sum(values.values())
    if total <= 0:
        raise ValueError("weights_from_accuracies: accuracies are all 0, so no weighting is defined")
    return {k: v / total for k, v in values.items()}


def peak(curve: np.ndarray) -> int:
    """First index of the maximum (ties → earliest frame, like the reference's ``list.index(max)``)."""
    curve = np.asarray(curve)
    if curve.ndim != 1 or curve.size == 0:
        raise ValueError(f"peak: curve must be 1-D and non-empty, got shape {curve.shape}")
    if np.isnan(curve).any():
        raise ValueError("peak: curve contains NaN, so its maximum is undefined")
    return int(np.argmax(curve))


def _normalised(curves: np.ndarray) -> np.ndarray:
    """Row-wise ``n(x) = x / max(1e-8, max x)`` of a K×T stack, in float64 (curves are >= 0)."""
    curves = curves.astype(np.float64)
    return curves / np.maximum(NORM_FLOOR, curves.max(axis=1, keepdims=True))


# The reference's component order (docs/method.md §2.5): the rows of the stack the ensembles combine,
# and the order of the reference-mode weight vector.
COMPONENT_ORDER: tuple[str, ...] = tuple(REFERENCE_THETA)


def _group_matrix(scale: str) -> np.ndarray:
    """3×10 rows J, B, A over ``COMPONENT_ORDER``: 1/10 per member ("slots": the reference's θ all 1 over
    ten sub-curves) or 1/len(group) per member ("mean": the paper's arithmetic average)."""
    rows = np.zeros((len(GROUPS), len(COMPONENT_ORDER)))
    for i, members in enumerate(GROUPS.values()):
        for d in members:
            rows[i, COMPONENT_ORDER.index(d)] = 1 / 10 if scale == "slots" else 1 / len(members)
    return rows


_REFERENCE_GROUPS = _group_matrix("slots")
_PAPER_GROUPS = _group_matrix("mean")


def ensembles(components: np.ndarray, mode: str, weights: Mapping[str, float],
              normalise: Callable[[np.ndarray], np.ndarray] = _normalised) -> dict[str, np.ndarray]:
    """The five ``ENSEMBLES`` of ``mode`` (float64) from the ten single curves, stacked K×N in
    ``COMPONENT_ORDER``; the one implementation of the ensemble maths (see the module docstring).

    ``weights``: the normalised JBA_weighted weights of ``mode`` (``weights_from_accuracies``).
    ``normalise`` max-normalises every row per video and returns float64: for one video (N = T) the
    row maximum, the default; for several videos' curves concatenated (N = Σ T), a per-video maximum
    (``intint.store.reweighted_peaks`` recomputes JBA_weighted for a whole shard at once).

    - reference: each weight over the ten normalised sub-curves, as the authors' samplers combine them;
    - paper: average within a group, then over the normalised groups.
    """
    norm = normalise(components)
    if mode == "reference":
        rows = np.vstack([_REFERENCE_GROUPS, np.full(len(COMPONENT_ORDER), 1 / 10),
                          [weights[d] for d in COMPONENT_ORDER]])
        return dict(zip(ENSEMBLES, rows @ norm, strict=True))
    groups = _PAPER_GROUPS @ norm
    arithmetic, weighted = np.array([[1 / 3] * 3, [weights[g] for g in GROUPS]]) @ normalise(groups)
    return {**dict(zip(GROUPS, groups, strict=True)), "JBA_arithmetic": arithmetic, "JBA_weighted": weighted}


def _checked(keypoint: np.ndarray, keypoint_score: np.ndarray, who: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes and dtypes, naming the sample and the field in every error."""
    keypoint = np.asarray(keypoint)
    keypoint_score = np.asarray(keypoint_score)
    if keypoint.ndim != 4 or keypoint.shape[2:] != (NUM_JOINTS, 2):
        raise ValueError(f"{who}: field 'keypoint' must be M×T×{NUM_JOINTS}×2, got shape {keypoint.shape}")
    if keypoint_score.shape != keypoint.shape[:3]:
        raise ValueError(
            f"{who}: field 'keypoint_score' must have shape {keypoint.shape[:3]} to match 'keypoint', "
            f"got {keypoint_score.shape}"
        )
    for field, array in (("keypoint", keypoint), ("keypoint_score", keypoint_score)):
        if array.dtype.kind != "f":
            raise TypeError(f"{who}: field {field!r} must be float16/32/64, got dtype {array.dtype}")
    if keypoint.shape[1] == 0:
        raise ValueError(f"{who}: field 'keypoint' has 0 frames; an intensity curve needs at least one")
    return keypoint, keypoint_score


def compute(
    keypoint: np.ndarray,
    keypoint_score: np.ndarray,
    mode: str = "reference",
    weights: Mapping[str, float] | None = None,
    *,
    frame_dir: str | None = None,
) -> dict[str, np.ndarray]:
    """Every curve in ``DEFINITIONS`` for one whole video, float32 of length T each.

    ``keypoint`` is M×T×17×2 (x, y pixels, float16/32/64), ``keypoint_score`` M×T×17; absent
    persons/joints are (0, 0) with score 0. ``weights`` are the accuracies behind ``JBA_weighted``
    (see ``weights_from_accuracies``; default ``REFERENCE_THETA``). ``frame_dir`` only names the
    sample in error messages. Single curves are computed in float32 (the authors' code ran on float32
    pickles; float16 input is widened first), the ensembles in float64.
    """
    who = f"intensity.compute(frame_dir={frame_dir!r})" if frame_dir is not None else "intensity.compute"
    if mode not in MODES:
        raise ValueError(f"{who}: mode must be one of {MODES}, got {mode!r}")
    keypoint, keypoint_score = _checked(keypoint, keypoint_score, who)
    try:
        normalised_weights = weights_from_accuracies(REFERENCE_THETA if weights is None else weights, mode)
    except ValueError as err:
        raise ValueError(f"{who}: field 'weights': {err}") from None
    if mode == "reference":
        single = intensity_reference.curves(keypoint.astype(np.float32))
    else:
        single = intensity_paper.curves(keypoint, keypoint_score)
    merged = {**single, **ensembles(np.stack([single[d] for d in COMPONENT_ORDER]), mode, normalised_weights)}
    return {name: np.ascontiguousarray(merged[name], dtype=np.float32) for name in DEFINITIONS}
