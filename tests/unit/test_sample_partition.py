"""Exactly once at any scale: the sample-level partition of an epoch and the elastic resume.

The plan arithmetic (``loader.epoch_plan``) is checked against an independent simulation of what the
loader does (readers hand on their runs through the shuffle; the DataLoader interleaves a rank's readers
round-robin), on paper for dataset-sized counts on 1-1024 readers, and with real loaders on a shard set the
test builds: an epoch consumed partly on N ranks × W workers and resumed on M × V (and another batch size)
delivers every video exactly once.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from intint.loader import epoch_plan
from intint.loader.config import LoaderConfig, LoaderState
from intint.loader.epoch_plan import Layout, Segment, Split
from intint.loader.streams import train_loader
from intint.pose.transforms import PipelineConfig
from intint.store import build, shardio
from intint.testing import synthetic

# ------------------------------------------------------------------------------------ the simulation


def reader_outputs(ids: np.ndarray, split: Split, reader: int, seed: int, epoch: int,
                   segment: int) -> list[int]:
    """Every id global reader ``reader`` hands on in a segment, in order: its shuffled run, then repeats."""
    lo, hi = split.bounds(reader)
    buf = split.layout.shuffle_buffer
    rng = epoch_plan.reader_rng(seed, epoch, segment, reader, 0)
    outputs = ids[lo:hi][epoch_plan.shuffle_order(hi - lo, buf, rng)].tolist()
    rlo, rhi = split.repeat_source(reader) if split.delivered(reader) > hi - lo else (lo, hi)
    p = 1
    while len(outputs) < split.delivered(reader):
        rng = epoch_plan.reader_rng(seed, epoch, segment, reader, p)
        outputs += ids[rlo:rhi][epoch_plan.shuffle_order(rhi - rlo, buf, rng)].tolist()
        p += 1
    return outputs[:split.delivered(reader)]


def rank_batches(ids: np.ndarray, split: Split, rank: int, seed: int, epoch: int,
                 segment: int) -> list[list[int]]:
    """A rank's batches in the DataLoader's order: round k takes batch k of each of its readers."""
    per_reader = []
    for w in range(split.layout.readers):
        reader = rank * split.layout.readers + w
        outputs, batches, at = reader_outputs(ids, split, reader, seed, epoch, segment), [], 0
        for size in split.batch_sizes(reader):
            batches.append(outputs[at:at + size])
            at += size
        per_reader.append(batches)
    return [per_reader[w][k] for k in range(split.batches_per_reader) for w in range(split.layout.readers)]


def check_split(n: int, split: Split) -> None:
    """Runs tile the sequence (drop: but its tail), every reader yields the same batches, each of 1..B."""
    r, q, b = split.layout.total_readers, split.batches_per_reader, split.layout.batch_size
    bounds = [split.bounds(j) for j in range(r)]
    assert bounds[0][0] == 0 and all(bounds[j][1] == bounds[j + 1][0] for j in range(r - 1))
    assert bounds[-1][1] == n - split.dropped
    lengths = {hi - lo for lo, hi in bounds}
    assert max(lengths) - min(lengths) <= 1
    delivered = 0
    for j in {0, r - 1, r // 2, *range(min(r, 3))}:  # the two run lengths all appear among these
        sizes = split.batch_sizes(j)
        assert len(sizes) == q and all(1 <= s <= b for s in sizes) and sum(sizes) == split.delivered(j)
        assert split.delivered(j) >= split.run_length(j)
    delivered = sum(split.delivered(j) for j in range(r)) if r <= 64 else None
    if delivered is not None:
        assert delivered == n - split.dropped + split.repeats
    if split.layout.remainder == "drop":
        assert split.repeats == 0 and split.dropped == n - r * (n // r) < r
    else:
        assert split.dropped == 0 and split.repeats == sum(max(0, q - split.run_length(j)) for j in range(r))
        assert split.repeats == 0 or n < r * q  # repeats only when some run is shorter than its batches


# ------------------------------------------------------------------------------------ on paper


DATASETS = {"finegym": 20_484, "hmdb51": 3_570, "kinetics": 240_436}
READERS = (1, 2, 3, 7, 16, 64, 100, 256, 500, 1000, 1024)


def _counts(total: int, shards: int) -> list[int]:
    """``shards`` shards as the builder cuts them (all full but the last) when ``shards`` divides."""
    size = -(-total // shards)
    counts = [size] * (total // size) + ([total % size] if total % size else [])
    return counts


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_scale_on_paper_every_video_exactly_once_with_equal_batches(name: str) -> None:
    """Dataset-sized counts, 1 to 1,024 shards, on 1 to 1,024 readers (world × 4 workers): every sample
    in exactly one run, equal batches on every rank, repeats or drops under one per reader."""
    total = DATASETS[name]
    for shards in (1, 11, 64, 1024):
        counts = _counts(total, shards)
        order = epoch_plan.epoch_order(counts, seed=7, epoch=3)
        assert np.bincount(order, minlength=total).min() == 1 and len(order) == total  # a permutation
        for readers in READERS:
            workers = 4 if readers % 4 == 0 else 1
            for remainder in ("repeat", "drop"):
                split = Split(Layout(readers // workers, workers, 16, remainder), total)
                check_split(total, split)
                runs = np.concatenate([order[slice(*split.bounds(j))] for j in range(readers)])
                assert len(runs) == total - split.dropped and np.bincount(runs, minlength=total).max() == 1
                assert split.repeats < readers and split.dropped < readers


def test_the_issues_counts_fit_any_cluster() -> None:
    """FineGYM's 11 default shards on the preset's 4 × 4 readers, and 64 shards on 16 × 4: the shard-level
    plan refused both (ShardSplitError) or repeated 252 videos; the sample-level one reads each once."""
    for shards, world in ((11, 4), (64, 16), (64, 4)):
        split = Split(Layout(world, 4, 16), DATASETS["finegym"])
        check_split(DATASETS["finegym"], split)
        assert split.repeats == 0 and split.batches_per_epoch * world * 16 >= DATASETS["finegym"]
        assert len(_counts(DATASETS["finegym"], shards)) == shards


# ------------------------------------------------------------------------------------ hypothesis


layouts = st.builds(Layout, world_size=st.integers(1, 6), readers=st.integers(1, 4),
                    batch_size=st.integers(1, 7), remainder=st.sampled_from(("repeat", "drop")),
                    shuffle_buffer=st.sampled_from((0, 1, 3, 8)))


@settings(max_examples=150, deadline=None)
@given(counts=st.lists(st.integers(0, 30), min_size=1, max_size=12), layout=layouts,
       epoch=st.integers(0, 3))
def test_any_shards_and_readers_deliver_each_sample_once(counts: list[int], layout: Layout,
                                                         epoch: int) -> None:
    """Shard counts smaller than, equal to and larger than the readers: the simulated loader delivers
    every sample exactly once (repeat: plus exactly ``repeats`` repeats; drop: all but ``dropped``), and
    every rank yields the same number of batches."""
    n = sum(counts)
    ids = epoch_plan.epoch_order(counts, 3, epoch)
    split = Split(layout, n)
    check_split(n, split)
    per_rank = [rank_batches(ids, split, r, 3, epoch, 0) for r in range(layout.world_size)]
    assert {len(b) for b in per_rank} == {split.batches_per_epoch}
    seen = Counter(i for batches in per_rank for batch in batches for i in batch)
    assert sum(seen.values()) - len(seen) == split.repeats
    assert len(seen) == n - split.dropped


@settings(max_examples=150, deadline=None)
@given(counts=st.lists(st.integers(0, 25), min_size=1, max_size=10), first=layouts, then=layouts,
       last=layouts, cut=st.floats(0, 1), cut2=st.floats(0, 1))
def test_resumes_on_other_layouts_deliver_each_sample_once(counts: list[int], first: Layout, then: Layout,
                                                           last: Layout, cut: float, cut2: float) -> None:
    """An epoch consumed partly on one layout, partly on a second, finished on a third: the samples the
    simulated ranks delivered in each segment, added up, are every sample exactly once (repeat rule)."""
    seed, epoch = 5, 2
    first, then, last = (Layout(x.world_size, x.readers, x.batch_size, "repeat", x.shuffle_buffer)
                         for x in (first, then, last))
    prior: list[Segment] = []
    seen: Counter[int] = Counter()
    repeats = 0
    for index, (layout, share) in enumerate(((first, cut), (then, cut2), (last, 1.0))):
        ids = epoch_plan.remaining_ids(counts, seed, epoch, prior)
        split = Split(layout, len(ids))
        k = int(share * split.batches_per_epoch)
        for rank in range(layout.world_size):
            for batch in rank_batches(ids, split, rank, seed, epoch, index)[:k]:
                seen.update(batch)
        repeats += split.repeats if k else 0  # a segment's repeats may come early (runs shorter than Q)
        prior.append(Segment(layout, k))
    assert len(seen) == sum(counts)
    assert sum(seen.values()) - len(seen) <= repeats  # only the remainder rule's repeats, never a loss


def test_a_segment_with_more_batches_than_its_plan_is_refused() -> None:
    with pytest.raises(ValueError, match="batches consumed per rank"):
        epoch_plan.remaining_ids([10, 10], 0, 0, [Segment(Layout(1, 1, 4), 6)])


# ------------------------------------------------------------------------------------ real loaders


PIPE = PipelineConfig(train_hw=(32, 32), test_hw=(24, 24), train_short_side=36)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shard_set() -> Iterator[Path]:
    """50 train videos in 7 shards (7 × 7 + 1): shards of unequal counts, fewer than most layouts' readers."""
    with tempfile.TemporaryDirectory(prefix="intint-partition-") as tmp:
        out = Path(tmp) / "set"
        raw = synthetic.make_annotations(60, 4, splits={"train": 50, "val": 10}, seed=11, frames=(6, 20),
                                         max_persons=2)
        build.build(build.BuildConfig(input="synthetic", output=str(out), shard_size=8, workers=1,
                                      progress=False, modes=("reference",)), raw=raw)
        yield out


