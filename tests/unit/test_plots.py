"""Pictures: every plot writes a real PNG atomically, accepts the inputs the pipeline produces, and
refuses inputs that would make a misleading picture."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from matplotlib.image import imread

from intint.demo.plots import plot_confusion, plot_heatmap_montage, plot_intensity, plot_training_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DPI = 60            # rendering dominates the run time; the checks hold at any resolution


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _assert_picture(path, min_bytes: int = 5_000) -> np.ndarray:
    """A non-trivial PNG: right magic, a real size, many colours, no temp file beside it."""
    assert path.stat().st_size > min_bytes
    w, h = _png_size(path)
    assert w > 300 and h > 200
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    image = imread(path)[..., :3]
    rgb = (image * 255).round().astype(np.int64)
    assert np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]).size > 50    # colours
    return image


def _curves(t: int) -> dict[str, np.ndarray]:
    x = np.arange(t, dtype=np.float32)
    burst = np.exp(-0.5 * ((x - 0.7 * t) / 4) ** 2)
    return {"J": 0.05 + burst, "B": 0.1 + 0.5 * burst, "A": 0.2 + 0.2 * burst, "JBA_weighted": 0.1 + burst}


def test_plot_intensity(tmp_path) -> None:
    t = 200
    peak = int(0.7 * t)
    path = tmp_path / "pics" / "intensity.png"
    out = plot_intensity(_curves(t), np.arange(peak - 24, peak + 24), np.linspace(0, t - 1, 48).astype(int),
                         "a video", path, bursts=[(peak - 10, peak + 10)], dpi=DPI)
    assert out == str(path)
    _assert_picture(path)


def test_plot_intensity_short_looped_video(tmp_path) -> None:
    t = 30                                    # T < 48: both clips loop over the video
    loop = np.arange(48) % t
    plot_intensity(_curves(t), loop, loop, "short", tmp_path / "short.png", dpi=DPI)
    _assert_picture(tmp_path / "short.png")


def test_plot_intensity_refuses_inconsistent_inputs(tmp_path) -> None:
    curves = _curves(100)
    with pytest.raises(ValueError, match="differ in length"):
        plot_intensity({**curves, "B": np.zeros(99)}, np.arange(48), np.arange(48), "x", tmp_path / "a.png")
    with pytest.raises(ValueError, match="integrity_frames"):
        plot_intensity(curves, np.arange(48), np.arange(60, 108), "x", tmp_path / "b.png")
    assert not list(tmp_path.iterdir())


def test_heatmap_montage_rows_are_the_pathways(tmp_path) -> None:
    k, t, h, w = 17, 12, 32, 32
    integrity = torch.zeros(k, t, h, w)
    integrity[3, :, 10:14, 10:14] = 1.0        # only the Integrity pathway has anything to show
    intensity = np.zeros((k, t, h, w), dtype=np.float32)
    intensity[5, :, 20:22, 20:22] = 0.3
    path = tmp_path / "montage.png"
    plot_heatmap_montage(integrity, intensity, path, frames=6, dpi=DPI)
    image = _assert_picture(path, min_bytes=2_000)
    brightest = np.array(colormaps["magma"](1.0)[:3])
    rows, _ = np.nonzero(np.abs(image - brightest).sum(-1) < 0.05)
    assert rows.size > 0
    assert rows.max() < image.shape[0] / 2     # full-scale pixels only in the top (Integrity) row


def test_heatmap_montage_checks_shapes(tmp_path) -> None:
    with pytest.raises(ValueError, match="intensity"):
        plot_heatmap_montage(np.zeros((17, 4, 8, 8)), np.zeros((4, 8, 8)), tmp_path / "m.png")


def test_training_curves_ray_and_wandb_keys(tmp_path) -> None:
    ray_style = [{"epoch": e, "train_loss_integrity": 2.0 / (e + 1), "train_loss_intensity": 1.8 / (e + 1),
                  "val_integrity_top1": 0.2 + 0.1 * e, "val_intensity_top1": 0.25 + 0.1 * e,
                  "val_fused_top1": 0.3 + 0.1 * e, "lr": 0.1} for e in range(5)]
    wandb_style = [{"train/loss_integrity": 2.0 / (e + 1), "val/fused_top1": 0.3 + 0.1 * e} for e in range(5)]
    plot_training_curves(ray_style, tmp_path / "ray" / "curves.png", title="demo", dpi=DPI)
    plot_training_curves(wandb_style, tmp_path / "wandb" / "curves.png", dpi=DPI)
    _assert_picture(tmp_path / "ray" / "curves.png")
    _assert_picture(tmp_path / "wandb" / "curves.png")
    with pytest.raises(ValueError, match="no loss or top-1"):
        plot_training_curves([{"epoch": 0, "lr": 0.1}], tmp_path / "none.png")


def test_confusion(tmp_path) -> None:
    names = [f"class_{i}" for i in range(10)]
    rng = np.random.default_rng(0)
    matrix = np.diag(rng.integers(5, 20, 10)) + rng.integers(0, 3, (10, 10))
    plot_confusion(matrix, names, tmp_path / "cm.png", title="fused", dpi=DPI)
    _assert_picture(tmp_path / "cm.png")
    with pytest.raises(ValueError, match="does not match 9 class names"):
        plot_confusion(matrix, names[:9], tmp_path / "bad.png")
