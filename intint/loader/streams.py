"""The streaming two-pathway loaders: shard set → batches of both pathways' inputs (docs/architecture.md).

Layout: ``train_loader`` / ``eval_loader`` wrap a torch ``DataLoader(batch_size=None)`` over an
``IterableDataset`` whose every item is a *whole batch*, assembled inside the worker process. Each
worker reads its share of the shards (``intint.store.shardstream``), decodes each video once, cuts both
pathways' clips from it (``loader.clip_maker``) and either renders the heatmaps itself
(``heatmaps_on="workers"``) or ships the keypoint clips for ``loader.device.to_device`` to render on the
training device (``heatmaps_on="device"``). How a batch crosses to the main process, and why that way:
``loader.batch_transport``; the recycled shared-memory buffers of training heatmaps: ``loader.shared_ring``.

Training order is deterministic (``loader.epoch_plan``): the epoch's sample order (shards shuffled by
(seed, epoch)) is cut into one contiguous run per worker of every rank, each worker reads its run
(``loader.run_reader``) through a shuffle buffer seeded by (seed, epoch, segment, reader) and yields the
plan's batches, and the DataLoader collects from workers round-robin. The loader's state is the epoch's
segments (layouts and batches consumed in each); a resumed epoch makes each worker skip the samples of
its consumed batches *unread* and yield exactly the batches not yet seen, and a state from another layout
(ranks, workers, batch size) has the epoch's remaining samples split over this loader's readers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from intint.loader import epoch_plan, holdout
from intint.loader.batch_transport import BatchBuilder, log_truncated, unpack
from intint.loader.clip_maker import ClipMaker
from intint.loader.config import LoaderConfig, LoaderState
from intint.loader.process_seeds import init_worker
from intint.loader.run_reader import RunReader
from intint.loader.shard_reader import ShardReader, Skips
from intint.loader.shared_ring import Ledger, RingBuffer, WorkerBuffers
from intint.loader.worker_faults import LoaderWorkerDied, received
from intint.store import shardio
from intint.store.shardstream import ShardRef, shard_refs

log = logging.getLogger(__name__)

__all__ = ["SkipCounter", "TrainLoader", "EvalLoader", "LoaderWorkerDied", "train_loader", "eval_loader",
           "ring_slots"]


@dataclass
class SkipCounter:
    """Corrupt or lost samples the loader skipped, as reported by the batches that passed through.

    ``total`` over the loader's life, ``by_epoch`` per training epoch (eval loaders use epoch 0).
    Each worker also logs every skip with its key and shard (logger ``intint.loader.streams``).
    """

    total: int = 0
    by_epoch: dict[int, int] = field(default_factory=dict)

    def add(self, n: int, epoch: int = 0) -> None:
        if n:
            self.total += n
            self.by_epoch[epoch] = self.by_epoch.get(epoch, 0) + n


# ------------------------------------------------------------------------------------ worker side


def _identity(batch: dict[str, Any]) -> dict[str, Any]:
    return batch


@dataclass
class _Layout:
    """What a dataset object needs to know in a worker process (picklable)."""

    cfg: LoaderConfig
    shards: list[ShardRef]
    num_classes: int
    rank: int
    world_size: int


class _TrainStream(IterableDataset):
    """Yields this rank's training batches of one epoch segment; each worker process plays one reader."""

    def __init__(self, layout: _Layout, counts: list[int], plan: epoch_plan.Layout,
                 shared_state: torch.Tensor, pool_flags: torch.Tensor | None) -> None:
        super().__init__()
        self.layout, self.counts, self.plan = layout, counts, plan
        self.shared_state, self.pool_flags = shared_state, pool_flags
        self.history: tuple[int, tuple[epoch_plan.Segment, ...]] = (-1, ())  # (epoch, its earlier segments)
        self.peaks: dict[int, dict[str, int]] = {}  # per worker process (each has its own copy)
        self.rows: dict[int, tuple[list[str], np.ndarray]] = {}  # per worker: each shard's keys, rows read
        self.indexes: dict[int, Any] = {}  # per worker: sample indexes (shard_reader)
        self.arena: dict[int, RingBuffer] = {}  # this worker's recycled heatmap buffers (shared_ring)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        slot = info.id if info is not None else 0
        epoch, consumed, generation = (int(v) for v in self.shared_state.tolist())
        lay, cfg = self.layout, self.layout.cfg
        prior = self.history[1] if self.history[0] == epoch else ()
        ids, split = segment_plan(self.counts, cfg.seed, epoch, prior, self.plan)
        w = split.reader_of_slot(slot, consumed)
        reader = lay.rank * self.plan.readers + w
        done = split.skipped_batches(w, consumed)
        sizes = split.batch_sizes(reader)[done:]
        if not sizes:
            return
        buffers = (None if self.pool_flags is None
                   else WorkerBuffers(self.pool_flags, slot, generation, self.arena))
        skips = Skips()
        source = ShardReader(cfg, lay.shards, lay.num_classes, skips, self.peaks, self.rows, self.indexes)
        run = RunReader(source, epoch_plan.shard_offsets(self.counts), ids, split, reader, cfg.seed, epoch,
                        len(prior))
        maker = ClipMaker(cfg.active_pathways, cfg.clip_len, cfg.intensity_definition, cfg.jitter,
                          cfg.pipeline, cfg.max_persons, cfg.seed)
        batches = run.batches(sizes, split.delivered_after(reader, consumed))
        try:
            for videos, keys, skipped in batches:
                builder = BatchBuilder(cfg, len(videos), None, False, buffers)
                builder.add_batch(videos, maker.train_batch(videos, epoch, keys))
                yield builder.finish(skipped)
        finally:
            batches.close()


