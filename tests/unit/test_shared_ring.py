"""The hand-back rules of recycled batch buffers (intint.bufferpool), in one process."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from intint.loader.shared_ring import FREE, Ledger, RingBuffer, WorkerBuffers
from intint.render import heatmaps


def test_a_slot_comes_back_only_when_no_view_of_it_is_alive() -> None:
    ledger = Ledger(workers=1, ring=2)
    arena: dict[int, RingBuffer] = {}
    ring, slot = WorkerBuffers(ledger.flags, 0, 1, arena).take((2, 3), torch.float16)
    first = ring.tensor
    assert slot == (0, 0, 1) and ledger.flags.tolist() == [[1, FREE]]
    received = first.clone()  # what the main process gets is a separate tensor; the arena stays in the worker
    ledger.lend(slot, received)
    view = received[1]
    del received
    ledger.collect()
    assert ledger.flags.tolist() == [[1, FREE]]  # a view still uses the buffer
    del view
    ledger.collect()
    assert ledger.flags.tolist() == [[FREE, FREE]]


def test_worker_prefers_its_warm_buffers_and_falls_back_when_all_are_lent() -> None:
    ledger = Ledger(workers=1, ring=2)
    arena: dict[int, RingBuffer] = {}
    buffers = WorkerBuffers(ledger.flags, 0, 1, arena)
    (a, slot_a), (b, slot_b), (c, slot_c) = ((r.tensor, s) for r, s in
                                            (buffers.take((4,), torch.float16) for _ in range(3)))
    assert slot_a[1] == 0 and slot_b[1] == 1 and slot_c is None  # ring exhausted: a fresh buffer
    assert c.is_shared() and c.data_ptr() not in (a.data_ptr(), b.data_ptr())
    ledger.flags[0, 1] = FREE
    again, slot = buffers.take((4,), torch.float16)
    assert slot == (0, 1, 1) and again.tensor.data_ptr() == b.data_ptr()


def test_recover_frees_slots_of_a_dropped_pass_but_not_lent_ones() -> None:
    ledger = Ledger(workers=2, ring=2)
    held = torch.zeros(3)
    ledger.flags[0, 0] = 1  # taken in pass 1, never delivered (a DataLoader reset dropped it)
    ledger.flags[0, 1] = 1  # taken in pass 1 and lent to the training loop, still in use
    ledger.lend((0, 1, 1), held)
    ledger.flags[1, 0] = 2  # taken by a worker of the new pass 2
    ledger.recover(2)
    assert ledger.flags.tolist() == [[FREE, 1], [2, FREE]]


def test_a_recycled_buffer_comes_back_zeroed_where_it_was_drawn_on() -> None:
    """Renders into ring buffers skip the full zeroing; taking the buffer again must reset exactly what
    they drew, including a smaller last batch in the buffer's front and the second pathway's half."""
    ledger = Ledger(workers=1, ring=1)
    arena: dict[int, RingBuffer] = {}
    buffers = WorkerBuffers(ledger.flags, 0, 1, arena)
    shape = (2, 3, 17, 4, 20, 24)  # pathways × batch × K×T×H×W
    ring, _ = buffers.take(shape, torch.float16)
    assert not ring.tensor.any()  # fresh shared memory is zero-filled by the kernel
    rng = np.random.default_rng(0)
    kp = (rng.random((2, 4, 17, 2)) * 30 - 3).astype(np.float32)  # some joints outside the frame
    score = rng.random((2, 4, 17)).astype(np.float32)
    for p, i in ((0, 0), (1, 1), (1, 2)):
        heatmaps.render(kp, score, 20, 24, out=ring.tensor[p, i], clear=False, written=ring.written)
    expected = heatmaps.render(kp, score, 20, 24, dtype=torch.float16)
    assert torch.equal(ring.tensor[1, 2], expected) and ring.tensor[0, 0].count_nonzero() > 100
    assert not ring.tensor[0, 1:].any() and not ring.tensor[1, 0].any()
    ledger.flags[0, 0] = FREE
    again, _ = buffers.take(shape, torch.float16)
    assert again.tensor.data_ptr() == ring.tensor.data_ptr() and not again.tensor.any()
    assert again.written == []


def test_render_without_clear_needs_an_output() -> None:
    with pytest.raises(ValueError, match="clear=False"):
        heatmaps.render(np.zeros((1, 2, 17, 2), np.float32), np.ones((1, 2, 17), np.float32), 8, 8,
                        clear=False)
