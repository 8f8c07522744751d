"""The test protocol (issue 14): the last epoch is tested by default; the best epoch only on a validation set
disjoint from the test split, chosen from validation scores alone; the validation set held out of train
(`data.val_fraction`) is deterministic, class-stratified and never trained on; HMDB51 refuses to start
without its pretrained weights; `precision` replaces `bf16` (old configs still load); `--split all`
tabulates the per-split and mean results."""

from __future__ import annotations

import dataclasses
import json
import random
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from job_helpers import load_job

from intint.config import (
    EvaluateConfig,
    TrainConfig,
    finegym,
    hmdb51,
    loader_config,
    parse,
    parse_evaluate,
    tiny,
)
from intint.loader import holdout, streams
from intint.store import build, shardio
from intint.store.shardstream import shard_refs
from intint.testing import synthetic
from intint.train import all_splits, launch
from intint.train.protocol import Progress, record_tested, select_epoch

NUM_CLASSES = 4


# ---------------------------------------------------------------------------------------------- protocol


def test_the_last_epoch_is_tested_by_default() -> None:
    assert TrainConfig().select == "last"
    for cfg in (finegym(), hmdb51(1), hmdb51(3), tiny()):
        assert cfg.select == "last"
    # the reproduction presets validate nothing on their test split
    assert (finegym().data.validation_split, finegym().data.test_split) == (None, "val")
    assert (hmdb51(2).data.validation_split, hmdb51(2).data.test_split) == (None, "test2")
    # a run whose validation scored epoch 1 best still tests its last epoch, and says so
    progress = Progress(next_epoch=3)
    for epoch, score in enumerate([0.2, 0.6, 0.4]):
        progress.observe(epoch, score)
    assert progress.best_epoch == 1
    assert record_tested(tiny(), progress) == {"epoch": 2, "weights": "last", "selected_on": None}


def test_best_epoch_is_chosen_on_validation_scores_never_on_test_scores() -> None:
    val_scores = [0.2, 0.6, 0.4, 0.5]
    test_scores = [0.3, 0.5, 0.6, 0.7]  # the test split would pick epoch 3
    assert select_epoch("last", val_scores) == 3
    assert select_epoch("best", val_scores) == 1 != max(range(4), key=test_scores.__getitem__)
    assert select_epoch("best", [0.5, 0.5, 0.1]) == 1  # ties go to the later epoch
    with pytest.raises(ValueError, match="no epoch"):
        select_epoch("best", [])

    cfg = parse(finegym(), ["--select", "best", "--data.val-fraction", "0.1"])
    assert cfg.data.selection_split == "train@heldout" != cfg.data.test_split
    progress = Progress(next_epoch=4)
    for epoch, score in enumerate(val_scores):
        progress.observe(epoch, score)
    assert record_tested(cfg, progress) == {"epoch": 1, "weights": "best", "selected_on": "train@heldout"}
    disjoint = parse(tiny(), ["--select", "best", "--data.test-split", "test"])
    assert record_tested(disjoint, progress)["selected_on"] == "val"