def _cfg(root: Path, **kw: object) -> LoaderConfig:
    base = dict(shards=str(root), batch_size=3, num_workers=0, clip_len=8, pipeline=PIPE, shuffle_buffer=4,
                heatmaps_on="device", pathways="integrity", persistent_workers=False, prefetch_factor=2,
                seed=2)
    base.update(kw)
    return LoaderConfig(**base)  # type: ignore[arg-type]


def _all_keys(root: Path) -> list[str]:
    return [k for _, arrow, _ in shardio.shard_urls(str(root), "train")
            for k in shardio.read_intensity(arrow, ["key"]).column("key").to_pylist()]


def _consume(cfg: LoaderConfig, world: int, epoch: int, state: dict | None, batches: int | None,
             ) -> tuple[list[str], dict]:
    """Every rank of ``world`` (one process) resumes ``state`` and takes ``batches`` batches (None: the
    rest of the epoch); returns the keys they delivered and the (common) state they stopped at."""
    keys, states = [], []
    for rank in range(world):
        loader = train_loader(cfg, rank, world)
        if state is not None:
            loader.load_state_dict(state)
        loader.set_epoch(epoch)
        left, taken = loader.remaining_batches, 0
        for batch in loader:
            keys += batch["key"]
            taken += 1
            if taken == batches:
                break
        assert taken == (left if batches is None else batches)
        states.append(loader.state_dict())
    assert all(s == states[0] for s in states)  # the state is the same on every rank
    return keys, states[0]