def segment_plan(counts: list[int], seed: int, epoch: int, prior: tuple[epoch_plan.Segment, ...],
                 layout: epoch_plan.Layout) -> tuple[np.ndarray, epoch_plan.Split]:
    """The sample ids a segment after ``prior`` splits (epoch order) and their split over ``layout``."""
    ids = epoch_plan.remaining_ids(counts, seed, epoch, prior) if prior else epoch_plan.epoch_order(
        counts, seed, epoch)
    return ids, epoch_plan.Split(layout, len(ids))


class _EvalStream(IterableDataset):
    """Yields this rank's evaluation batches: its shards in order, each video once, test views."""

    def __init__(self, layout: _Layout, readers: int, num_clips: int, flip_double: bool) -> None:
        super().__init__()
        self.layout, self.readers, self.num_clips, self.flip_double = layout, readers, num_clips, flip_double
        self.peaks: dict[int, dict[str, int]] = {}  # per worker process (each has its own copy)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        reader = info.id if info is not None else 0
        lay, cfg = self.layout, self.layout.cfg
        indices = epoch_plan.eval_reader_shards(len(lay.shards), lay.rank, lay.world_size, reader,
                                                self.readers)
        mine = [lay.shards[i] for i in indices]
        skips = Skips()
        source = ShardReader(cfg, mine, lay.num_classes, skips, self.peaks)
        maker = ClipMaker(cfg.active_pathways, cfg.clip_len, cfg.intensity_definition, 0, cfg.pipeline,
                          cfg.max_persons, cfg.seed)
        builder = BatchBuilder(cfg, cfg.batch_size, self.num_clips, self.flip_double)
        full = None  # a full batch, held until a next video shows it is not the last (skips after it)
        for video in source.videos():
            if full is not None:
                yield full.finish(skips.take())
                full = None
            builder.add(video, maker.test(video, self.num_clips))
            if len(builder.keys) == cfg.batch_size:
                full, builder = builder, BatchBuilder(cfg, cfg.batch_size, self.num_clips, self.flip_double)
        last = full if full is not None else builder if builder.keys else None
        if last is not None:
            yield last.finish(skips.take())
        elif skips.pending:  # no video to carry them: a wire with skips only (EvalLoader passes them on)
            yield {"key": [], "skipped": skips.take(), "truncated": 0}


# ------------------------------------------------------------------------------------ main process


def ring_slots(cfg: LoaderConfig) -> int:
    """Recycled heatmap buffers per loader worker (``heatmaps_on="workers"``): a worker's prefetched
    batches, the one it builds, two the training loop may still hold, and one spare. Each is a whole
    batch (164 MB for 2 pathways × 16 clips × 17×48×56×56 float16), paged in on first use."""
    return cfg.prefetch_factor + 4


def _layout(cfg: LoaderConfig, rank: int, world_size: int) -> _Layout:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    manifest = shardio.read_manifest(cfg.shards)
    if cfg.needs_peaks:
        modes, defs = manifest.intensity.modes, manifest.intensity.definitions
        if cfg.intensity_mode not in modes or cfg.intensity_definition not in defs:
            raise ValueError(f"shard set {cfg.shards!r} has intensity modes {modes} and definitions {defs}; "
                             f"it has no column {cfg.peak_column!r}")
    return _Layout(cfg, shard_refs(cfg.shards, cfg.split, manifest), manifest.num_classes, rank, world_size)


def _dataloader(dataset: IterableDataset, cfg: LoaderConfig, num_workers: int) -> DataLoader:
    workers = num_workers > 0
    return DataLoader(dataset, batch_size=None, num_workers=num_workers, collate_fn=_identity,
                      pin_memory=cfg.pin_memory, prefetch_factor=cfg.prefetch_factor if workers else None,
                      persistent_workers=cfg.persistent_workers and workers, worker_init_fn=init_worker)


