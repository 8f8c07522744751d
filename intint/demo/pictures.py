"""The demo's pictures: what the two pathways see on example test videos, and how training went.

For one test video of each of `EXAMPLE_CLASSES` (a burst class, a count class and the fine wave): the
stored intensity curves with the Intensity clip's window and the Integrity clip's frames, and both
pathways' heatmap inputs as the eval loader renders them; then the training curves and the fused
confusion matrix (`intint.demo.plots` draws them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from intint import config
from intint.demo import plots
from intint.demo.dataset import DEMO_CLASSES, DemoSet
from intint.pose import sampling
from intint.store import shardio

# A burst class, a count class and the fine wave (its oscillation is only seen densely) for the pictures.
EXAMPLE_CLASSES: tuple[str, ...] = ("punch", "jump_three_times", "wave")
CURVES_SHOWN: tuple[str, ...] = ("J", "B", "A")


def example_videos(demo: DemoSet, peaks: Mapping[str, int], split: str = "test") -> list[str]:
    """One test video per class of `EXAMPLE_CLASSES`: the first whose intensity peak lies in a true burst.

    That is the typical case (`benchmarks/demo_check.py` counts them); the pictures explain what the
    pathways see, so they should not open with the rare video whose peak a detector dropout moved.
    """
    label = {a["frame_dir"]: DEMO_CLASSES[a["label"]] for a in demo.annotations["annotations"]}
    out = []
    for name in EXAMPLE_CLASSES:
        mine = [fd for fd in demo.annotations["split"][split] if label[fd] == name]
        typical = [fd for fd in mine if fd in peaks and any(s <= peaks[fd] < e for s, e in demo.bursts[fd])]
        out.extend((typical or mine)[:1])
    return out


def _intensity_rows(shards: str, split: str, mode: str, definitions: Sequence[str],
                    wanted: set[str]) -> dict[str, dict[str, np.ndarray]]:
    """The stored intensity curves of the wanted videos (what the loader centred the clips on)."""
    cols = ["frame_dir", *(shardio.curve_column(mode, d) for d in definitions)]
    rows: dict[str, dict[str, Any]] = {}
    for _, arrow, _ in shardio.shard_urls(shards, split):
        table = shardio.read_intensity(arrow, cols).to_pydict()
        for i, fd in enumerate(table["frame_dir"]):
            if fd in wanted:
                rows[fd] = {d: np.asarray(table[shardio.curve_column(mode, d)][i], np.float32)
                            for d in definitions}
    missing = wanted - set(rows)
    if missing:
        raise KeyError(f"{shards}: split {split!r} has no intensity rows for {sorted(missing)}")
    return rows


def _loader_heatmaps(cfg: config.TrainConfig, split: str, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """Both pathways' first test view of the wanted videos, straight from the eval loader."""
    from intint.loader import streams

    lcfg = dataclasses.replace(config.loader_config(cfg, split, train=False), num_workers=0, batch_size=4,
                               persistent_workers=False)
    keys = {shardio.sample_key(fd): fd for fd in wanted}
    found: dict[str, dict[str, Any]] = {}
    for batch in streams.eval_loader(lcfg, 0, 1, num_clips=1, flip_double=False):
        for i, key in enumerate(batch["key"]):
            if key in keys:
                found[keys[key]] = {p: batch[p][i, 0].float() for p in ("integrity", "intensity")}
        if len(found) == len(keys):
            break
    return found


def draw_pictures(out: Path, demo: DemoSet, cfg: config.TrainConfig, ckpt: str, results: Mapping[str, Any],
                  history: Sequence[Mapping[str, Any]]) -> list[Path]:
    """Intensity curves and heatmap montages of the example test videos, training curves, fused confusion."""
    from intint.eval.predict import Predictor, find_sample

    pictures: list[Path] = []
    split = cfg.data.test_split
    # The run's definition centres the Intensity clip ("random" centres it anywhere: J stands in).
    definition = "J" if cfg.intensity_definition == "random" else cfg.intensity_definition
    shown = tuple(dict.fromkeys((*CURVES_SHOWN, definition)))
    candidates = {a["frame_dir"] for a in demo.annotations["annotations"]
                  if DEMO_CLASSES[a["label"]] in EXAMPLE_CLASSES} & set(demo.annotations["split"][split])
    curves = _intensity_rows(cfg.shards, split, cfg.intensity_mode, shown, candidates)
    examples = example_videos(demo, {fd: int(np.argmax(c[definition])) for fd, c in curves.items()}, split)
    volumes = _loader_heatmaps(cfg, split, set(examples))
    predictor = Predictor(ckpt, device="cpu")
    for fd in examples:
        sample = find_sample(demo.annotations, fd, len(DEMO_CLASSES))
        pred = predictor.predict(sample)
        t = sample.total_frames
        if cfg.intensity_definition == "random":
            window = sampling.random_centre_indices(t, cfg.data.clip_len, 1, test_mode=True)
        else:  # the stored peak, as the loader read it
            window = sampling.intensity_indices(t, int(np.argmax(curves[fd][definition])), cfg.data.clip_len)
        uniform = sampling.uniform_indices(t, cfg.data.clip_len, 1, test_mode=True)
        truth = DEMO_CLASSES[sample.label]
        guesses = ", ".join(f"{n} → {pred.predicted(n)}" for n in ("integrity", "intensity", "fused"))
        title = f"{fd} (true class: {truth})\npredicted: {guesses}"
        pictures.append(Path(plots.plot_intensity(curves[fd], window, uniform, title,
                                                  out / f"intensity_{truth}.png", bursts=demo.bursts[fd])))
        if fd in volumes:
            v = volumes[fd]
            pictures.append(Path(plots.plot_heatmap_montage(
                v["integrity"], v["intensity"], out / f"heatmaps_{truth}.png",
                title=f"{fd} (true class: {truth}): the eval loader's test view, max over joints")))
    if history:
        pictures.append(Path(plots.plot_training_curves(
            history, out / "training_curves.png",
            title=f"demo run: {len(history)} epochs, validation on the val split")))
    pictures.append(Path(plots.plot_confusion(results["fused"]["confusion"], list(DEMO_CLASSES),
                                              out / "confusion_fused.png", title=f"fused, {split} split")))
    return pictures