def test_an_epoch_resumed_on_other_ranks_workers_and_batch_size_delivers_each_video_once(
        shard_set: Path) -> None:
    """2 ranks × 2 workers (batch 3) take 3 batches each, 3 ranks reading in-process (1 reader each,
    batch 4) take 2 more, and 1 rank (batch 5) finishes the epoch: every video exactly once."""
    epoch = 1
    first, state = _consume(_cfg(shard_set, num_workers=2), 2, epoch, None, 3)
    assert len(first) == 2 * 3 * 3 and len(set(first)) == len(first)
    assert state["epoch"] == epoch and [s["batches"] for s in state["segments"]] == [3]
    second, state = _consume(_cfg(shard_set, batch_size=4), 3, epoch, state, 2)
    assert len(second) == 3 * 2 * 4
    assert [(s["world_size"], s["readers"], s["batch_size"], s["batches"]) for s in state["segments"]] == [
        (2, 2, 3, 3), (3, 1, 4, 2)]
    rest, state = _consume(_cfg(shard_set, batch_size=5), 1, epoch, state, None)
    seen = Counter(first + second + rest)
    assert sorted(seen) == sorted(_all_keys(shard_set)) and set(seen.values()) == {1}

    # the finished epoch's state starts the next epoch on any layout, whole
    loader = train_loader(_cfg(shard_set, batch_size=7), 0, 1)
    loader.load_state_dict(state)
    assert loader.remaining_batches == 0
    assert sorted(k for b in loader for k in b["key"]) == sorted(_all_keys(shard_set))
    assert loader.epoch == epoch + 1


