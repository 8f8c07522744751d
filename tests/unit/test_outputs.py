"""Outputs a user can take elsewhere (issue 15): `evaluate` writes its own results file, every results file
has a per-video Parquet table beside it and names the classes, `predict` takes run folders as `evaluate`
does, and `intint export` writes a plain state dict and PYSKL checkpoints that give the same logits.

One tiny "trained" run (a checkpoint folder inside a run folder, saved as Ray Train leaves it) on a shard
set built with a class-name file; no Ray.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from intint.cli import app
from intint.config import EvaluateConfig, TrainConfig, tiny
from intint.eval import outputs
from intint.eval.distributed import evaluate_checkpoint
from intint.eval.export import export_model
from intint.eval.metrics import pathway_metrics
from intint.eval.models import build_model, load_model, slowonly_config
from intint.eval.predict import predict_file
from intint.model import checkpoint
from intint.model.pyskl_checkpoint import load_pyskl_checkpoint
from intint.model.slowonly import Recognizer
from intint.store import build
from intint.testing import synthetic

CLASSES = ["wave", "jump", "kick"]
CHECKPOINT = "checkpoint_2026-01-01_00-00-00"
TRAINING_RESULTS = {"fused": {"top1": 0.125}, "meta": {"written_by": "training"}}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A shard set of 3 named classes (train / val / test) and the annotation pickle it was built from."""
    root = tmp_path_factory.mktemp("outputs")
    raw = synthetic.make_annotations(18, len(CLASSES), splits={"train": 0.34, "val": 0.33, "test": 0.33},
                                     seed=3, frames=(16, 24))
    pkl = root / "videos.pkl"
    pkl.write_bytes(pickle.dumps(raw))
    names = root / "classes.txt"
    names.write_text("\n".join(CLASSES) + "\n")
    build.build(build.BuildConfig(input=str(pkl), output=str(root / "shards"), classes=str(names),
                                  num_shards=1, workers=1, progress=False, modes=("reference",)), raw=raw)
    return {"root": root, "shards": root / "shards", "pkl": pkl}


def _run_config(shards: Path) -> TrainConfig:
    cfg = dataclasses.replace(tiny(), shards=str(shards), loader_workers=0, eval_num_clips=1, eval_flip=False)
    cfg.data = dataclasses.replace(cfg.data, val_split="val", test_split="test")
    return cfg


@pytest.fixture()
def run(data: dict[str, Path], tmp_path: Path) -> Path:
    """A run folder as training leaves it: one checkpoint, results.json in the run folder and its copy."""
    cfg = _run_config(data["shards"])
    torch.manual_seed(0)
    folder = tmp_path / "run"
    state = {"model": build_model(cfg, len(CLASSES)).state_dict(), "epoch": 1, "num_classes": len(CLASSES)}
    checkpoint.save(str(folder / CHECKPOINT), state, cfg.to_dict())
    for place in (folder, folder / CHECKPOINT):
        (place / checkpoint.RESULTS_FILE).write_text(json.dumps(TRAINING_RESULTS))
    return folder


def _columns(table) -> dict[str, np.ndarray]:
    return {name: np.array(table.column(name).to_pylist()) for name in outputs.PROBABILITY_COLUMNS
            if name in table.column_names}