def test_best_selection_on_the_test_split_is_refused_at_parse_time(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        parse(tiny(), ["--select", "best"])  # tiny validates on "val", which is also its test split
    assert "would pick the epoch on the test split 'val'" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(ValueError, match="test split 'val'"):
        dataclasses.replace(tiny(), select="best")
    with pytest.raises(ValueError, match="no validation set"):
        dataclasses.replace(hmdb51(1), select="best")
    with pytest.raises(ValueError, match="val-split None"):  # a hold-out and a val split at once
        dataclasses.replace(tiny().data, val_fraction=0.2)
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        dataclasses.replace(tiny().data, val_split=None, val_fraction=1.0)
    # monitoring on the test split is allowed when the last epoch is tested
    assert parse(tiny(), []).data.selection_split is None


# ---------------------------------------------------------------------------------------------- HMDB51


def test_hmdb51_refuses_to_start_without_pretrained_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    started: list[object] = []
    monkeypatch.setattr(launch, "start_ray", lambda *a, **k: started.append(a))
    with pytest.raises(ValueError, match="--pretrained PATH.*--from-scratch"):
        launch.resolve(dataclasses.replace(hmdb51(1), shards=str(tmp_path)))
    launch.resolve(dataclasses.replace(hmdb51(1), shards=str(tmp_path), from_scratch=True))
    launch.resolve(dataclasses.replace(hmdb51(1), shards=str(tmp_path), pretrained="/k400.pth"))
    with pytest.raises(ValueError, match="contradict"):
        dataclasses.replace(hmdb51(1), pretrained="/k400.pth", from_scratch=True)
    job = load_job("train_hmdb51")
    for split in ("1", "all"):
        with pytest.raises(SystemExit) as exit_info:
            job.main(["--split", split, "--shards", str(tmp_path)])
        message = str(exit_info.value.code)
        assert message.startswith("error: hmdb51:") and "--pretrained" in message and "\n" not in message
    assert started == []  # refused before Ray was started


def test_split_all_makes_three_distinct_runs_and_a_mean_table() -> None:
    job = load_job("train_hmdb51")
    configs = job.split_configs(["--shards", "/s", "--pretrained", "/k"], job.SPLITS)
    assert [(c.name, c.data.train_split, c.data.test_split) for c in configs.values()] == [
        ("hmdb51-split1", "train1", "test1"), ("hmdb51-split2", "train2", "test2"),
        ("hmdb51-split3", "train3", "test3")]
    named = job.split_configs(["--preset", "tiny", "--shards", "/s", "--name", "mine"], job.SPLITS)
    assert [c.name for c in named.values()] == ["mine-split1", "mine-split2", "mine-split3"]

    def result(top1: float, epoch: int) -> dict:
        metrics = {"top1": top1, "top5": 1.0, "mean_class": top1 - 0.1}
        return {"integrity": metrics, "intensity": metrics, "fused": {**metrics, "top1": top1 + 0.05},
                "tested": {"epoch": epoch, "weights": "last", "selected_on": None},
                "meta": {"num_samples": 10}}

    table = all_splits.split_table({"split1": result(0.6, 11), "split2": result(0.7, 11),
                                    "split3": result(0.8, 11)}, "hmdb51")
    assert table["num_splits"] == 3
    assert table["mean"]["fused"]["top1"] == pytest.approx(0.75)
    assert table["mean"]["integrity"]["mean_class"] == pytest.approx(0.6)
    text = all_splits.to_markdown(table)
    assert "| split2 | last (epoch 11) | 70.00 | 70.00 | 75.00 |" in text
    assert "**75.00**" in text
    assert all_splits.runs_at_once(tiny(), {"CPU": 4}, 3) == 2  # a tiny run holds 2 CPUs
    assert all_splits.runs_at_once(hmdb51(1), {"CPU": 64, "GPU": 8}, 3) == 2  # 4 GPUs each
    assert all_splits.runs_at_once(hmdb51(1), {"CPU": 2}, 3) == 1  # too small: one after another


# ---------------------------------------------------------------------------------------------- precision


def test_precision_replaces_bf16_and_reproduction_presets_run_fp32() -> None:
    assert TrainConfig().precision == "fp32" and not TrainConfig().bf16
    assert finegym().precision == hmdb51(1).precision == "fp32"
    assert parse(finegym(), ["--precision", "bf16"]).bf16
    with pytest.raises(SystemExit):
        parse(finegym(), ["--precision", "fp16"])
    assert "bf16" not in tiny().to_dict()
    for legacy, expected in ((True, "bf16"), (False, "fp32")):
        old = {k: v for k, v in tiny().to_dict().items() if k not in ("precision", "select", "from_scratch")}
        old["bf16"] = legacy  # a config.json written before `precision` existed
        assert TrainConfig.from_dict(json.loads(json.dumps(old))).precision == expected


def test_evaluate_takes_the_weights_to_test() -> None:
    assert parse_evaluate(["--checkpoint", "/c"]).weights == "last"
    assert parse_evaluate(["--checkpoint", "/c", "--weights", "best"]) == EvaluateConfig("/c", weights="best")
    with pytest.raises(SystemExit):
        parse_evaluate(["--checkpoint", "/c", "--weights", "middle"])


# ---------------------------------------------------------------------------------------------- hold-out


def _videos(per_class: dict[int, int]) -> tuple[list[str], list[int]]:
    keys = [f"k{label}-{i:03d}" for label, n in per_class.items() for i in range(n)]
    labels = [label for label, n in per_class.items() for _ in range(n)]
    return keys, labels


def test_heldout_keys_are_deterministic_stratified_and_seeded() -> None:
    keys, labels = _videos({0: 40, 1: 20, 2: 7, 3: 2, 4: 1})
    held = holdout.heldout_keys(keys, labels, 0.2, seed=0)
    order = list(range(len(keys)))
    random.Random(1).shuffle(order)
    assert holdout.heldout_keys([keys[i] for i in order], [labels[i] for i in order], 0.2, 0) == held
    by_class = Counter(labels[keys.index(k)] for k in held)
    assert dict(by_class) == {0: 8, 1: 4, 2: 1, 3: 1}  # round(0.2 n), ≥ 1 when n ≥ 2, never the last one
    assert holdout.heldout_keys(keys, labels, 0.2, seed=1) != held
    # a video's membership depends only on its own class: adding a class keeps every other choice
    more_keys, more_labels = _videos({5: 10})
    grown = holdout.heldout_keys(keys + more_keys, labels + more_labels, 0.2, 0)
    assert grown & set(keys) == held and len(grown - held) == 2
    with pytest.raises(ValueError, match="twice"):
        holdout.heldout_keys(["a", "a"], [0, 0], 0.5, 0)


@pytest.fixture(scope="module")
def shard_set() -> Iterator[Path]:
    """60 train videos of 4 classes in 6 shards (10 each), 12 test videos."""
    with tempfile.TemporaryDirectory(prefix="intint-protocol-") as tmp:
        out = Path(tmp) / "set"
        raw = synthetic.make_annotations(72, NUM_CLASSES, splits={"train": 60, "test": 12}, seed=5,
                                         frames=(10, 20))
        build.build(build.BuildConfig(input="synthetic", output=str(out), shard_size=10, workers=1,
                                      progress=False, modes=("reference",)), raw=raw)
        yield out


def _keys_read(loader) -> list[str]:
    return [k for batch in loader for k in batch["key"]]


def test_held_out_videos_are_validated_and_never_trained_on(shard_set: Path) -> None:
    torch.set_num_threads(1)
    cfg = parse(tiny(), ["--shards", str(shard_set), "--data.val-split", "None", "--data.val-fraction",
                         "0.25", "--data.test-split", "test", "--batch-size", "4", "--loader-workers", "0"])
    split_keys, split_labels = [], []
    for _, arrow, _ in shardio.shard_urls(str(shard_set), "train"):
        table = shardio.read_intensity(arrow, ["key", "label"])
        split_keys += table.column("key").to_pylist()
        split_labels += table.column("label").to_pylist()
    expected = holdout.heldout_keys(split_keys, split_labels, 0.25, 0)
    assert len(expected) == sum(holdout.class_quota(n, 0.25) for n in Counter(split_labels).values())

    def lcfg(split: str, train: bool):
        return dataclasses.replace(loader_config(cfg, split, train=train), heatmaps_on="device",
                                   persistent_workers=False)

    val_cfg, train_cfg = lcfg(cfg.data.validation_split, False), lcfg("train", True)
    assert len(expected) >= 12  # 15 per class on average: 3-4 held out of each
    validated = [_keys_read(streams.eval_loader(val_cfg, rank, 2, num_clips=1, flip_double=False))
                 for rank in range(2)]
    assert sorted(validated[0] + validated[1]) == sorted(expected)  # each held-out video once over 2 ranks
    trained = set()
    for rank in range(2):
        loader = streams.train_loader(train_cfg, rank, 2)
        for epoch in range(2):
            loader.set_epoch(epoch)
            trained |= set(_keys_read(loader))
    assert trained == set(split_keys) - expected  # every other train video, and no held-out one
    # the same selection on every rank and in every process: it only depends on the split and the config
    refs = shard_refs(str(shard_set), "train")
    assert holdout.kept_keys(val_cfg.holdout, refs) == holdout.loader_keep(val_cfg)
    assert loader_config(cfg, "train", train=False).holdout is None  # evaluating train itself reads it all