def test_the_same_layout_resumes_batch_for_batch(shard_set: Path) -> None:
    cfg = _cfg(shard_set, num_workers=2, batch_size=4)
    full = [b["key"] for b in train_loader(cfg, 0, 1)]
    part, state = _consume(cfg, 1, 0, None, 3)
    loader = train_loader(cfg, 0, 1)
    loader.load_state_dict(state)
    assert [b["key"] for b in loader] == full[3:]


def test_drop_leaves_out_the_remainder_and_says_how_many(shard_set: Path) -> None:
    cfg = _cfg(shard_set, remainder="drop", batch_size=2)
    keys = [k for rank in range(3) for b in train_loader(cfg, rank, 3) for k in b["key"]]
    assert len(keys) == len(set(keys)) == 48  # 50 on 3 readers: 16 each, 2 dropped
    assert train_loader(cfg, 0, 3).full.dropped == 2
    with pytest.raises(ValueError, match="remainder"):
        _cfg(shard_set, remainder="pad")


def test_an_old_format_state_loads_at_an_epoch_start_only(shard_set: Path) -> None:
    loader = train_loader(_cfg(shard_set), 0, 1)
    loader.load_state_dict({"epoch": 4, "batches_consumed": 0})
    assert loader.epoch == 4 and loader.remaining_batches == len(loader)
    with pytest.raises(ValueError, match=r"old format with 5 batches consumed mid-epoch") as err:
        loader.load_state_dict({"epoch": 4, "batches_consumed": 5})
    assert "\n" not in str(err.value)
    assert LoaderState.from_dict(loader.state_dict()) == loader.state
    other = train_loader(_cfg(shard_set, seed=3), 0, 1)
    with pytest.raises(ValueError, match="seed 2 over 50 samples, but this loader has seed 3"):
        other.load_state_dict(loader.state_dict())


def test_a_training_loop_resumed_mid_epoch_trains_only_the_passes_left(shard_set: Path) -> None:
    """`repeat` loader passes per training epoch: after a mid-epoch resume in pass 1 of epoch 1, the loop
    trains pass 1's remaining batches and pass 2; after an epoch's end (or on a fresh run), all passes."""
    from types import SimpleNamespace

    from intint.train.loop import passes_left

    loader = train_loader(_cfg(shard_set), 0, 1)
    w = SimpleNamespace(train_loader=loader, cfg=SimpleNamespace(repeat=3))
    assert passes_left(w, 0) == [0, 1, 2]
    state = loader.state_dict()
    for at, left in ((0, [1, 2]), (5, [1, 2]), (len(loader), [2])):
        state.update(epoch=3 * 1 + 1, segments=[{**state["segments"][-1], "batches": at}])
        loader.load_state_dict(state)
        assert passes_left(w, 1) == left
    state.update(epoch=3 * 1 + 2, segments=[{**state["segments"][-1], "batches": len(loader)}])
    loader.load_state_dict(state)  # epoch 1 finished: epoch 2 trains all its passes
    assert passes_left(w, 2) == [0, 1, 2]