def _check_table_matches(results: dict, parquet: Path, keys_expected: int) -> None:
    """One row per tested video, the class names of the labels, and probabilities whose metrics are the
    results file's own."""
    table, record = outputs.read_probabilities(str(parquet))
    assert table.num_rows == keys_expected == results["meta"]["num_samples"]
    assert table.column_names[:4] == ["key", "frame_dir", "label", "class_name"]
    assert len(set(table.column("key").to_pylist())) == table.num_rows
    assert all(isinstance(f, str) and f for f in table.column("frame_dir").to_pylist())
    labels = np.array(table.column("label").to_pylist())
    assert table.column("class_name").to_pylist() == [CLASSES[i] for i in labels]
    probs = _columns(table)
    assert set(probs) == {"integrity", "intensity", "fused", "fused_tuned"}
    for name, rows in probs.items():
        assert rows.shape == (table.num_rows, len(CLASSES)), name
        got = pathway_metrics(rows, labels, len(CLASSES))
        for metric in ("top1", "top5", "mean_class", "confusion"):
            assert got[metric] == results[name][metric], (name, metric)
    np.testing.assert_allclose(probs["integrity"].sum(axis=1), 1.0, rtol=1e-5)
    assert record["classes"] == CLASSES and record["split"] == results["meta"]["split"]
    assert record["fused_tuned_weight"] == results["fused_tuned"]["weight"]


def test_evaluate_writes_its_own_file_and_a_parquet_table_beside_it(run: Path, capsys) -> None:
    ckpt = run / CHECKPOINT
    url, results = evaluate_checkpoint(EvaluateConfig(checkpoint=str(run), loader_workers=0, device="cpu"))
    assert url == str(ckpt / "eval-test-last.json")
    for place in (run, ckpt):  # training's numbers are untouched
        assert json.loads((place / checkpoint.RESULTS_FILE).read_text()) == TRAINING_RESULTS
    assert json.loads(Path(url).read_text()) == results
    assert results["classes"] == CLASSES and "classes.txt" in results["meta"]["classes_source"]
    assert results["meta"]["weights"] == "last" and results["meta"]["checkpoint"] == str(ckpt)
    _check_table_matches(results, ckpt / "eval-test-last.probs.parquet", keys_expected=6)
    assert "predict test" in capsys.readouterr().err  # the progress bar, on stderr

    url_val, _ = evaluate_checkpoint(EvaluateConfig(checkpoint=str(ckpt), split="val", weights="best",
                                                    loader_workers=0, device="cpu"), weights="best")
    assert url_val == str(ckpt / "eval-val-best.json") and Path(url_val).is_file()
    assert (ckpt / "eval-val-best.probs.parquet").is_file()
    assert json.loads((ckpt / checkpoint.RESULTS_FILE).read_text()) == TRAINING_RESULTS


