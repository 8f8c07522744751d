"""Pictures of what the two pathways see and how training went (PNG, matplotlib Agg).

Why pictures: the method's claim is visual — the intensity curve peaks at the action, the Intensity
clip is a window around that peak, the Integrity clip spreads over the whole video — and a plot of a
real sample shows at a glance whether the data path does that. Figures are built and written as
``intint.eval.plots`` does it (Agg canvas, no pyplot, atomic PNG writes to any fsspec URL).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from intint.eval.plots import DPI, PATHWAY_COLOURS, save_png

CURVE_COLOURS: dict[str, str] = {"J": "tab:orange", "B": "tab:purple", "A": "tab:brown",
                                 "JBA_weighted": "black", "JBA_arithmetic": "tab:gray"}


def _as_numpy(x: Any, name: str, ndim: int) -> np.ndarray:
    """Accept NumPy arrays or (CPU/GPU) torch tensors without importing torch here."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {arr.shape}")
    return arr


def _runs(frames: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs [start, end] of a set of frame indices (a looped short video has several)."""
    f = np.unique(np.asarray(frames, dtype=np.int64))
    if f.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(f) > 1)
    starts = np.concatenate([[f[0]], f[breaks + 1]])
    ends = np.concatenate([f[breaks], [f[-1]]])
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def _clip_label(frames: np.ndarray) -> str:
    """'48 frames', or '48 frames, looped' when a short video repeats frames to fill the clip."""
    return f"{frames.size} frames" + (", looped" if np.unique(frames).size < frames.size else "")


def plot_intensity(curves: Mapping[str, np.ndarray], intensity_window: np.ndarray,
                   integrity_frames: np.ndarray, title: str, path: str | os.PathLike, *,
                   bursts: Sequence[tuple[int, int]] | None = None, dpi: int = DPI) -> str:
    """Intensity curves over the whole video, each divided by its maximum so their shapes compare
    (the ensembles are sums of max-normalised parts, their scales mean nothing); the Intensity
    clip's window shaded with its centre frame marked; the Integrity clip's frames as ticks along
    the bottom. ``bursts`` (optional, e.g. the demo's ground truth) are hatched as [start, end)."""
    if not curves:
        raise ValueError("plot_intensity: no curves given")
    lengths = {name: len(np.asarray(c)) for name, c in curves.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"plot_intensity: curves differ in length {lengths}")
    t = next(iter(lengths.values()))
    window = np.asarray(intensity_window, dtype=np.int64)
    integrity = np.asarray(integrity_frames, dtype=np.int64)
    for name, frames in (("intensity_window", window), ("integrity_frames", integrity)):
        if frames.size and (frames.min() < 0 or frames.max() >= t):
            raise ValueError(f"plot_intensity: {name} has frames outside the video [0, {t})")

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for i, (s, e) in enumerate(bursts or ()):
        ax.axvspan(s - 0.5, e - 0.5, facecolor="none", edgecolor="tab:red", hatch="//", alpha=0.5,
                   lw=0, label="true burst" if i == 0 else None)
    for i, (s, e) in enumerate(_runs(window)):
        ax.axvspan(s - 0.5, e + 0.5, color="tab:orange", alpha=0.18,
                   label=f"Intensity clip ({_clip_label(window)})" if i == 0 else None)
    frames = np.arange(t)
    for name, curve in curves.items():
        c = np.asarray(curve, dtype=np.float64)
        top = c.max() if c.size and c.max() > 0 else 1.0
        peak = int(np.argmax(c))
        main = name == "J"                      # the default definition, drawn on top of the others
        line, = ax.plot(frames, c / top, lw=1.6 if main else 1.0, color=CURVE_COLOURS.get(name),
                        zorder=3 if main else 2, label=f"{name} (peak {peak})")
        ax.plot([peak], [c[peak] / top], "o", ms=5 if main else 4, color=line.get_color(), zorder=4)
    ax.plot(integrity, np.full(integrity.shape, -0.06), "|", color=PATHWAY_COLOURS["integrity"], ms=10,
            mew=1.5, label=f"Integrity clip ({_clip_label(integrity)})")
    ax.set_xlim(-0.5, t - 0.5)
    ax.set_ylim(-0.12, 1.08)
    ax.set_xlabel("frame")
    ax.set_ylabel("intensity / its maximum")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return save_png(fig, path, dpi)


def plot_heatmap_montage(integrity: Any, intensity: Any, path: str | os.PathLike, frames: int = 8, *,
                         title: str | None = None, dpi: int = DPI) -> str:
    """Both pathways' heatmap inputs (K×T×H×W each), as the network gets them: per frame the maximum
    over the K joint/limb channels, ``frames`` evenly spaced clip frames per row, one row each."""
    rows = [("Integrity (uniform)", _as_numpy(integrity, "integrity", 4)),
            ("Intensity (peak window)", _as_numpy(intensity, "intensity", 4))]
    if frames < 1:
        raise ValueError(f"plot_heatmap_montage: frames must be >= 1, got {frames}")
    n = min(frames, *(vol.shape[1] for _, vol in rows))
    vmax = max(float(vol.max()) for _, vol in rows) or 1.0
    fig = Figure(figsize=(1.6 * n + 0.6, 3.9), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for r, (label, vol) in enumerate(rows):
        picks = np.linspace(0, vol.shape[1] - 1, n).round().astype(int)
        image = vol.max(axis=0)                                      # T×H×W, max over channels
        for c, t in enumerate(picks):
            ax = axes[r, c]
            ax.imshow(image[t], cmap="magma", vmin=0.0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"clip frame {t + 1}/{vol.shape[1]}", fontsize=7)
        axes[r, 0].set_ylabel(label, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_png(fig, path, dpi)


# History keys as the trainer reports them: "train_loss_<p>" (Ray) or "train/loss_<p>" (W&B), and
# "val_<p>_top1" / "val/<p>_top1"; bare "loss_<p>" and "<p>_top1" are accepted too.
_LOSS_KEY = re.compile(r"^(?:train[/_])?loss_(\w+)$")
_ACC_KEY = re.compile(r"^(?:val[/_])?(integrity|intensity|fused)_top1$")


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: str | os.PathLike, *,
                         title: str | None = None, dpi: int = DPI) -> str:
    """Per epoch: the training loss of each pathway (left) and the top-1 accuracy of each pathway
    and of their late fusion (right). ``history`` is one dict per epoch, e.g. the metrics each
    epoch reports; the x value is its ``epoch`` (or the position in the list)."""
    if not history:
        raise ValueError("plot_training_curves: empty history")
    x = np.array([float(h.get("epoch", i)) for i, h in enumerate(history)])
    losses: dict[str, list[float]] = {}
    accs: dict[str, list[float]] = {}
    for i, h in enumerate(history):
        for key, value in h.items():
            for pattern, into in ((_LOSS_KEY, losses), (_ACC_KEY, accs)):
                m = pattern.match(key)
                if m and value is not None:
                    into.setdefault(m.group(1), [np.nan] * len(history))[i] = float(value)
    if not losses and not accs:
        raise ValueError(f"plot_training_curves: no loss or top-1 keys in {sorted(history[0])}")
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for name, values in losses.items():
        ax_loss.plot(x, values, "o-", ms=3, color=PATHWAY_COLOURS.get(name), label=name)
    for name in sorted(accs, key=lambda n: list(PATHWAY_COLOURS).index(n)):
        ax_acc.plot(x, accs[name], "o-", ms=3, color=PATHWAY_COLOURS[name], label=name,
                    lw=2.0 if name == "fused" else 1.2)
    ax_loss.set_title("training loss")
    ax_acc.set_title("validation top-1")
    ax_acc.set_ylim(0.0, 1.02)
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_png(fig, path, dpi)


def plot_confusion(matrix: Any, class_names: Sequence[str], path: str | os.PathLike, *,
                   title: str | None = None, dpi: int = DPI) -> str:
    """Confusion matrix (rows = true class, columns = predicted): cells coloured by the share of
    the true class (so rare classes are as visible as common ones), annotated with counts."""
    cm = _as_numpy(matrix, "matrix", 2).astype(np.int64)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"plot_confusion: matrix shape {cm.shape} does not match {k} class names")
    totals = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=np.float64), where=totals > 0)
    size = max(4.0, 0.45 * k + 2.0)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="share of true class")
    if k <= 40:
        for i, j in zip(*np.nonzero(cm), strict=True):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.55 else "black")
    ticks = np.arange(k)
    ax.set_xticks(ticks, labels=list(class_names), rotation=60, ha="right", rotation_mode="anchor",
                  fontsize=8 if k <= 20 else 6)
    ax.set_yticks(ticks, labels=list(class_names), fontsize=8 if k <= 20 else 6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"{title + ': ' if title else ''}top-1 {accuracy:.1%} of {cm.sum()} videos", fontsize=10)
    return save_png(fig, path, dpi)
