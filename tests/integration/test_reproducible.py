"""Reproducible numbers (issue 14): the same training command twice gives the identical results.json, every
process of a run seeds its RNGs from the run's seed with a fixed thread count, and `intint demo --seeds N`
summarises the spread over seeds (mean ± sd per pathway and for both fusions)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from job_helpers import load_job, tiny_train_args
from torch.utils.data import IterableDataset

from intint.config import tiny
from intint.demo import run as demo_run
from intint.demo import seeds
from intint.loader import streams
from intint.model import checkpoint
from intint.train.determinism import make_reproducible

# ------------------------------------------------------------------------------------ seeds and threads


class _GlobalDraws(IterableDataset):
    """Yields what a loader worker draws from the global RNGs, with its torch thread count."""

    def __init__(self, seed: int, rank: int) -> None:
        super().__init__()
        self.layout = SimpleNamespace(cfg=SimpleNamespace(seed=seed), rank=rank)

    def __iter__(self):
        yield (random.random(), float(np.random.random()), float(torch.rand(())), torch.get_num_threads())


def _worker_draws(seed: int, rank: int, main_seed: int) -> list[tuple[float, float, float, int]]:
    torch.manual_seed(main_seed)  # how far the main process has drawn must not matter
    cfg = SimpleNamespace(pin_memory=False, prefetch_factor=2, persistent_workers=False)
    return sorted(streams._dataloader(_GlobalDraws(seed, rank), cfg, 2))  # 2 fork workers, 1 item each


def test_loader_workers_seed_their_global_rngs_from_the_run_seed_and_rank() -> None:
    first = _worker_draws(seed=3, rank=1, main_seed=0)
    assert first == _worker_draws(seed=3, rank=1, main_seed=12345)
    assert all(threads == 1 for *_, threads in first)
    assert first != _worker_draws(seed=3, rank=0, main_seed=0)  # every rank and worker its own stream
    assert first[0][:3] != first[1][:3]


def test_a_training_process_gets_fixed_threads_seeded_rngs_and_deterministic_kernels() -> None:
    cfg = tiny()
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        torch.set_num_threads(2)

        def draws(rank: int) -> tuple[float, float, float]:
            make_reproducible(cfg, rank, torch.device("cpu"))
            return random.random(), float(np.random.random()), float(torch.rand(()))

        rank0 = draws(0)
        assert torch.get_num_threads() == cfg.cpus_per_worker == 1  # from the config, not the environment
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()  # strict on CPU
        assert draws(0) == rank0 and draws(1) != rank0
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])


# ---------------------------------------------------------------------------------------- two runs


@pytest.mark.ray
def test_the_same_run_twice_gives_identical_results(ray_session, tiny_shards: Path, tmp_path: Path) -> None:
    """Two tiny 2-worker runs of one command (same name, separate storage folders) write the same bytes;
    the tiny shard set has a val split apart from its test split, so the tuned fusion is compared too."""
    texts = []
    for folder in ("a", "b"):
        args = tiny_train_args(tiny_shards, tmp_path / folder, "repro", "--epochs", "1", "--wandb",
                               "disabled", "--data.test-split", "test")
        load_job("train_finegym").main(args)
        texts.append((tmp_path / folder / "repro" / checkpoint.RESULTS_FILE).read_text())
    assert texts[0] == texts[1]
    results = json.loads(texts[0])
    tuned = results["fused_tuned"]
    assert tuned["chosen_on"] == "val" and tuned["val_top1"] >= tuned["val_top1_equal"]
    assert tuned["num_samples"] == results["fused"]["num_samples"] == 12  # every test video once


# ---------------------------------------------------------------------------------------- demo seeds


def _results(integrity: float, intensity: float, fused: float, tuned: float, weight: float) -> dict:
    def row(top1: float) -> dict[str, float]:
        return {"top1": top1, "top5": 1.0, "mean_class": top1 / 2}

    return {"integrity": row(integrity), "intensity": row(intensity), "fused": row(fused),
            "fused_tuned": {**row(tuned), "weight": weight}, "meta": {}}


def test_seed_summary_is_mean_and_sample_sd_per_row_with_the_fused_margin() -> None:
    summary = seeds.summarise({0: _results(0.4, 0.6, 0.7, 0.8, 0.3), 1: _results(0.5, 0.6, 0.8, 0.8, 0.5),
                               2: _results(0.6, 0.3, 0.9, 0.9, 0.4)})
    assert summary["seeds"] == [0, 1, 2]
    integrity = summary["rows"]["integrity"]["top1"]
    assert integrity["mean"] == pytest.approx(0.5) and integrity["sd"] == pytest.approx(0.1)  # ddof=1
    assert summary["rows"]["fused_tuned"]["top1"]["values"] == [0.8, 0.8, 0.9]
    assert summary["fused_margin"]["values"] == pytest.approx([0.1, 0.2, 0.3])  # fused − better pathway
    assert summary["fused_tuned_weight"]["mean"] == pytest.approx(0.4)
    assert summary["per_seed"]["2"]["intensity"]["top1"] == 0.3
    assert seeds.seeds_table(summary)[0] == ["Integrity", "50.0 ± 10.0", "100.0 ± 0.0", "25.0 ± 5.0"]
    assert [r[0] for r in seeds.seeds_table(summary)] == ["Integrity", "Intensity", "Fused", "Fused (tuned)"]
    one = seeds.summarise({5: _results(0.4, 0.6, 0.7, 0.8, 0.3)})
    assert one["rows"]["fused"]["top1"]["sd"] is None and seeds.seeds_table(one)[2][1] == "70.0"


def test_seed_runs_go_to_their_own_subfolders_from_the_given_seed(tmp_path: Path) -> None:
    opts = seeds.seed_options(demo_run.DemoOptions(out=str(tmp_path), seed=2), 3)
    assert [(o.seed, Path(o.out).name) for o in opts] == [(2, "seed-2"), (3, "seed-3"), (4, "seed-4")]
    with pytest.raises(ValueError, match="--seeds must be >= 1"):
        seeds.seed_options(demo_run.DemoOptions(out=str(tmp_path)), 0)
    (tmp_path / demo_run.MARKER).write_text("{}")
    (tmp_path / "seed-7").mkdir()
    (tmp_path / seeds.SEEDS_FILE).write_text("{}")
    demo_run.prepare_folder(tmp_path)  # a re-run clears the previous seeds' folders and summary
    assert sorted(p.name for p in tmp_path.iterdir()) == [demo_run.MARKER]
