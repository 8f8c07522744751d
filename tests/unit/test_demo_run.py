"""`intint demo`'s pieces and `intint predict` (issue 5) without Ray, on a tiny demo shard set with an
untrained checkpoint: options, output folder, single-video prediction agreeing with the eval loader,
pictures and the results table. The whole demo on Ray Train is tests/integration/test_demo.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from intint import config
from intint.cli import app
from intint.demo import run
from intint.demo.dataset import DEMO_CLASSES, DemoConfig, generate_demo
from intint.demo.pictures import EXAMPLE_CLASSES, draw_pictures
from intint.eval.distributed import predict as predict_batches
from intint.eval.models import build_model
from intint.eval.predict import Predictor, find_sample, format_prediction
from intint.loader import streams
from intint.loader.device import to_device
from intint.model import checkpoint
from intint.store import shardio

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory):
    """A tiny demo dataset with its shard set and an untrained checkpoint of a tiny two-pathway model."""
    out = tmp_path_factory.mktemp("demo")
    demo_set = generate_demo(DemoConfig(num_per_class_train=2, num_per_class_val=1, num_per_class_test=2))
    pkl, classes = run.write_dataset(demo_set, out)
    opts = run.DemoOptions(out=str(out), epochs=1)
    cfg = run.train_config(opts, str(out / "shards"), out)
    small = config.tiny()  # a few ms per video: the pictures and predictions need a model, not a good one
    cfg = dataclasses.replace(cfg, model=small.model, loader_workers=0,
                              data=dataclasses.replace(cfg.data, clip_len=small.data.clip_len,
                                                       train_size=small.data.train_size,
                                                       test_size=small.data.test_size))
    run.build_shards(demo_set, pkl, classes, out, cfg, progress=False)
    torch.manual_seed(0)
    model = build_model(cfg, len(DEMO_CLASSES))
    ckpt = out / "ckpt"
    checkpoint.save(str(ckpt), {"model": model.state_dict(), "epoch": 0, "num_classes": len(DEMO_CLASSES)},
                    cfg.to_dict())
    return out, demo_set, cfg, str(ckpt), pkl


def test_dataset_size_scales_val_and_test_with_the_train_count() -> None:
    assert run.dataset_config(run.DemoOptions()) == DemoConfig()
    small = run.dataset_config(run.DemoOptions(videos_per_class=4, seed=3))
    sizes = (small.num_per_class_train, small.num_per_class_val, small.num_per_class_test, small.seed)
    base = DemoConfig()
    assert sizes == (4, -(-4 * base.num_per_class_val // base.num_per_class_train),
                     -(-4 * base.num_per_class_test // base.num_per_class_train), 3)  # ceil, at least 2
    assert min(sizes[1:3]) >= 2
    with pytest.raises(ValueError, match="videos-per-class"):
        run.DemoOptions(videos_per_class=1)


def test_train_config_tests_on_the_test_split_with_wandb_offline(tmp_path: Path) -> None:
    cfg = run.train_config(run.DemoOptions(epochs=2, ray_workers=1), "/x/shards", tmp_path)
    assert (cfg.data.train_split, cfg.data.val_split, cfg.data.test_split) == ("train", "val", "test")
    assert cfg.wandb == "offline" and cfg.epochs == 2 and cfg.num_workers == 1
    assert cfg.storage_path == str(tmp_path) and cfg.shards == "/x/shards"


def test_output_folder_is_cleared_only_when_it_is_a_demo_folder(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a demo folder"):
        run.prepare_folder(foreign)
    assert (foreign / "thesis.tex").read_text() == "keep me"

    mine = tmp_path / "mine"
    (mine / "run" / "checkpoint_1").mkdir(parents=True)
    (mine / run.MARKER).write_text("{}")
    (mine / "confusion_fused.png").write_bytes(b"x")
    (mine / "notes.txt").write_text("user file")
    run.prepare_folder(mine)
    assert not (mine / "run").exists() and not (mine / "confusion_fused.png").exists()
    assert (mine / "notes.txt").exists()  # only what the demo writes is removed


def test_single_video_prediction_equals_the_eval_loader(tiny_demo) -> None:
    """`intint predict` computes the peak, clips and views itself; the result must equal evaluation."""
    _, demo_set, cfg, ckpt, _ = tiny_demo
    predictor = Predictor(ckpt, device="cpu")
    lcfg = dataclasses.replace(config.loader_config(cfg, "test", train=False), num_workers=0, batch_size=4)
    loader = streams.eval_loader(lcfg, 0, 1, num_clips=cfg.eval_num_clips, flip_double=cfg.eval_flip)
    ref = predict_batches(predictor.model, loader, torch.device("cpu"),
                          prepare=lambda b: to_device(b, "cpu", lcfg))
    by_key = {fd: i for i, fd in enumerate(ref.keys)}
    test_dirs = demo_set.annotations["split"]["test"]
    assert len(ref.keys) == len(test_dirs)
    for fd in test_dirs[:6]:
        pred = predictor.predict(find_sample(demo_set.annotations, fd))
        row = by_key[shardio.sample_key(fd)]
        for name in ("integrity", "intensity"):
            np.testing.assert_allclose(pred.scores[name], ref.probs[name][row], rtol=1e-4, atol=1e-6)
        fused = ref.probs["integrity"][row] + ref.probs["intensity"][row]  # 1:1 fusion, docs/method.md §7
        np.testing.assert_allclose(pred.scores["fused"], fused, rtol=1e-4, atol=1e-6)
        assert pred.label == ref.labels[row]


def test_predict_command_prints_top5_of_each_pathway_and_fused(tiny_demo) -> None:
    _, demo_set, _, ckpt, pkl = tiny_demo
    fd = demo_set.annotations["split"]["test"][3]
    res = CliRunner().invoke(app, ["predict", "--checkpoint", ckpt, "--annotations", str(pkl), "--key", fd])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    truth = DEMO_CLASSES[find_sample(demo_set.annotations, fd).label]
    assert lines[0].startswith(f"video {fd} (label: {truth})")
    assert lines[1].split() == ["rank", "integrity", "intensity", "fused"]
    ranks = [ln for ln in lines if ln[:1].isdigit()]
    assert [int(r.split()[0]) for r in ranks] == [1, 2, 3, 4, 5]
    for row in ranks:  # each cell: a class name of the manifest and a score
        cells = row.split()[1:]
        assert all(c in DEMO_CLASSES for c in cells[0::2]) and len(cells) == 6
    scores = [[float(x) for x in r.split()[2::2]] for r in ranks]
    for col in zip(*scores, strict=True):  # best first
        assert list(col) == sorted(col, reverse=True)

    bad = CliRunner().invoke(app, ["predict", "--checkpoint", ckpt, "--annotations", str(pkl),
                                   "--key", "nope"])
    assert bad.exit_code == 1 and "nope" in bad.output


def test_prediction_table_ranks_fused_as_the_sum(tiny_demo) -> None:
    _, demo_set, _, ckpt, _ = tiny_demo
    pred = Predictor(ckpt, device="cpu").predict(find_sample(demo_set.annotations, None))
    top = pred.top(3)
    best = int(np.argmax(pred.scores["integrity"] + pred.scores["intensity"]))
    assert top["fused"][0] == (DEMO_CLASSES[best], pytest.approx(float(pred.scores["fused"][best])))
    assert "fused score" in format_prediction(pred, 3)


def test_pictures_of_examples_curves_and_confusion(tiny_demo) -> None:
    out, demo_set, cfg, ckpt, _ = tiny_demo
    results = {"fused": {"confusion": np.eye(len(DEMO_CLASSES), dtype=int).tolist()}}
    history = [{"epoch": e, "train_loss_integrity": 2.0 - e, "train_loss_intensity": 2.1 - e,
                "val_integrity_top1": 0.2 * e, "val_intensity_top1": 0.3 * e, "val_fused_top1": 0.35 * e}
               for e in range(3)]
    pictures = draw_pictures(out, demo_set, cfg, ckpt, results, history)
    names = sorted(p.name for p in pictures)
    expected = [f"{kind}_{c}.png" for kind in ("heatmaps", "intensity") for c in EXAMPLE_CLASSES]
    assert names == sorted([*expected, "training_curves.png", "confusion_fused.png"])
    for p in pictures:
        assert p.read_bytes()[:8] == PNG_MAGIC


def test_results_table_rows() -> None:
    r = {name: {"top1": 0.5, "top5": 0.9, "mean_class": 0.25} for name in ("integrity", "intensity", "fused")}
    labels = ("Integrity", "Intensity", "Fused")
    assert run.results_table(r) == [[name, "50.0", "90.0", "25.0"] for name in labels]
