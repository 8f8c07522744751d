"""A validation set held out of a training split: which videos, and the loader's view of it.

FineGYM and HMDB51 have no validation split apart from the one they are tested on, and choosing the
best epoch on the test split reports an optimistic number. With `data.val_fraction = F` a run holds a
class-stratified share F of its training videos out: the training loader skips them, the validation
loader reads only them.

`heldout_keys` is the selection, a pure function of (keys, labels, fraction, seed): within each class
the videos are ordered by a seeded hash of their key and the first `round(F × n)` are held out (at least
one of a class with two or more videos, and never the class's last one). It depends on neither the
order of its input nor the shard layout, so every run and every rank holds out the same videos, and a
video's membership changes only when its own class changes. The labels come from the shards' Arrow
intensity tables (`key` and `label` columns), which are small beside the tars and are read once per
process (`loader_keep`, `counts`); the loader drops the other samples by key before decoding them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from intint.store import shardio

if TYPE_CHECKING:
    from intint.loader.config import LoaderConfig
    from intint.store.shardstream import ShardRef

__all__ = ["Holdout", "heldout_keys", "class_quota", "shard_index", "kept_keys", "loader_keep", "counts"]

Part = Literal["train", "val"]


@dataclass(frozen=True)
class Holdout:
    """Which part of a split a loader reads: "train" = the split minus the held-out videos, "val" = them."""

    fraction: float
    seed: int = 0
    part: Part = "train"

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise ValueError(f"Holdout.fraction must be in (0, 1), got {self.fraction}")
        if self.part not in ("train", "val"):
            raise ValueError(f"Holdout.part must be 'train' or 'val', got {self.part!r}")


def class_quota(count: int, fraction: float) -> int:
    """Videos held out of a class of `count`: round(fraction × count), at least 1 when the class has two
    or more, and always leaving one to train on."""
    if count < 2:
        return 0
    return min(max(1, math.floor(fraction * count + 0.5)), count - 1)


def _draw(seed: int, key: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{key}".encode()).digest()


def heldout_keys(keys: Sequence[str], labels: Sequence[int], fraction: float, seed: int) -> frozenset[str]:
    """The keys held out for validation: per class, the `class_quota` keys first in seeded-hash order."""
    if len(keys) != len(labels):
        raise ValueError(f"heldout_keys: {len(keys)} keys but {len(labels)} labels")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"heldout_keys: fraction must be in (0, 1), got {fraction}")
    if len(set(keys)) != len(keys):
        raise ValueError("heldout_keys: a key appears twice; the hold-out needs one label per video")
    by_class: dict[int, list[str]] = {}
    for key, label in zip(keys, labels, strict=True):
        by_class.setdefault(int(label), []).append(key)
    chosen: list[str] = []
    for members in by_class.values():
        members.sort(key=lambda k: (_draw(seed, k), k))
        chosen.extend(members[:class_quota(len(members), fraction)])
    return frozenset(chosen)


@lru_cache(maxsize=8)
def _read_index(arrow_urls: tuple[str, ...]) -> tuple[tuple[tuple[str, ...], tuple[int, ...]], ...]:
    """(keys, labels) of each intensity table, in order; cached per process (tables do not change)."""
    out = []
    for url in arrow_urls:
        try:
            table = shardio.read_intensity(url, ["key", "label"])
        except (OSError, KeyError, ValueError) as exn:
            raise ValueError(f"{url}: cannot read the video keys and labels the validation hold-out is drawn "
                             f"from ({type(exn).__name__}: {exn})") from exn
        out.append((tuple(table.column("key").to_pylist()), tuple(table.column("label").to_pylist())))
    return tuple(out)


def shard_index(shards: Sequence[ShardRef]) -> dict[int, tuple[tuple[str, ...], tuple[int, ...]]]:
    """Shard index → (keys, labels) of its videos, from the shards' intensity tables."""
    tables = _read_index(tuple(s.arrow for s in shards))
    return {s.index: table for s, table in zip(shards, tables, strict=True)}


def kept_keys(holdout: Holdout | None, shards: Sequence[ShardRef]) -> dict[int, frozenset[str]] | None:
    """Shard index → the keys of that shard a loader of `holdout.part` reads; None without a hold-out.

    The selection is drawn over the whole split (all `shards`), never over one rank's share.
    """
    if holdout is None:
        return None
    index = shard_index(shards)
    keys = [k for shard_keys, _ in index.values() for k in shard_keys]
    labels = [label for _, shard_labels in index.values() for label in shard_labels]
    held = heldout_keys(keys, labels, holdout.fraction, holdout.seed)
    if holdout.part == "val":
        return {i: frozenset(k for k in shard_keys if k in held) for i, (shard_keys, _) in index.items()}
    return {i: frozenset(k for k in shard_keys if k not in held) for i, (shard_keys, _) in index.items()}


@lru_cache(maxsize=8)
def _split_keep(shards_url: str, split: str, holdout: Holdout) -> dict[int, frozenset[str]] | None:
    from intint.store.shardstream import shard_refs

    return kept_keys(holdout, shard_refs(shards_url, split))


def loader_keep(cfg: LoaderConfig) -> dict[int, frozenset[str]] | None:
    """`kept_keys` of a loader's split and hold-out, computed once per process; None without a hold-out."""
    return None if cfg.holdout is None else _split_keep(cfg.shards, cfg.split, cfg.holdout)


def counts(cfg: LoaderConfig, shards: Sequence[ShardRef]) -> list[int]:
    """The videos a loader reads from each of `shards`: the manifest's counts, or its hold-out's keys."""
    keep = loader_keep(cfg)
    return [s.num_samples if keep is None else len(keep[s.index]) for s in shards]
