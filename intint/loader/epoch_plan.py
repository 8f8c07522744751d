"""Which reader reads which shards, how many batches each yields, and where a resumed epoch starts.

Pure arithmetic on the manifest's per-shard counts (and the readers' seeded shuffle buffer), with no I/O,
so every rank computes the same plan without talking to the others, and the tests can check it
exhaustively.

Vocabulary: a *reader* is one stream of batches, i.e. one DataLoader worker process of one rank (or the
main process when ``num_workers == 0``). Rank ``r`` of ``world`` with ``W`` readers:

* Epoch ``e`` shuffles the global shard list with a generator seeded by ``(seed, e)``, so every rank
  draws the same permutation; rank ``r`` takes ``order[r::world]`` and its reader ``w`` takes
  ``that[w::W]``. Readers never share a shard, so a video is read by exactly one reader per pass.
* Every reader of every rank yields the same **sample quota** ``S``: the sum of the
  ``ceil(n_shards / (world·W))`` largest shard counts, an upper bound on what any reader can be
  dealt in any epoch. It is independent of the epoch, so ``len(loader)`` is too (LR schedules can
  count steps up front). When the shards have equal counts and divide evenly among the readers,
  ``S`` is exactly what each reader holds, so each video is seen exactly once per epoch. Otherwise a
  reader that runs short *tops up*: it re-reads its own shards from the start (re-shuffled, fresh
  augmentation) until it has delivered ``S`` samples.
* A reader passes its videos through a seeded shuffle buffer (``shuffled``) and cuts its ``S`` samples
  into ``Q = ceil(S / B)`` batches (the last one smaller when ``B`` does not divide ``S``). The
  DataLoader fetches from its workers round-robin, in order, so the rank's batch ``i`` is batch
  ``i // W`` of reader ``i % W``: a fixed interleaving, which makes the whole epoch deterministic and a
  resume exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

T = TypeVar("T")


class ShardSplitError(ValueError):
    """Too few shards to give every reader of every rank at least one."""


def num_readers(num_workers: int) -> int:
    """Batch streams per rank: one per DataLoader worker, or the main process itself."""
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    return max(1, num_workers)


def check_enough_shards(n_shards: int, world_size: int, readers: int, split: str = "train") -> None:
    """Fail early, with the numbers, when some reader would get no shard at all.

    An idle reader would either hang DDP (fewer batches on its rank) or need its whole quota from
    re-reads of nothing; rebuilding the shards smaller is the fix.
    """
    if n_shards < world_size * readers:
        raise ShardSplitError(
            f"split {split!r} has {n_shards} shard(s) but {world_size} rank(s) × {readers} loader worker(s) "
            f"= {world_size * readers} readers need at least one each; rebuild with more (smaller) shards "
            f"or use fewer ranks/workers")


def epoch_shard_order(n_shards: int, seed: int, epoch: int) -> np.ndarray:
    """The global shard order of one epoch: a permutation seeded by (seed, epoch) only."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, 0x5A4D])))
    return rng.permutation(n_shards)


def reader_shards(order: Sequence[int] | np.ndarray, rank: int, world_size: int, reader: int,
                  readers: int) -> list[int]:
    """Shard indices of reader ``reader`` of rank ``rank``: split by rank first, then by reader."""
    return [int(i) for i in list(order)[rank::world_size][reader::readers]]


def eval_reader_shards(n_shards: int, rank: int, world_size: int, reader: int, readers: int) -> list[int]:
    """Evaluation: no shuffle, disjoint shards per rank, then per reader."""
    return list(range(n_shards))[rank::world_size][reader::readers]


def sample_quota(counts: Sequence[int], world_size: int, readers: int) -> int:
    """Samples every reader delivers per epoch: the largest total any reader can be dealt.

    A reader holds at most ``ceil(n / (world·W))`` shards, so the sum of that many largest counts
    bounds its share in every epoch's permutation.
    """
    per_reader = math.ceil(len(counts) / (world_size * readers))
    return int(sum(sorted((int(c) for c in counts), reverse=True)[:per_reader]))


@dataclass(frozen=True)
class TrainPlan:
    """The epoch-independent numbers of a training loader on one rank (identical on all ranks)."""

    n_shards: int
    world_size: int
    readers: int
    batch_size: int
    quota: int  # samples per reader per epoch

    @property
    def batches_per_reader(self) -> int:
        return math.ceil(self.quota / self.batch_size)

    @property
    def batches_per_epoch(self) -> int:
        return self.readers * self.batches_per_reader

    def batch_sizes(self) -> list[int]:
        """Sizes of one reader's batches, in order: full ones, then the remainder."""
        q, b = self.batches_per_reader, self.batch_size
        return [b] * (q - 1) + [self.quota - b * (q - 1)] if q else []

    def skipped_batches(self, reader: int, consumed: int) -> int:
        """How many of ``reader``'s batches are among the rank's first ``consumed`` batches."""
        if not 0 <= consumed <= self.batches_per_epoch:
            raise ValueError(f"batches_consumed {consumed} outside [0, {self.batches_per_epoch}]")
        return max(0, -(-(consumed - reader) // self.readers))

    def skipped_samples(self, reader: int, consumed: int) -> int:
        """Samples ``reader`` must drop (before decoding/rendering) to resume after ``consumed`` batches."""
        return sum(self.batch_sizes()[: self.skipped_batches(reader, consumed)])

    def reader_of_slot(self, slot: int, consumed: int) -> int:
        """The reader DataLoader worker ``slot`` plays when an epoch resumes after ``consumed`` batches.

        The DataLoader always starts a pass at worker 0, but the next batch of the original sequence
        belongs to reader ``consumed % W``; rotating the reader ↔ worker assignment makes the resumed
        round-robin reproduce the original order exactly.
        """
        return (slot + consumed) % self.readers


def train_plan(counts: Sequence[int], world_size: int, num_workers: int, batch_size: int,
               split: str = "train") -> TrainPlan:
    """Check the layout and compute the per-reader quota; raises :class:`ShardSplitError` when short."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    readers = num_readers(num_workers)
    check_enough_shards(len(counts), world_size, readers, split)
    return TrainPlan(len(counts), world_size, readers, batch_size, sample_quota(counts, world_size, readers))


def eval_batches(counts: Sequence[int], batch_size: int) -> int:
    """Batches one evaluation reader yields for shards holding ``counts`` samples (last one partial)."""
    return math.ceil(sum(counts) / batch_size)


def shuffled(items: Iterable[T], bufsize: int, rng: np.random.Generator) -> Iterator[T]:
    """A reader's seeded shuffle buffer (as ``webdataset.shuffle``, but with our own Generator).

    Each incoming item swaps with a random slot once the buffer is full; ``bufsize <= 1`` keeps the
    order. The loader shuffles decoded videos, whose arrays are views of the tar reader's 256 KB chunks,
    so a chunk stays in memory while any of its videos waits here: at most ``bufsize`` chunks, a few
    dozen in practice (measured RSS per worker in docs/benchmarks.md).
    """
    if bufsize <= 1:
        yield from items
        return
    buf: list[T] = []
    for item in items:
        if len(buf) < bufsize:
            buf.append(item)
            continue
        j = int(rng.integers(bufsize))
        buf[j], item = item, buf[j]
        yield item
    order = rng.permutation(len(buf))
    for j in order:
        yield buf[j]
