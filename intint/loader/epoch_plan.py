"""Which samples each reader reads in an epoch, in which order, how many batches it yields, and what a
resumed epoch has left.

Pure arithmetic on the per-shard sample counts, seeds and the loader's layout, with no I/O, so every rank
(and every loader worker) computes the same plan without talking to the others, and the tests can check
it at any scale.

Vocabulary: a *reader* is one stream of batches, i.e. one DataLoader worker process of one rank (or the
main process when ``num_workers == 0``); a *layout* is (ranks, readers per rank, batch size, remainder
rule, shuffle buffer); a sample's *id* is its place in the split, shard by shard in manifest order
(``offset[shard] + position``, counting only the samples the loader reads, e.g. without held-out ones).

* **Epoch order.** Epoch ``e`` shuffles the shard order with a generator seeded by ``(seed, e)`` and
  concatenates the shards' sample ids in that order (``epoch_order``): the same sequence on every rank.
* **Runs.** The sequence is cut into ``R = ranks × readers`` contiguous runs, reader ``j = rank·W + w``
  taking the ``j``-th (``Split``). A run is a few long stretches of few shards (a shard of 2,000 samples on
  100 readers is 100 runs of 20), so a reader reads long ranges, and one shard can feed any number of
  readers: every sample is in exactly one run, for any count of shards, ranks and workers.
* **Equal batches.** Every reader yields the same number ``Q`` of batches, so every rank yields
  ``W·Q``, independent of the epoch (LR schedules count steps up front). The remainder rule
  (``LoaderConfig.remainder``) says what happens to the ``n mod R`` samples an even split leaves:
  ``"repeat"`` (default) splits all ``n`` samples (runs differ by at most one) and a reader's batches take
  every sample of its run, full batches first; only a reader with fewer samples than ``Q`` batches (fewer
  samples than readers) re-reads some of its run, the fewest repeats that give every batch a sample.
  ``"drop"`` gives every reader ``floor(n / R)`` samples and leaves the epoch's last ``n mod R`` out.
  Both counts are in ``Split.repeats`` / ``Split.dropped`` and logged each epoch.
* **Shuffle.** A reader reads its run in order and hands its samples on through a seeded shuffle buffer
  whose output order is a function of the run length alone (``shuffle_order``): what a reader delivered
  after ``c`` samples is known without reading anything. A damaged sample keeps its slot; the batch
  fills it with a copy of a batch-mate, so consumption stays arithmetic.
* **Round robin.** The DataLoader fetches from its workers round-robin, in order, so the rank's batch
  ``i`` is batch ``i // W`` of reader ``i % W``: a fixed interleaving that makes the epoch deterministic.
  After ``k`` batches a rank's readers have each delivered a known number of samples
  (``Split.delivered_after``); a restart resumes each worker from there (``Split.reader_of_slot``).
* **Segments and elastic resume.** A loader's position is the epoch's list of *segments*: the layouts
  it ran under and the batches each rank consumed in each (``Segment``). Resuming under the same layout
  continues the last segment batch for batch. Resuming under another one (ranks, workers, batch size)
  starts a new segment: the samples the earlier segments delivered are replayed from the arithmetic
  (``consumed_mask``), and the rest, still in epoch order, is split over the new readers
  (``remaining_ids``): every sample exactly once per epoch across any number of resumes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

REMAINDERS = ("repeat", "drop")


def num_readers(num_workers: int) -> int:
    """Batch streams per rank: one per DataLoader worker, or the main process itself."""
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    return max(1, num_workers)


def epoch_shard_order(n_shards: int, seed: int, epoch: int) -> np.ndarray:
    """The global shard order of one epoch: a permutation seeded by (seed, epoch) only."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, 0x5A4D])))
    return rng.permutation(n_shards)


def shard_offsets(counts: Sequence[int]) -> np.ndarray:
    """``offsets[s]`` = the id of shard ``s``'s first sample; ``offsets[-1]`` = the split's samples."""
    return np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))]).astype(np.int64)


