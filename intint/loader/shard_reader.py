"""One loader reader's view of the shard set: checked videos of whole shards or of sample positions,
skipped samples counted.

A *reader* (one DataLoader worker of one rank, ``loader.epoch_plan``) reads through
``shardstream.shard_videos``, which decodes and checks every sample. Evaluation reads whole shards
(``ShardReader.videos``); training reads the positions of its run (``ShardReader.positions``), stretch by
stretch of one shard, with range reads where the shard set has a sample index. A position is a sample's
place among the samples the loader reads in its shard (its Arrow table's rows in order, without the
held-out ones of a hold-out); a training reader gets one entry per position it asked for, ``None`` where
the sample cannot be used, so its plan stays arithmetic.

What cannot be used is counted, not raised: a corrupt sample, the samples a broken tar lost, and (with
``allow_missing_shards``) the samples of a shard that cannot be read. What must stop the loader is
raised: a missing shard without that option, a shard that contradicts the manifest (``ShardMismatch``),
and, when checksums are verified (``LoaderConfig.verifies_checksums``), a shard whose bytes changed
without any sample showing it (``ChecksumMismatch``, the rule in ``shardstream.shard_videos``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa

from intint.loader import holdout
from intint.loader.config import LoaderConfig
from intint.store import reweighted_peaks, shardio
from intint.store.sample_index import SampleIndex, read_index
from intint.store.shardstream import (
    ShardMismatch,
    ShardRef,
    ShardUnavailable,
    Video,
    read_peaks,
    shard_videos,
)

log = logging.getLogger("intint.loader.streams")  # the logger the loader's skip messages always used

__all__ = ["Skips", "ShardReader", "MAX_GAP"]

MAX_GAP = 64  # positions of one shard closer than this are read as one range (the gap read, not decoded)


class Skips:
    """Per-reader tally of skipped samples since the last batch; only the first pass of an epoch counts."""

    def __init__(self) -> None:
        self.pending = 0
        self.counting = True

    def skip(self, n: int, message: str) -> None:
        if self.counting:
            self.pending += n
            log.warning("skipping %d sample(s): %s", n, message)

    def note(self, n: int, message: str) -> None:
        """Log a skip the caller counts itself (a training reader counts the unusable outputs it hands on)."""
        if self.counting:
            log.warning("skipping %d sample(s): %s", n, message)

    def take(self) -> int:
        n, self.pending = self.pending, 0
        return n


class ShardReader:
    """Shards read in order (``videos``) or by position (``positions``), each shard's intensity peaks and
    keys read once per process.

    ``peaks`` is shard index → {key: peak}; the dataset object passes its own dict, so a persistent
    worker reads each shard's Arrow table once for the whole run, not once per epoch (``rows`` and
    ``indexes``, the sample indexes of the shards it reads in parts, likewise).
    """

    def __init__(self, cfg: LoaderConfig, shards: Sequence[ShardRef], num_classes: int, skips: Skips,
                 peaks: dict[int, dict[str, int]],
                 rows: dict[int, tuple[list[str], np.ndarray]] | None = None,
                 indexes: dict[int, SampleIndex] | None = None) -> None:
        self.cfg, self.shards, self.num_classes, self.skips = cfg, list(shards), num_classes, skips
        self.peaks = peaks
        self.rows = {} if rows is None else rows
        self.indexes = {} if indexes is None else indexes  # sample indexes of shards read in parts
        self.unavailable: set[int] = set()
        self.keep = holdout.loader_keep(cfg)  # shard index → the keys this loader reads; None: all

    def _peaks(self, shard: ShardRef) -> dict[str, int] | None:
        if self.cfg.needs_peaks and shard.index not in self.peaks:
            self.peaks[shard.index] = (
                read_peaks(shard, self.cfg.peak_column) if self.cfg.jba_weights is None
                else reweighted_peaks.read_shard_peaks(shard, self.cfg.intensity_mode, self.cfg.jba_weights))
        return self.peaks.get(shard.index)

    def _open(self, shard: ShardRef, keep: set[str] | frozenset[str] | None = None,
              span: tuple[int, int | None] | None = None) -> Iterator[Video]:
        """The shard's checked videos (of ``keep`` only, within rows ``span`` when range reads exist; a
        span to None: to the shard's end)."""
        if shard.index in self.unavailable:
            return
        if keep is None and self.keep is not None:
            keep = self.keep[shard.index]
        on_skip = self.skips.skip if span is None else self.skips.note
        try:
            ranged = self._ranged(shard, span)
            yield from shard_videos(shard, self.num_classes, self._peaks(shard), on_skip,
                                    verify=self.cfg.verifies_checksums, keep=keep, **ranged)
        except ShardUnavailable as exn:
            if not self.cfg.allow_missing_shards:
                raise ShardUnavailable(f"{exn} (allow_missing_shards=True skips unreadable shards)") from exn
            self.unavailable.add(shard.index)
            message = f"{exn}; allow_missing_shards is set"
            if span is None:
                self.skips.skip(max(0, shard.num_samples - exn.delivered), message)
            else:
                self.skips.note(max(0, (span[1] or shard.num_samples) - span[0] - exn.delivered), message)

    def _ranged(self, shard: ShardRef, span: tuple[int, int | None] | None) -> dict[str, object]:
        """``shard_videos``' run arguments for ``span`` (none: the whole shard, streamed and checked)."""
        whole = span is None or (span[0] == 0 and (span[1] or shard.num_samples) >= shard.num_samples)
        if whole:
            return {}
        if shard.indexed and shard.index not in self.indexes:
            self.indexes[shard.index] = read_index(shard)
        return {"start": span[0], "stop": span[1], "index": self.indexes.get(shard.index)}

    def videos(self) -> Iterator[Video]:
        """The checked videos of all this reader's shards, in shard order."""
        for shard in self.shards:
            yield from self._open(shard)

    # ------------------------------------------------------------------------------ by position

    def shard_rows(self, index: int) -> tuple[list[str], np.ndarray]:
        """(keys of the shard's Arrow rows, the rows this loader reads) of shard ``index``, read once."""
        if index not in self.rows:
            shard = self.shards[index]
            try:
                keys = shardio.read_intensity(shard.arrow, ["key"]).column("key").to_pylist()
            except (OSError, KeyError, pa.ArrowException, ValueError) as exn:
                if not self.cfg.allow_missing_shards:
                    raise ShardUnavailable(f"shard {shard.arrow}: cannot read its keys ({type(exn).__name__}"
                                           f": {exn}) (allow_missing_shards=True skips unreadable shards)"
                                           ) from exn
                self.unavailable.add(index)
                self.skips.note(shard.num_samples, f"shard {shard.arrow}: cannot read its keys "
                                f"({type(exn).__name__}: {exn}); allow_missing_shards is set")
                keys = []
            kept = self.keep[index] if self.keep is not None else None
            read = np.arange(len(keys)) if kept is None else np.flatnonzero([k in kept for k in keys])
            self.rows[index] = (keys, read.astype(np.int64))
        return self.rows[index]

    def positions(self, index: int, wanted: np.ndarray) -> Iterator[Video | None]:
        """One entry per position of ``wanted`` (ascending) of shard ``index``: its video, or None when the
        sample could not be used (skips logged here, counted by the caller)."""
        keys, read = self.shard_rows(index)
        shard = self.shards[index]
        beyond = int(np.sum(wanted >= len(read)))
        inside = wanted[:len(wanted) - beyond]
        rows = read[inside]
        expected = [keys[r] for r in rows.tolist()]
        got = 0
        if expected:
            span = (int(rows[0]), int(rows[-1]) + 1 if rows[-1] + 1 < len(keys) else None)
            for video in self._open(shard, set(expected), span):
                while got < len(expected) and expected[got] != video.key:
                    got += 1
                    yield None
                if got == len(expected):
                    raise ShardMismatch(f"shard {shard.tar}: sample {video.key} is not where its intensity "
                                        "table's rows place it; restore the shard or rebuild the set")
                got += 1
                yield video
        if beyond and index not in self.unavailable:
            self.skips.note(beyond, f"shard {shard.tar}: its intensity table lists fewer samples than the "
                                    "manifest's count")
        for _ in range(len(expected) - got + beyond):
            yield None
