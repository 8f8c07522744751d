"""One training reader's samples of one epoch segment, in its shuffled order: its run read in order,
handed on through the plan's shuffle, cut into its batches, unusable samples replaced.

The plan (``loader.epoch_plan``) gives the reader a run of sample ids, an output order (``shuffle_order``)
and its batch sizes. ``RunReader`` reads the run's positions shard stretch by shard stretch
(``ShardReader.positions``: range reads where the set has a sample index), holds each sample until its
turn (at most ``shuffle_buffer + 1``), and yields one entry per output: the epoch proper first (pass 0),
then, for a run shorter than its batch count, repeats from re-shuffled passes (``#repeat<p>`` in the
augmentation key). A sample that cannot be used keeps its slot, so what a reader delivered after ``c``
outputs stays arithmetic (elastic resume); ``batches`` fills it with a copy of a batch-mate (``#fill``),
or, in a batch without any usable sample, with the first usable samples of its run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from intint.loader import epoch_plan
from intint.loader.shard_reader import MAX_GAP, ShardReader
from intint.store.shardstream import Video

__all__ = ["Output", "RunReader"]


@dataclass
class Output:
    """One output slot of a reader: the video (None: unusable), its augmentation key, whether it counts
    as a skip (pass 0 only)."""

    video: Video | None
    rng_key: str
    counted: bool


def _stretches(ids: np.ndarray, offsets: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(shard, positions) of consecutive ids of one shard whose gaps are under ``MAX_GAP``, in order."""
    if not len(ids):
        return
    shard, pos = epoch_plan.id_places(ids, offsets)
    breaks = np.flatnonzero((shard[1:] != shard[:-1]) | (np.diff(pos) > MAX_GAP) | (np.diff(pos) < 0)) + 1
    for part in np.split(np.arange(len(ids)), breaks):
        yield int(shard[part[0]]), pos[part]


@dataclass
class RunReader:
    """The outputs of global reader ``reader`` in segment ``segment`` of ``epoch`` (``ids``: the
    segment's sequence, ``split`` its plan)."""

    source: ShardReader
    offsets: np.ndarray
    ids: np.ndarray
    split: epoch_plan.Split
    reader: int
    seed: int
    epoch: int
    segment: int

    def _read(self, ids: np.ndarray) -> Iterator[tuple[int, Video | None]]:
        """(id, video or None) of ``ids`` (in the run's read order)."""
        for shard, positions in _stretches(ids, self.offsets):
            base = int(self.offsets[shard])
            for pos, video in zip(positions.tolist(), self.source.positions(shard, positions), strict=True):
                yield base + pos, video

    def _ordered(self, run: np.ndarray, order: np.ndarray) -> Iterator[Video | None]:
        """The run's samples ``run[order]``, read in run order, held until their turn."""
        stream = self._read(run[np.sort(order)])
        held: dict[int, Video | None] = {}
        for want in run[order].tolist():
            while want not in held:
                got, video = next(stream)
                held[got] = video
            yield held.pop(want)
        stream.close()

    def _pass(self, lo: int, hi: int, pass_: int, first: int, last: int) -> Iterator[Video | None]:
        """Outputs [first, last) of one pass over the sequence's positions [lo, hi)."""
        rng = epoch_plan.reader_rng(self.seed, self.epoch, self.segment, self.reader, pass_)
        order = epoch_plan.shuffle_order(hi - lo, self.split.layout.shuffle_buffer, rng, last)[first:]
        yield from self._ordered(self.ids[lo:hi], order)

    def outputs(self, start: int) -> Iterator[Output]:
        """Every output of the reader from output ``start`` on: its run, then its repeats."""
        lo, hi = self.split.bounds(self.reader)
        total = self.split.delivered(self.reader)
        if start < hi - lo:
            for video in self._pass(lo, hi, 0, start, hi - lo):
                yield Output(video, video.key if video is not None else "", True)
        rlo, rhi = self.split.repeat_source(self.reader) if total > hi - lo else (lo, hi)
        self.source.skips.counting = False  # a repeat's damage was logged (and counted) in pass 0
        done, pass_ = hi - lo, 1
        while done < total:
            first, last = max(0, start - done), min(rhi - rlo, total - done)
            if first < last:
                for video in self._pass(rlo, rhi, pass_, first, last):
                    yield Output(video, f"{video.key}#repeat{pass_}" if video is not None else "", False)
            done, pass_ = done + last, pass_ + 1

    def _usable(self, size: int) -> list[Video]:
        """The first ``size`` usable samples of the reader's run (or repeat source), in read order."""
        lo, hi = self.split.repeat_source(self.reader)
        found, counting = [], self.source.skips.counting
        self.source.skips.counting = False  # its damage was logged when the outputs were read
        for _, video in self._read(self.ids[lo:hi]):
            if video is not None:
                found.append(video)
                if len(found) == size:
                    break
        self.source.skips.counting = counting
        if not found:
            shards = sorted({s for s, _ in _stretches(self.ids[lo:hi], self.offsets)})
            raise RuntimeError(f"loader reader {self.reader} of epoch {self.epoch}: no readable sample in "
                               f"its run of {hi - lo} sample(s) (shards {shards}); cannot fill its batches")
        return found

    def batches(self, sizes: tuple[int, ...], start: int) -> Iterator[tuple[list[Video], list[str], int]]:
        """(videos, augmentation keys, skipped) of each batch of ``sizes``, the reader's outputs from
        ``start`` on; an unusable output becomes a copy of a batch-mate (or of the run's first usable)."""
        outputs = self.outputs(start)
        try:
            for size in sizes:
                chunk = [next(outputs) for _ in range(size)]
                good = [(o.video, o.rng_key) for o in chunk if o.video is not None]
                skipped = sum(1 for o in chunk if o.video is None and o.counted)
                if not good:
                    good = [(v, f"{v.key}#reserve") for v in self._usable(size)]
                videos, keys, fill = [], [], 0
                for o in chunk:
                    if o.video is not None:
                        videos.append(o.video)
                        keys.append(o.rng_key)
                    else:
                        video, key = good[fill % len(good)]
                        videos.append(video)
                        keys.append(f"{key}#fill{fill}")
                        fill += 1
                yield videos, keys, skipped
        finally:
            outputs.close()