def test_training_writes_the_table_beside_results_json_with_class_names(data: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    """The training loop's own test step (rank 0 of a one-rank run, without Ray)."""
    from intint.train import loop
    from intint.train.protocol import Progress

    cfg = dataclasses.replace(_run_config(data["shards"]), storage_path=str(tmp_path), name="trained",
                              wandb="disabled")
    torch.manual_seed(0)
    worker = loop.Worker(cfg=cfg, rank=0, world=1, device=torch.device("cpu"), num_classes=len(CLASSES),
                         model=build_model(cfg, len(CLASSES)), lr=0.0, train_cfg=None, train_loader=None,
                         steps_per_pass=1, optimizers={}, schedulers={}, progress=Progress(next_epoch=1))
    loop.final_test(worker)
    results = json.loads((tmp_path / "trained" / checkpoint.RESULTS_FILE).read_text())
    assert results["classes"] == CLASSES
    _check_table_matches(results, tmp_path / "trained" / "results.probs.parquet", keys_expected=6)


def test_a_set_without_class_names_says_the_names_are_generated(data: dict[str, Path],
                                                                tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(data["shards"], bare)
    manifest = json.loads((bare / "manifest.json").read_text())
    manifest["build_args"]["classes"] = None
    manifest["classes"] = [f"class_{i}" for i in range(len(CLASSES))]
    (bare / "manifest.json").write_text(json.dumps(manifest))
    names = outputs.class_names(str(bare), len(CLASSES))
    assert names.names == ["class_0", "class_1", "class_2"] and "without a class-name file" in names.source
    gone = outputs.class_names(str(tmp_path / "missing"), 2)
    assert gone.names == ["class_0", "class_1"] and "could not be read" in gone.source
    named = outputs.class_names(str(data["shards"]), len(CLASSES))
    assert named.names == CLASSES and "classes.txt" in named.source


def test_predict_takes_a_run_folder_a_checkpoint_folder_or_its_state_file(run: Path, data: dict[str, Path]
                                                                          ) -> None:
    ckpt = run / CHECKPOINT
    by_ckpt = predict_file(str(ckpt), str(data["pkl"]), device="cpu")
    for source in (run, ckpt / checkpoint.STATE_FILE):
        pred = predict_file(str(source), str(data["pkl"]), device="cpu")
        assert pred.frame_dir == by_ckpt.frame_dir and pred.class_names == CLASSES
        for name, scores in by_ckpt.scores.items():
            np.testing.assert_array_equal(pred.scores[name], scores)
    assert load_model(str(run), "last", "cpu").checkpoint == str(ckpt)
    res = CliRunner().invoke(app, ["predict", "--checkpoint", str(run), "--annotations", str(data["pkl"]),
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert f"video {by_ckpt.frame_dir}" in res.output


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


def test_export_round_trips_to_identical_logits(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    res = CliRunner().invoke(app, ["export", str(run), "-o", str(out)])
    assert res.exit_code == 0, res.output
    trained = load_model(str(run), "last", "cpu")
    config = json.loads((out / "config.json").read_text())
    assert config["num_classes"] == len(CLASSES)
    assert (out / "classes.txt").read_text().split() == CLASSES
    fresh = build_model(TrainConfig.from_dict(config), config["num_classes"])
    fresh.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    fresh.eval()
    torch.manual_seed(1)
    cfg = trained.cfg
    x = torch.rand(2, 17, cfg.data.clip_len, cfg.data.test_size, cfg.data.test_size)
    batch = {name: x for name in trained.model.pathways}
    expected = _logits(trained.model, batch)
    got = _logits(fresh, batch)
    for name in trained.model.pathways:
        assert torch.equal(got[name], expected[name]), name
        pyskl = Recognizer(slowonly_config(cfg.model, len(CLASSES))).eval()
        report = load_pyskl_checkpoint(pyskl, str(out / f"pyskl_{name}.pth"))
        assert report.missing == [] and report.unexpected == [] and report.skipped == []
        assert torch.equal(_logits(pyskl, x), expected[name]), name
        raw = torch.load(out / f"pyskl_{name}.pth", weights_only=True)
        assert "backbone.conv1.conv.weight" in raw["state_dict"] and raw["meta"]["intint"]["pathway"] == name
    record = json.loads((out / "export.json").read_text())
    assert record["checkpoint"] == str(run / CHECKPOINT) and record["weights"] == "last"

    again = CliRunner().invoke(app, ["export", str(run), "-o", str(out)])
    assert again.exit_code == 1 and again.output.strip().startswith("error: ")
    assert "--overwrite" in again.output and len(again.output.strip().splitlines()) == 1
    assert export_model(str(run), str(out), weights="best", overwrite=True).record["weights"] == "best"


def test_results_table_and_export_go_to_an_object_store(s3, run: Path) -> None:
    """The same files through fsspec on a real S3 API server (moto): results, table, export."""
    from intint.eval.export import load_export

    # the run's one S3 server (`s3` in tests/conftest.py)
    s3.make_bucket("outputs")
    url, results = evaluate_checkpoint(EvaluateConfig(checkpoint=str(run), out="s3://outputs/e/test.json",
                                                      loader_workers=0, device="cpu"))
    assert url == "s3://outputs/e/test.json"
    table, record = outputs.read_probabilities("s3://outputs/e/test.probs.parquet")
    assert table.num_rows == results["meta"]["num_samples"] and record["classes"] == CLASSES
    export_model(str(run), "s3://outputs/export")
    model = load_export("s3://outputs/export")
    trained = load_model(str(run), "last", "cpu")
    for a, b in zip(model.state_dict().values(), trained.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
