"""The hand-back rules of recycled batch buffers (intint.bufferpool), in one process."""

from __future__ import annotations

import torch

from intint.bufferpool import FREE, Ledger, WorkerBuffers


def test_a_slot_comes_back_only_when_no_view_of_it_is_alive() -> None:
    ledger = Ledger(workers=1, ring=2)
    arena: dict[int, torch.Tensor] = {}
    first, slot = WorkerBuffers(ledger.flags, 0, 1, arena).take((2, 3), torch.float16)
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
    arena: dict[int, torch.Tensor] = {}
    buffers = WorkerBuffers(ledger.flags, 0, 1, arena)
    a, slot_a = buffers.take((4,), torch.float16)
    b, slot_b = buffers.take((4,), torch.float16)
    c, slot_c = buffers.take((4,), torch.float16)
    assert slot_a[1] == 0 and slot_b[1] == 1 and slot_c is None  # ring exhausted: a fresh buffer
    assert c.is_shared() and c.data_ptr() not in (a.data_ptr(), b.data_ptr())
    ledger.flags[0, 1] = FREE
    again, slot = buffers.take((4,), torch.float16)
    assert slot == (0, 1, 1) and again.data_ptr() == b.data_ptr()


def test_recover_frees_slots_of_a_dropped_pass_but_not_lent_ones() -> None:
    ledger = Ledger(workers=2, ring=2)
    held = torch.zeros(3)
    ledger.flags[0, 0] = 1  # taken in pass 1, never delivered (a DataLoader reset dropped it)
    ledger.flags[0, 1] = 1  # taken in pass 1 and lent to the training loop, still in use
    ledger.lend((0, 1, 1), held)
    ledger.flags[1, 0] = 2  # taken by a worker of the new pass 2
    ledger.recover(2)
    assert ledger.flags.tolist() == [[FREE, 1], [2, FREE]]
