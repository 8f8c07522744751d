"""`intint demo` end to end (issue 5): the whole method on a tiny demo dataset, trained on Ray Train, then
`intint predict` on its checkpoint. The demo's pieces without Ray are tests/unit/test_demo_run.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from intint.cli import app
from intint.demo import run
from intint.demo.dataset import DEMO_CLASSES
from intint.demo.pictures import EXAMPLE_CLASSES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.ray
def test_demo_command_end_to_end_tiny(ray_session, tmp_path: Path) -> None:
    """The whole demo on 4 videos per class for 1 epoch: results, pictures, history, and predict on its
    checkpoint. Accuracy is not asserted: one epoch on 40 videos learns nothing reliable."""
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--videos-per-class", "4", "--epochs", "1",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    n_test = run.dataset_config(run.DemoOptions(videos_per_class=4)).num_per_class_test * len(DEMO_CLASSES)
    for name in ("integrity", "intensity", "fused"):
        assert set(results[name]) >= {"top1", "top5", "mean_class"}
        assert results[name]["num_samples"] == n_test  # every test video once
    for label in ("Integrity", "Intensity", "Fused"):
        assert label in res.output
    history = run.read_history(str(out / "run" / run.HISTORY_FILE))
    assert [h["epoch"] for h in history] == [0]
    for name in ["training_curves.png", "confusion_fused.png",
                 *(f"{k}_{c}.png" for k in ("intensity", "heatmaps") for c in EXAMPLE_CLASSES)]:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    assert list((out / "run" / "wandb").glob("offline-run-*"))
    assert run.best_checkpoint(str(out / "run")) != str(out / "checkpoint")
    pred = CliRunner().invoke(app, ["predict", "--checkpoint", str(out / "checkpoint"), "--annotations",
                                    str(out / "demo.pkl"), "--key", "demo_test_punch_0000"])
    assert pred.exit_code == 0 and "label: punch" in pred.output
