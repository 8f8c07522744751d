"""The loader's plan arithmetic: runs, batch counts and the resume rotation, checked exhaustively.

(The sample-level partition at scale and across layouts: tests/unit/test_sample_partition.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

from intint.loader import epoch_plan


def interleave(per_reader: list[int]) -> list[tuple[int, int]]:
    """The DataLoader's in-order round robin over readers with ``per_reader[w]`` batches each.

    Returns ``[(reader, batch_index), ...]``: round ``k`` takes batch ``k`` of every reader that still
    has one. This is the order torch's DataLoader delivers an IterableDataset's worker outputs in
    (workers that finish drop out of the cycle without reordering the rest).
    """
    rounds = max(per_reader, default=0)
    return [(w, k) for k in range(rounds) for w, n in enumerate(per_reader) if k < n]


@pytest.mark.parametrize("readers, n, batch", [(1, 12, 4), (2, 23, 5), (3, 20, 2), (4, 33, 3)])
def test_resume_at_any_point_replays_the_rest_of_the_round_robin(readers: int, n: int, batch: int) -> None:
    split = epoch_plan.Split(epoch_plan.Layout(1, readers, batch), n)
    q = split.batches_per_reader
    full = interleave([q] * readers)
    assert len(full) == split.batches_per_epoch
    for consumed in range(split.batches_per_epoch + 1):
        # After a restart DataLoader worker `slot` plays reader `reader_of_slot` from its first unseen batch.
        slots = [split.reader_of_slot(slot, consumed) for slot in range(readers)]
        remaining = [q - split.skipped_batches(r, consumed) for r in slots]
        resumed = [(slots[s], split.skipped_batches(slots[s], consumed) + k)
                   for s, k in interleave(remaining)]
        assert resumed == full[consumed:]
        for r in range(readers):
            delivered = sum(split.batch_sizes(r)[k] for w, k in full[:consumed] if w == r)
            assert split.delivered_after(r, consumed) == delivered


def test_batch_sizes_take_the_whole_run_full_batches_first() -> None:
    split = epoch_plan.Split(epoch_plan.Layout(2, 2, 5), 47)  # runs of 11, 12, 12, 12
    assert [split.run_length(j) for j in range(4)] == [11, 12, 12, 12]
    assert split.batch_sizes(0) == (5, 5, 1) and split.batch_sizes(1) == (5, 5, 2)
    assert split.batches_per_epoch == 6 and split.repeats == 0 and split.dropped == 0
    # a run that a multiple of the batch size would leave a batch short keeps every batch non-empty
    split = epoch_plan.Split(epoch_plan.Layout(1, 2, 5), 21)  # runs of 10 and 11: 3 batches each
    assert split.batch_sizes(0) == (5, 4, 1) and split.batch_sizes(1) == (5, 5, 1)


def test_runs_split_the_epoch_order_disjointly_by_rank_then_reader() -> None:
    counts = [7, 3, 9, 1, 6]
    order = epoch_plan.epoch_order(counts, seed=1, epoch=4)
    split = epoch_plan.Split(epoch_plan.Layout(2, 2, 4), len(order))
    runs = [order[slice(*split.bounds(j))] for j in range(4)]
    assert sorted(np.concatenate(runs).tolist()) == list(range(26))
    assert [len(r) for r in runs] == [6, 7, 6, 7]


def test_epoch_order_depends_on_seed_and_epoch_only() -> None:
    a = epoch_plan.epoch_shard_order(50, seed=0, epoch=1)
    assert list(a) == list(epoch_plan.epoch_shard_order(50, seed=0, epoch=1))
    assert list(a) != list(epoch_plan.epoch_shard_order(50, seed=0, epoch=2))
    assert list(a) != list(epoch_plan.epoch_shard_order(50, seed=1, epoch=1))
    counts = [5, 4, 6]
    order = epoch_plan.epoch_order(counts, seed=0, epoch=1)
    offsets = epoch_plan.shard_offsets(counts)
    expected = [i for s in epoch_plan.epoch_shard_order(3, 0, 1) for i in range(offsets[s], offsets[s + 1])]
    assert order.tolist() == expected  # shards in the epoch's order, each in tar order


def test_even_counts_need_no_repeat() -> None:
    split = epoch_plan.Split(epoch_plan.Layout(2, 2, 4), 48)
    assert split.batches_per_epoch == 6 and split.repeats == 0
    assert {split.batch_sizes(j) for j in range(4)} == {(4, 4, 4)}


def test_fewer_shards_than_readers_is_no_error() -> None:
    """3 shards on 2 ranks × 2 workers used to raise ShardSplitError; now the 15 samples are split by
    sample, each exactly once, with equal batch counts."""
    order = epoch_plan.epoch_order([5, 5, 5], seed=0, epoch=0)
    split = epoch_plan.Split(epoch_plan.Layout(2, 2, 4), len(order))
    runs = [order[slice(*split.bounds(j))] for j in range(4)]
    assert sorted(np.concatenate(runs).tolist()) == list(range(15))
    assert split.batches_per_epoch == 2 and split.repeats == 0
    assert epoch_plan.num_readers(0) == 1