class TrainLoader:
    """This rank's training batches; ``len`` is the batches of a whole epoch, the same on every rank.

    Epochs: ``set_epoch(e)`` moves to epoch ``e`` (and restarts it) unless the loader already is in
    epoch ``e``, which keeps a restored mid-epoch position; iterating after an epoch was fully
    consumed starts the next one. So both ``for e in ...: loader.set_epoch(e); for b in loader`` and a
    bare ``for b in loader`` per epoch work, before and after ``load_state_dict``. A state saved under
    another layout (ranks, workers, batch size) continues its epoch with the samples not yet delivered,
    split over this loader's readers (``remaining_batches`` of them in this epoch).
    """

    def __init__(self, cfg: LoaderConfig, rank: int, world_size: int) -> None:
        self.cfg = cfg
        self.layout = _layout(cfg, rank, world_size)
        self.counts = holdout.counts(cfg, self.layout.shards)  # a validation hold-out reads fewer
        self.plan = epoch_plan.Layout(world_size, epoch_plan.num_readers(cfg.num_workers), cfg.batch_size,
                                      cfg.remainder, cfg.shuffle_buffer)
        self.full = epoch_plan.Split(self.plan, sum(self.counts))  # a whole epoch under this layout
        self.state = self._fresh(0)
        self._split = self.full  # the current segment's
        self.skips, self.truncated = SkipCounter(), SkipCounter()  # truncated: persons a cap left out
        self._generation = 0
        self.recycled_batches = 0  # batches delivered in recycled worker buffers (shared_ring)
        # (epoch, batches consumed, generation = passes started), read by each worker when its pass starts
        # (persistent workers hold a copy of the dataset from their first pass: attributes would not reach).
        self._shared_state = torch.zeros(3, dtype=torch.int64).share_memory_()
        # Heatmap buffers recycled between worker and main process (shared_ring), ring_slots per worker
        pooled = cfg.heatmaps_on == "workers" and cfg.num_workers > 0
        self._ledger = Ledger(cfg.num_workers, ring_slots(cfg)) if pooled else None
        self._stream = _TrainStream(self.layout, self.counts, self.plan, self._shared_state,
                                    None if self._ledger is None else self._ledger.flags)
        self._loader = _dataloader(self._stream, cfg, cfg.num_workers)

    def __len__(self) -> int:
        return self.full.batches_per_epoch

    @property
    def epoch(self) -> int:
        return self.state.epoch

    @property
    def remaining_batches(self) -> int:
        """Batches this rank still yields in the current epoch."""
        return self._split.batches_per_epoch - self.state.batches_consumed

    def _fresh(self, epoch: int) -> LoaderState:
        return LoaderState(epoch, 0, self.cfg.seed, self.full.n, self.plan)

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch != self.state.epoch:
            self.state, self._split = self._fresh(epoch), self.full

    def state_dict(self) -> dict[str, Any]:
        return self.state.to_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` (any layout's ``state_dict``) stands: the same layout batch for batch,
        another one with the epoch's samples not yet delivered."""
        restored = LoaderState.from_dict(state)
        if restored.layout is None:  # the old format, at an epoch's start
            self.state, self._split = self._fresh(restored.epoch), self.full
            return
        if restored.seed != self.cfg.seed or restored.samples != self.full.n:
            raise ValueError(f"loader state of seed {restored.seed} over {restored.samples} samples, but "
                             f"this loader has seed {self.cfg.seed} and {self.full.n} samples (another shard "
                             "set, split, hold-out or seed?)")
        prior, consumed = restored.prior, restored.batches_consumed
        if restored.layout != self.plan:
            prior = (*prior, epoch_plan.Segment(restored.layout, consumed)) if consumed else prior
            consumed = 0
        _, split = segment_plan(self.counts, self.cfg.seed, restored.epoch, prior, self.plan)
        if consumed > split.batches_per_epoch:
            raise ValueError(f"loader state has {consumed} batches consumed, but this epoch segment has "
                             f"{split.batches_per_epoch}")
        self.state = LoaderState(restored.epoch, consumed, self.cfg.seed, self.full.n, self.plan, prior)
        self._split = split
        if self._stream.history != (restored.epoch, prior):
            self._stream.history = (restored.epoch, prior)
            self._loader = _dataloader(self._stream, self.cfg, self.cfg.num_workers)  # workers see it

    def _log_plan(self, epoch: int) -> None:
        split = self._split
        if self.layout.rank == 0:
            log.info("epoch %d: %d samples on %d ranks x %d readers, %d batches per rank; %d repeated, "
                     "%d dropped (remainder=%r)", epoch, split.n, self.plan.world_size, self.plan.readers,
                     split.batches_per_epoch, split.repeats, split.dropped, self.plan.remainder)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.state.batches_consumed >= self._split.batches_per_epoch:
            self.state, self._split = self._fresh(self.state.epoch + 1), self.full
        epoch, start = self.state.epoch, self.state.batches_consumed
        if start == 0:
            self._log_plan(epoch)
        self._generation += 1
        self._shared_state[0], self._shared_state[1], self._shared_state[2] = epoch, start, self._generation
        wires = iter(self._loader)
        if self._ledger is not None:
            self._ledger.recover(self._generation)
        for wire in received(wires, f"rank {self.layout.rank} training loader, epoch {epoch}"):
            if self._ledger is not None:
                self._ledger.collect()
                if wire.get("pool") is not None:
                    self._ledger.lend(wire["pool"], wire["heatmaps"])
                    self.recycled_batches += 1
            self.state.batches_consumed += 1
            self.skips.add(wire["skipped"], epoch)
            self.truncated.add(wire["truncated"], epoch)
            yield unpack(wire, self.cfg.pin_memory)
        log_truncated(self.truncated.by_epoch.get(epoch, 0), self.cfg.max_persons, f"epoch {epoch}")
        if self.state.batches_consumed != self._split.batches_per_epoch:
            got = self.state.batches_consumed - start
            raise RuntimeError(f"rank {self.layout.rank}: epoch {epoch} yielded {got} batches after {start}, "
                               f"the plan has {self._split.batches_per_epoch}; ranks would fall out of step")


class EvalLoader:
    """This rank's evaluation batches: each video of its shards once, in a fixed order.

    ``len`` counts the batches when no sample is corrupt (skipped samples can only make it fewer).
    """

    def __init__(self, cfg: LoaderConfig, rank: int, world_size: int, num_clips: int,
                 flip_double: bool) -> None:
        if num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {num_clips}")
        self.cfg, self.num_clips, self.flip_double = cfg, num_clips, flip_double
        self.layout = _layout(cfg, rank, world_size)
        mine = list(range(len(self.layout.shards)))[rank::world_size]
        if not mine:
            log.warning("eval split %r: rank %d of %d gets no shard (%d shards)", cfg.split, rank, world_size,
                        len(self.layout.shards))
        self.readers = min(epoch_plan.num_readers(cfg.num_workers), max(1, len(mine)))
        counts = holdout.counts(cfg, [self.layout.shards[i] for i in mine])
        self._len = sum(epoch_plan.eval_batches(counts[w::self.readers], cfg.batch_size)
                        for w in range(self.readers))
        self.skips, self.truncated = SkipCounter(), SkipCounter()  # truncated: persons a cap left out
        workers = min(cfg.num_workers, self.readers)
        stream = _EvalStream(self.layout, self.readers, num_clips, flip_double)
        self._loader = _dataloader(stream, cfg, workers)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[dict[str, Any]]:
        before = self.truncated.total
        carried = 0  # skips of a worker that had no video left to put them on: they ride the next batch
        for wire in received(iter(self._loader), f"rank {self.layout.rank} eval loader"):
            self.skips.add(wire["skipped"])
            if not wire["key"]:
                carried += wire["skipped"]
                continue
            self.truncated.add(wire["truncated"])
            batch = unpack(wire, self.cfg.pin_memory)
            batch["skipped"], carried = batch["skipped"] + carried, 0
            yield batch
        if carried:
            log.warning("eval split %r: %d skipped sample(s) came after the last batch (a loader worker "
                        "found no readable video); they are counted in the loader's skips only",
                        self.cfg.split, carried)
        log_truncated(self.truncated.total - before, self.cfg.max_persons, f"eval split {self.cfg.split!r}")


def train_loader(cfg: LoaderConfig, rank: int, world_size: int) -> TrainLoader:
    """The training loader of ``rank`` (``world_size`` ranks): its share of every epoch's samples, any
    number of shards on any number of ranks and workers (``loader.epoch_plan``)."""
    return TrainLoader(cfg, rank, world_size)


def eval_loader(cfg: LoaderConfig, rank: int, world_size: int, *, num_clips: int = 1,
                flip_double: bool = True) -> EvalLoader:
    """The evaluation loader of ``rank``: every video of ``cfg.split`` exactly once across ranks, with
    the test views of docs/method.md §4 (``num_clips`` uniform clips, ×2 with the mirrored view); batches are
    B×N×K×T×H×W, the last one of each worker possibly smaller."""
    return EvalLoader(cfg, rank, world_size, num_clips, flip_double)

