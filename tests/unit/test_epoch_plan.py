"""The loader's plan arithmetic: shard splits, quotas and the resume rotation, checked exhaustively."""

from __future__ import annotations

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


@pytest.mark.parametrize("readers, quota, batch", [(1, 12, 4), (2, 12, 5), (3, 7, 2), (4, 9, 3)])
def test_resume_at_any_point_replays_the_rest_of_the_round_robin(readers: int, quota: int,
                                                                  batch: int) -> None:
    plan = epoch_plan.TrainPlan(n_shards=readers, world_size=1, readers=readers, batch_size=batch,
                                quota=quota)
    full = interleave([plan.batches_per_reader] * readers)
    assert len(full) == plan.batches_per_epoch
    for consumed in range(plan.batches_per_epoch + 1):
        # After a restart DataLoader worker `slot` plays reader `reader_of_slot` from its first unseen batch.
        slots = [plan.reader_of_slot(slot, consumed) for slot in range(readers)]
        remaining = [plan.batches_per_reader - plan.skipped_batches(r, consumed) for r in slots]
        resumed = [(slots[s], plan.skipped_batches(slots[s], consumed) + k)
                   for s, k in interleave(remaining)]
        assert resumed == full[consumed:]
        skipped = sum(plan.batch_sizes()[k] for r, k in full[:consumed] if r == 0)
        assert plan.skipped_samples(0, consumed) == skipped


def test_batch_sizes_cover_the_quota_with_one_short_last_batch() -> None:
    plan = epoch_plan.TrainPlan(n_shards=4, world_size=2, readers=2, batch_size=5, quota=12)
    assert plan.batch_sizes() == [5, 5, 2]
    assert plan.batches_per_epoch == 6


def test_shards_are_split_disjointly_by_rank_then_reader() -> None:
    order = epoch_plan.epoch_shard_order(10, seed=1, epoch=4)
    dealt = [epoch_plan.reader_shards(order, r, 2, w, 2) for r in range(2) for w in range(2)]
    flat = [s for d in dealt for s in d]
    assert sorted(flat) == list(range(10))
    assert [len(d) for d in dealt] == [3, 2, 3, 2]


def test_epoch_order_depends_on_seed_and_epoch_only() -> None:
    a = epoch_plan.epoch_shard_order(50, seed=0, epoch=1)
    assert list(a) == list(epoch_plan.epoch_shard_order(50, seed=0, epoch=1))
    assert list(a) != list(epoch_plan.epoch_shard_order(50, seed=0, epoch=2))
    assert list(a) != list(epoch_plan.epoch_shard_order(50, seed=1, epoch=1))


def test_quota_bounds_every_readers_share_in_every_epoch() -> None:
    counts = [9, 9, 9, 8, 8, 3, 12]
    quota = epoch_plan.sample_quota(counts, world_size=2, readers=2)
    assert quota == 12 + 9  # two shards at most per reader: the two largest
    for epoch in range(50):
        order = epoch_plan.epoch_shard_order(len(counts), 0, epoch)
        for r in range(2):
            for w in range(2):
                assert sum(counts[i] for i in epoch_plan.reader_shards(order, r, 2, w, 2)) <= quota


def test_even_shards_make_the_quota_exact() -> None:
    assert epoch_plan.sample_quota([6] * 8, world_size=2, readers=2) == 12
    assert epoch_plan.train_plan([6] * 8, 2, 2, 4).batches_per_epoch == 6


def test_too_few_shards_names_the_numbers() -> None:
    message = r"split 'train' has 3 shard\(s\) but 2 rank\(s\) × 2 loader worker\(s\) = 4 readers"
    with pytest.raises(epoch_plan.ShardSplitError, match=message):
        epoch_plan.train_plan([5, 5, 5], world_size=2, num_workers=2, batch_size=4)
    assert epoch_plan.train_plan([5, 5, 5], world_size=3, num_workers=0, batch_size=4).readers == 1
