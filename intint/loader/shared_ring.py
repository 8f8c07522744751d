"""Recycled shared-memory batch buffers for heatmaps rendered in loader workers.

Why: a training batch of float16 heatmaps is large (2 pathways × 16 clips × 17×48×56×56 = 164 MB), and
a freshly allocated shared-memory buffer has to be page-faulted in by the kernel one 4 KB page at a
time, zero-filled, before the renderer can write it: more CPU than rendering into a buffer that is
already mapped (docs/benchmarks.md has the figures). So each worker keeps a small ring of batch buffers
and reuses one as soon as the training loop has provably let go of it.

Protocol (no locks; every flag has exactly one writer at a time):

* ``flags`` is a W×R int64 tensor in shared memory (W workers, R ring slots). ``FREE`` (-1) means the
  slot belongs to its worker; any other value is the *generation* (one per pass over the loader) in
  which the worker took it, and the slot then belongs to the main process until it sets ``FREE``.
* The worker takes a ``FREE`` slot (preferring one whose buffer it already has), renders into it and
  ships it as usual; shipping a buffer that is already in shared memory passes a file descriptor, and
  the main process finds the mapping in torch's cache, so neither side touches fresh pages again.
  With no ``FREE`` slot it falls back to a fresh buffer: a consumer that holds on to every batch
  (``list(loader)``) is never overwritten, it only loses the speed-up.
* The main process keeps one reference to each slot's storage. A slot comes back (``FREE``) when that
  reference is the storage's only user: no tensor or view of the batch is alive anywhere in the main
  process (``torch._C._storage_Use_Count``). Batches a DataLoader reset dropped before delivery
  (``recover``) come back too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from intint.render.scatter_layout import Written, clear_written

FREE = -1


@dataclass
class RingBuffer:
    """One ring slot's buffer in its worker, and the storage offsets the last renders into it wrote.

    Why the offsets: a batch of heatmaps is ~99 % zeros, so resetting the few elements drawn last time
    (``scatter_layout.clear_written``) moves a hundredth of the bytes of zeroing the whole 164 MB buffer,
    which does not fit in any cache.
    """

    tensor: torch.Tensor
    written: list[Written] = field(default_factory=list)


def new_shared(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor in shared memory (as torch's own collate allocates worker batches)."""
    elem = torch.empty(0, dtype=dtype)
    storage = elem._typed_storage()._new_shared(math.prod(shape), device="cpu")
    return elem.new(storage).resize_(*shape)


class WorkerBuffers:
    """A worker's ring of batch buffers (lives in the worker; ``arena`` persists across passes).

    Every buffer ``take`` hands out is all zeros, and comes with the list its renders must record
    their writes in (``heatmaps.render(..., clear=False, written=...)``): a fresh shared-memory buffer
    is zero-filled by the kernel (``ftruncate`` of a new file), a recycled one is reset where it was
    drawn on. So the main process must treat batch tensors as read-only (``to_device`` copies).
    """

    def __init__(self, flags: torch.Tensor, worker: int, generation: int,
                 arena: dict[int, RingBuffer]) -> None:
        self.flags, self.worker, self.generation, self.arena = flags, worker, generation, arena

    def take(self, shape: tuple[int, ...],
             dtype: torch.dtype) -> tuple[RingBuffer, tuple[int, int, int] | None]:
        """A zeroed buffer of ``shape`` and the ring slot ``(worker, slot, generation)`` it came from, or
        a fresh buffer and None when every slot is still in the main process' hands."""
        row = self.flags[self.worker]
        free = [r for r, flag in enumerate(row.tolist()) if flag == FREE]
        warm = [r for r in free if r in self.arena and self.arena[r].tensor.shape == shape
                and self.arena[r].tensor.dtype == dtype]
        if not free:
            return RingBuffer(new_shared(shape, dtype)), None
        slot = warm[0] if warm else free[0]
        if slot in warm:
            ring = self.arena[slot]
            clear_written(ring.tensor, ring.written)
        else:
            ring = self.arena[slot] = RingBuffer(new_shared(shape, dtype))
        row[slot] = self.generation
        return ring, (self.worker, slot, self.generation)


class Ledger:
    """Main-process side: which ring slots are lent to the training loop, and handing them back."""

    def __init__(self, workers: int, ring: int) -> None:
        self.flags = torch.full((workers, ring), FREE, dtype=torch.int64).share_memory_()
        self._kept: dict[tuple[int, int], torch.UntypedStorage] = {}
        self._lent: set[tuple[int, int]] = set()

    def lend(self, slot: tuple[int, int, int], tensor: torch.Tensor) -> None:
        """Record that a batch in ring slot ``slot`` is about to be handed to the training loop."""
        key = (slot[0], slot[1])
        storage = tensor.untyped_storage()
        kept = self._kept.get(key)
        if kept is None or kept.data_ptr() != storage.data_ptr():  # first use, or a new worker process
            self._kept[key] = storage
        self._lent.add(key)

    def collect(self) -> None:
        """Give back every lent slot nothing in this process uses any more."""
        for key in list(self._lent):
            if torch._C._storage_Use_Count(self._kept[key]._cdata) <= 1:
                self._lent.discard(key)
                self.flags[key] = FREE

    def recover(self, generation: int) -> None:
        """After a DataLoader (re)start for ``generation``: slots taken in an earlier generation that never
        reached this process were dropped with that pass; give them back. Workers of the new pass only
        ever write ``generation`` into ``FREE`` slots, so this cannot race with them."""
        taken = (self.flags != FREE) & (self.flags != generation)
        for w, r in taken.nonzero().tolist():
            if (w, r) not in self._lent:
                self.flags[w, r] = FREE