def epoch_order(counts: Sequence[int], seed: int, epoch: int) -> np.ndarray:
    """Every sample id of the split once, in epoch ``epoch``'s order: shards shuffled, each in tar order."""
    offsets = shard_offsets(counts)
    parts = [np.arange(offsets[s], offsets[s + 1]) for s in epoch_shard_order(len(counts), seed, epoch)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def id_places(ids: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shard, position within the shard's read samples) of each id."""
    shard = np.searchsorted(offsets, ids, side="right") - 1
    return shard, ids - offsets[shard]


def reader_rng(seed: int, epoch: int, segment: int, reader: int, pass_: int) -> np.random.Generator:
    """The Generator of one reader's shuffle in one pass over its run (pass 0 = the epoch proper)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, segment, reader,
                                                                        pass_, 0x5EED])))


def shuffle_order(n: int, bufsize: int, rng: np.random.Generator, limit: int | None = None) -> np.ndarray:
    """The order a shuffle buffer of ``bufsize`` hands on the items ``0..n-1`` it is fed in order (as
    ``webdataset.shuffle``: once full, each incoming item swaps with a random slot; the rest leave in a
    random order at the end). ``limit``: only the first ``limit`` outputs (same draws, so a prefix).

    Item ``i`` always leaves after at most ``bufsize`` later ones were read, so a reader that reads its
    run in order holds at most ``bufsize + 1`` samples; ``bufsize <= 1`` keeps the order.
    """
    limit = n if limit is None else min(limit, n)
    if bufsize <= 1 or n <= 1:
        return np.arange(limit, dtype=np.int64)
    draws = rng.integers(bufsize, size=max(0, n - bufsize)).tolist()
    buf = list(range(min(bufsize, n)))
    out: list[int] = []
    for i in range(bufsize, min(n, bufsize + limit)):
        j = draws[i - bufsize]
        out.append(buf[j])
        buf[j] = i
    if len(out) < limit:
        out.extend(buf[t] for t in rng.permutation(len(buf)).tolist())
    return np.asarray(out[:limit], dtype=np.int64)


@lru_cache(maxsize=64)
def spread_batches(samples: int, batches: int, batch_size: int) -> tuple[int, ...]:
    """``samples`` cut into ``batches`` batches of at most ``batch_size``, full ones first, every batch at
    least one sample (``samples >= batches``)."""
    sizes, left = [], samples
    for i in range(batches):
        size = min(batch_size, left - (batches - 1 - i))
        sizes.append(size)
        left -= size
    if left or (sizes and min(sizes) < 1):
        raise ValueError(f"cannot cut {samples} samples into {batches} batches of at most {batch_size}")
    return tuple(sizes)


@dataclass(frozen=True)
class Layout:
    """What a segment of an epoch is read under: its readers and how they cut and shuffle."""

    world_size: int
    readers: int  # per rank
    batch_size: int
    remainder: str = "repeat"
    shuffle_buffer: int = 0

    def __post_init__(self) -> None:
        for name in ("world_size", "readers", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.remainder not in REMAINDERS:
            raise ValueError(f"remainder must be one of {REMAINDERS}, got {self.remainder!r}")
        if self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {self.shuffle_buffer}")

    @property
    def total_readers(self) -> int:
        return self.world_size * self.readers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Segment:
    """A stretch of an epoch read under one layout: ``batches`` consumed by every rank in it."""

    layout: Layout
    batches: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**self.layout.to_dict(), "batches": self.batches}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Segment:
        names = ("world_size", "readers", "batch_size", "remainder", "shuffle_buffer")
        fields = {k: values[k] for k in names}
        return cls(Layout(**fields), int(values["batches"]))


@dataclass(frozen=True)
class Split:
    """``n`` samples (a sequence in epoch order) split over a layout's readers: runs, batches, counts."""

    layout: Layout
    n: int

    @property
    def per_reader(self) -> int:
        """Samples of the shortest run (drop: of every run)."""
        return self.n // self.layout.total_readers

    @property
    def batches_per_reader(self) -> int:
        longest = -(-self.n // self.layout.total_readers)
        if self.layout.remainder == "drop":
            longest = self.per_reader
        return -(-longest // self.layout.batch_size)

    @property
    def batches_per_epoch(self) -> int:
        """Batches every rank yields (``len(loader)`` for a whole epoch)."""
        return self.layout.readers * self.batches_per_reader

    def bounds(self, reader: int) -> tuple[int, int]:
        """The run of global reader ``reader`` (``rank·W + w``): positions [lo, hi) in the sequence."""
        r = self.layout.total_readers
        if self.layout.remainder == "drop":
            return reader * self.per_reader, (reader + 1) * self.per_reader
        return reader * self.n // r, (reader + 1) * self.n // r

    def run_length(self, reader: int) -> int:
        lo, hi = self.bounds(reader)
        return hi - lo

    def delivered(self, reader: int) -> int:
        """Samples the reader hands on in the segment: its run, plus repeats when its run is shorter than
        its batch count."""
        return max(self.run_length(reader), self.batches_per_reader)

    def batch_sizes(self, reader: int) -> tuple[int, ...]:
        return spread_batches(self.delivered(reader), self.batches_per_reader, self.layout.batch_size)

    def repeat_source(self, reader: int) -> tuple[int, int]:
        """The positions a reader's repeats re-read: its own run, or for an empty run (fewer samples than
        readers) the one sample at position ``reader mod n``."""
        lo, hi = self.bounds(reader)
        return (lo, hi) if hi > lo else (reader % self.n, reader % self.n + 1)

    @property
    def repeats(self) -> int:
        """Samples delivered twice in the segment (repeat rule): one per batch a run has no sample for."""
        r, q = self.layout.total_readers, self.batches_per_reader
        if self.layout.remainder == "drop":
            return 0
        longer = self.n % r  # runs of per_reader + 1 samples; the others have per_reader
        return (r - longer) * max(0, q - self.per_reader) + longer * max(0, q - self.per_reader - 1)

    @property
    def dropped(self) -> int:
        """Samples of the sequence no reader delivers (drop rule)."""
        return self.n - self.layout.total_readers * self.per_reader if self.layout.remainder == "drop" else 0

    def skipped_batches(self, w: int, consumed: int) -> int:
        """How many of reader ``w``'s batches (w of this rank) are among the rank's first ``consumed``."""
        if not 0 <= consumed <= self.batches_per_epoch:
            raise ValueError(f"batches_consumed {consumed} outside [0, {self.batches_per_epoch}]")
        return max(0, -(-(consumed - w) // self.layout.readers))

    def delivered_after(self, reader: int, consumed: int) -> int:
        """Samples global reader ``reader`` handed on in its rank's first ``consumed`` batches."""
        return sum(self.batch_sizes(reader)[:self.skipped_batches(reader % self.layout.readers, consumed)])

    def reader_of_slot(self, slot: int, consumed: int) -> int:
        """The reader DataLoader worker ``slot`` plays when a segment resumes after ``consumed`` batches.

        The DataLoader always starts a pass at worker 0, but the next batch of the original sequence
        belongs to reader ``consumed % W``; rotating the reader ↔ worker assignment makes the resumed
        round-robin reproduce the original order exactly.
        """
        return (slot + consumed) % self.layout.readers


def consumed_mask(n: int, segment: Segment, seed: int, epoch: int, index: int) -> np.ndarray:
    """Which of a segment's ``n`` sequence positions its readers delivered in ``segment.batches`` batches
    per rank (segment ``index`` of the epoch, whose readers' shuffles are seeded by it)."""
    split = Split(segment.layout, n)
    mask = np.zeros(n, dtype=bool)
    if segment.batches == 0:
        return mask
    if segment.batches > split.batches_per_epoch:
        raise ValueError(f"a segment with {segment.batches} batches consumed per rank, but {n} samples on "
                         f"{segment.layout} give {split.batches_per_epoch}")
    for reader in range(segment.layout.total_readers):
        lo, hi = split.bounds(reader)
        done = min(split.delivered_after(reader, segment.batches), hi - lo)
        if done:
            rng = reader_rng(seed, epoch, index, reader, 0)
            mask[lo + shuffle_order(hi - lo, segment.layout.shuffle_buffer, rng, done)] = True
    return mask


def remaining_ids(counts: Sequence[int], seed: int, epoch: int, prior: Sequence[Segment]) -> np.ndarray:
    """The ids no earlier segment of the epoch delivered, in epoch order: what the next segment splits."""
    ids = epoch_order(counts, seed, epoch)
    for index, segment in enumerate(prior):
        ids = ids[~consumed_mask(len(ids), segment, seed, epoch, index)]
    return ids


def eval_reader_shards(n_shards: int, rank: int, world_size: int, reader: int, readers: int) -> list[int]:
    """Evaluation: no shuffle, disjoint shards per rank, then per reader."""
    return list(range(n_shards))[rank::world_size][reader::readers]


def eval_batches(counts: Sequence[int], batch_size: int) -> int:
    """Batches one evaluation reader yields for shards holding ``counts`` samples (last one partial)."""
    return math.ceil(sum(counts) / batch_size)
