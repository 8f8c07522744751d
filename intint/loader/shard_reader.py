"""One loader reader's view of the shard set: its shards' checked videos, skipped samples counted.

A *reader* (one DataLoader worker of one rank, ``loader.epoch_plan``) reads its shards one after the
other through ``shardstream.shard_videos``, which decodes and checks every sample. What cannot be used
is counted here, not raised: a corrupt sample, the samples a broken tar lost, and (with
``allow_missing_shards``) the samples of a shard that cannot be read. What must stop the loader is
raised: a missing shard without that option, a shard that contradicts the manifest (``ShardMismatch``),
and, when checksums are verified (``LoaderConfig.verifies_checksums``), a shard whose bytes changed
without any sample showing it (``ChecksumMismatch``, the rule in ``shardstream.shard_videos``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from intint.loader import holdout
from intint.loader.config import LoaderConfig
from intint.store import reweighted_peaks
from intint.store.shardstream import ShardRef, ShardUnavailable, Video, read_peaks, shard_videos

log = logging.getLogger("intint.loader.streams")  # the logger the loader's skip messages always used

__all__ = ["Skips", "ShardReader"]


class Skips:
    """Per-reader tally of skipped samples since the last batch; only the first pass of an epoch counts."""

    def __init__(self) -> None:
        self.pending = 0
        self.counting = True

    def skip(self, n: int, message: str) -> None:
        if self.counting:
            self.pending += n
            log.warning("skipping %d sample(s): %s", n, message)

    def take(self) -> int:
        n, self.pending = self.pending, 0
        return n


class ShardReader:
    """One reader's shards, read in order: intensity peaks once per shard, then its checked videos.

    ``peaks`` is shard index → {key: peak}; the dataset object passes its own dict, so a persistent
    worker reads each shard's Arrow table once for the whole run, not once per epoch.
    """

    def __init__(self, cfg: LoaderConfig, shards: list[ShardRef], num_classes: int, skips: Skips,
                 peaks: dict[int, dict[str, int]]) -> None:
        self.cfg, self.shards, self.num_classes, self.skips = cfg, shards, num_classes, skips
        self.peaks = peaks
        self.unavailable: set[int] = set()
        self.keep = holdout.loader_keep(cfg)  # shard index → the keys this loader reads; None: all

    def _peaks(self, shard: ShardRef) -> dict[str, int] | None:
        if self.cfg.needs_peaks and shard.index not in self.peaks:
            self.peaks[shard.index] = (
                read_peaks(shard, self.cfg.peak_column) if self.cfg.jba_weights is None
                else reweighted_peaks.read_shard_peaks(shard, self.cfg.intensity_mode, self.cfg.jba_weights))
        return self.peaks.get(shard.index)

    def _open(self, shard: ShardRef) -> Iterator[Video]:
        if shard.index in self.unavailable:
            return
        try:
            yield from shard_videos(shard, self.num_classes, self._peaks(shard), self.skips.skip,
                                    verify=self.cfg.verifies_checksums,
                                    keep=None if self.keep is None else self.keep[shard.index])
        except ShardUnavailable as exn:
            if not self.cfg.allow_missing_shards:
                raise ShardUnavailable(f"{exn} (allow_missing_shards=True skips unreadable shards)") from exn
            self.unavailable.add(shard.index)
            self.skips.skip(max(0, shard.num_samples - exn.delivered), f"{exn}; allow_missing_shards is set")

    def videos(self) -> Iterator[Video]:
        """The checked videos of all this reader's shards, in shard order."""
        for shard in self.shards:
            yield from self._open(shard)
