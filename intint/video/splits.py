"""A deterministic, class-stratified train/val/test split of the extracted videos (``--split-fractions``).

Why stratified and how: a small dataset split at random can leave a class out of val or test. Each class
is split on its own: its videos sorted by name, shuffled with a generator seeded by the seed and the
class name (so adding a class leaves the others' splits unchanged), then cut into consecutive runs whose
sizes are the fractions of the class size rounded by largest remainder (ties go to the split named
first). The same videos, fractions and seed always give the same split, whatever the order the videos
were extracted in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from intint.pose.names import split_name_problem

DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.7, "val": 0.15, "test": 0.15}


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """The fractions normalised to sum 1: split names that can name files, values >= 0, sum > 0."""
    if not fractions:
        raise ValueError("--split-fractions: give at least one NAME=FRACTION")
    for name, value in fractions.items():
        problem = split_name_problem(name)
        if problem is not None:
            raise ValueError(f"--split-fractions: {problem}")
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"--split-fractions: {name}={value} is not a fraction >= 0")
    total = float(sum(fractions.values()))
    if total <= 0:
        raise ValueError("--split-fractions: the fractions sum to 0")
    return {name: float(value) / total for name, value in fractions.items()}


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """``n`` items shared by ``fractions`` (sum 1): floors, then the leftovers by largest remainder."""
    exact = np.asarray(fractions, dtype=np.float64) * n
    counts = np.floor(exact).astype(np.int64)
    leftover = n - int(counts.sum())
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:leftover]:
        counts[i] += 1
    return [int(c) for c in counts]


def class_rng(seed: int, class_name: str) -> np.random.Generator:
    digest = hashlib.sha256(class_name.encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def stratified_split(videos_by_class: Mapping[str, Sequence[str]], fractions: Mapping[str, float],
                     seed: int = 0) -> dict[str, list[str]]:
    """Split name → sorted frame_dirs, every video in exactly one split (see the module docstring)."""
    shares = check_fractions(fractions)
    out: dict[str, list[str]] = {name: [] for name in shares}
    for class_name in sorted(videos_by_class):
        names = sorted(videos_by_class[class_name])
        order = class_rng(seed, class_name).permutation(len(names))
        start = 0
        for split, count in zip(shares, split_counts(len(names), list(shares.values())), strict=True):
            out[split].extend(names[i] for i in order[start:start + count])
            start += count
    return {split: sorted(names) for split, names in out.items()}
