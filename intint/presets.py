"""The dataset presets of docs/method.md §6.3 and the small CPU runs (functions returning a `TrainConfig`),
and the entry points' parsing that starts from one (`parse_args`).

The reproduction presets (`finegym`, `hmdb51`) follow the reference: fp32, the last epoch tested, no
per-epoch validation on the test split. The command line overrides any field of a preset; these names
stay importable from `intint.config`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

from intint.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, parse


def finegym() -> TrainConfig:
    """FineGYM as the reference trains it (docs/method.md §4.1, §6.1, §6.3): from scratch, cosine LR per
    iteration, fp32, the last epoch tested on the `val` split.

    FineGYM has no validation split apart from the one it is tested on, so no per-epoch validation runs;
    `--select best --data.val-fraction F` picks the epoch on videos held out of train instead.
    """
    return TrainConfig(
        dataset="finegym", name="finegym", epochs=80, repeat=10, batch_size=16, num_workers=4, use_gpu="auto",
        intensity_definition="JBA_weighted", intensity_mode="reference", precision="fp32", select="last",
        optim=OptimConfig(lr=0.4, weight_decay=3e-4, schedule="cosine", grad_clip=40.0, base_batch=64),
        model=ModelConfig(stage_blocks=(4, 6, 3), base_channels=32, dropout=0.5),
        data=DataConfig(clip_len=48, train_size=56, test_size=64, train_split="train", val_split=None,
                        test_split="val"),
    )


def hmdb51(split: int = 1) -> TrainConfig:
    """HMDB51 split `split` (docs/method.md §4.2, §6.3): K400-pretrained R50 (3, 4, 6), step LR at epochs 9
    and 11, fp32, the last epoch tested on `test{split}`.

    Pass the K400 PoseC3D checkpoint with `--pretrained PATH` (the 400-way head is skipped on load); a run
    without it is refused unless `--from-scratch` says so (`train.launch.resolve`). No per-epoch validation
    runs (HMDB51 has none apart from its test split); `--data.val-fraction F` adds one held out of train.
    """
    if split not in (1, 2, 3):
        raise ValueError(f"HMDB51 has splits 1, 2 and 3, got {split}")
    return TrainConfig(
        dataset="hmdb51", name=f"hmdb51-split{split}", epochs=12, repeat=10, batch_size=16, num_workers=4,
        use_gpu="auto", intensity_definition="J", intensity_mode="reference", precision="fp32", select="last",
        optim=OptimConfig(lr=0.01, weight_decay=1e-4, schedule="step", steps=(9, 11), gamma=0.1,
                          grad_clip=40.0, base_batch=64),
        model=ModelConfig(stage_blocks=(3, 4, 6), base_channels=32, dropout=0.5),
        data=DataConfig(clip_len=48, train_size=48, test_size=56, train_split=f"train{split}",
                        val_split=None, test_split=f"test{split}"),
    )


def _cpu_run(**fields: Any) -> TrainConfig:
    """A small CPU run: 2 Ray workers of 1 CPU and 1 loader process each, one pass per epoch, fp32,
    intensity definition J, on CPU even where there are GPUs; `fields` gives the rest."""
    return TrainConfig(repeat=1, num_workers=2, cpus_per_worker=1, loader_workers=1, intensity_definition="J",
                       precision="fp32", use_gpu=False, **fields)


def demo() -> TrainConfig:
    """A CPU-sized run that trains both pathways to a plateau on the demo dataset in minutes on 2 cores
    (2 Ray workers, 1 CPU each).

    A step's cost grows with the heatmap area and the width, so the model is narrow (base 8, one block per
    stage) and the heatmaps small (12×12); clips stay 48 frames, the window that covers a whole demo burst.
    σ = 0.75 px keeps a joint's blob resolvable at that size. The Integrity pathway sees a burst in only a
    few of its 48 uniformly spread frames and learns much more slowly than the Intensity pathway: the
    epochs are sized so that it, too, reaches its plateau (smaller heatmaps buy those epochs).
    """
    return _cpu_run(
        dataset="demo", name="demo", epochs=24, batch_size=8, log_every=5,
        optim=OptimConfig(lr=0.2, weight_decay=1e-4, schedule="cosine", grad_clip=40.0, base_batch=16),
        model=ModelConfig(stage_blocks=(1, 1, 1), base_channels=8, dropout=0.0),
        data=DataConfig(clip_len=48, train_size=12, test_size=12, train_short_side=14, sigma=0.75,
                        shuffle_buffer=64, train_split="train", val_split="val", test_split="test"),
    )


def tiny() -> TrainConfig:
    """The smallest sensible model, for tests and smoke runs: seconds per epoch on one core."""
    return _cpu_run(
        dataset="tiny", name="tiny", epochs=2, batch_size=4, log_every=2,
        optim=OptimConfig(lr=0.05, weight_decay=1e-4, schedule="cosine", grad_clip=40.0, base_batch=8),
        model=ModelConfig(stage_blocks=(1, 1, 1), base_channels=4, dropout=0.0),
        data=DataConfig(clip_len=8, train_size=32, test_size=32, shuffle_buffer=16),
    )


PRESETS = {"finegym": finegym, "hmdb51": hmdb51, "demo": demo, "tiny": tiny}


def preset(name: str) -> TrainConfig:
    """The preset called `name` (hmdb51 gives split 1; use `hmdb51(k)` for the others)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None


def parse_args(args: Sequence[str] | None = None, *, default_preset: str, split: int | None = None,
               description: str | None = None, prog: str | None = None) -> TrainConfig:
    """Entry-point parsing: `--preset NAME` picks the base config, every other flag overrides a field.

    `split` (HMDB51's `--split K`) selects `hmdb51(K)` or, for another preset, renames its splits to
    `train{K}` / `test{K}` so a small preset can run on an HMDB-style shard set.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS), default=default_preset)
    known, rest = pre.parse_known_args(args)
    if split is None:
        base = preset(known.preset)
    elif known.preset == "hmdb51":
        base = hmdb51(split)
    else:
        base = preset(known.preset)
        base.data = dataclasses.replace(base.data, train_split=f"train{split}", val_split=None,
                                        test_split=f"test{split}")
    if description:
        names = ",".join(sorted(PRESETS))
        description = f"{description}\n\nBase config: --preset {{{names}}} (default {default_preset})."
    return parse(base, rest, description, prog)
