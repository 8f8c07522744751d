"""Typed training configuration and the dataset presets of docs/method.md §6.3.

Every knob of a training run lives in one `TrainConfig` (with nested `OptimConfig`, `ModelConfig` and
`DataConfig`), so a run is fully described by one JSON-able dict: it travels to the Ray workers as the
`train_loop_config`, is written into every checkpoint and is logged to W&B. Presets are plain functions
returning a `TrainConfig`; the command line overrides any field of a preset through
`tyro.cli(TrainConfig, default=preset)` (see `parse`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import tyro

from intint.pose.intensity import DEFINITIONS, MODES

INJECT_FAILURE_ENV = "INTINT_INJECT_FAILURE"

Schedule = Literal["cosine", "step"]
Pathways = Literal["both", "integrity", "intensity"]
WandbMode = Literal["auto", "online", "offline", "disabled"]
HeatmapsOn = Literal["workers", "device"]
# The intensity variants the shards store (`intint.pose.intensity`); "random" centres the Intensity clip at
# random (the ablation's baseline row). Literals, so a misspelt mode fails at parse time, before Ray starts.
IntensityMode = Literal[MODES]  # type: ignore[valid-type]
IntensityDefinition = Literal[(*DEFINITIONS, "random")]  # type: ignore[valid-type]


def check_choice(name: str, value: Any, choices: Any) -> None:
    """Raise ValueError unless `value` is one of the `Literal` type `choices` (tyro checks the command line;
    this checks configs built in code or read back from JSON)."""
    allowed = typing.get_args(choices)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def parse_key_values(text: str | None, option: str) -> dict[str, float] | None:
    """`"J=69.3,B=68.7,A=70.3"` → `{"J": 69.3, ...}`; None or "" → None; `option` names the flag in errors."""
    if not text:
        return None
    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"{option}: expected NAME=VALUE pairs, got {part!r}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{option}: {name.strip()} is not a number ({value!r})") from None
    return out


@dataclass
class OptimConfig:
    """SGD + LR schedule, as the reference's mmcv runner does it (docs/method.md §6.3).

    `lr` is the rate for a global batch of `base_batch` videos; the rate actually used is
    `lr × global_batch / base_batch` (the linear scaling rule). The reference trained with a global batch
    of 64 (4 GPUs × 16) at lr 0.4 / 0.01 without rescaling, so `base_batch=64` reproduces it exactly on
    4 workers × 16 and keeps the same per-sample rate on any other layout.
    """

    lr: float = 0.4
    momentum: float = 0.9
    weight_decay: float = 3e-4
    nesterov: bool = False
    grad_clip: float | None = 40.0  # max L2 norm over one pathway's gradients; None = no clipping
    schedule: Schedule = "cosine"  # "cosine": per iteration to min_lr; "step": ×gamma at each epoch in steps
    steps: tuple[int, ...] = ()  # epochs (0-based) at which the step schedule multiplies the rate by gamma
    gamma: float = 0.1
    min_lr: float = 0.0
    base_batch: int = 64

    def __post_init__(self) -> None:
        check_choice("optim.schedule", self.schedule, Schedule)
        if self.lr <= 0 or self.base_batch <= 0:
            raise ValueError(f"optim.lr and optim.base_batch must be positive, got {self.lr}, "
                             f"{self.base_batch}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"optim.grad_clip must be positive or None, got {self.grad_clip}")
        if list(self.steps) != sorted(self.steps):
            raise ValueError(f"optim.steps must be increasing, got {self.steps}")

    def scaled_lr(self, global_batch: int) -> float:
        """Learning rate for `global_batch` videos per step: lr × global_batch / base_batch."""
        return self.lr * global_batch / self.base_batch


@dataclass
class ModelConfig:
    """The SlowOnly backbone size (docs/method.md §6.1); the fixed parts (strides, inflation) live in
    `intint.model`.

    The reference is depth 50 with `stage_blocks` (4, 6, 3) for FineGYM and (3, 4, 6) for HMDB51 (the
    K400-pretrained layout). Smaller `stage_blocks`/`base_channels` give the CPU demo and test models.
    """

    stage_blocks: tuple[int, ...] = (4, 6, 3)
    base_channels: int = 32
    dropout: float = 0.5


@dataclass
class DataConfig:
    """What the loader produces (docs/method.md §4): clip length, input sizes, splits and sampling knobs."""

    clip_len: int = 48
    train_size: int = 56  # train input H = W after RandomResizedCrop + Resize
    test_size: int = 64  # val/test input H = W
    train_short_side: int = 64  # keep-ratio resize of the short side before the random crop
    train_split: str = "train"
    val_split: str = "val"  # validated every epoch; the reference validates and tests on the same split
    test_split: str = "val"
    jitter: int = 0  # temporal jitter of the intensity peak in training (0 = the deterministic reference)
    sigma: float = 0.6
    shuffle_buffer: int = 256
    max_persons: int = 2


@dataclass
class TrainConfig:
    """One two-pathway training run: data, model, optimisation, Ray layout, tracking, fault injection."""

    shards: str = ""  # shard-set URL (local path or fsspec URL); required
    dataset: str = "finegym"  # preset name, recorded for the logs
    epochs: int = 80
    repeat: int = 10  # loader passes per epoch (the reference's RepeatDataset times=10, docs/method.md §6.3)
    batch_size: int = 16  # videos per Ray worker per step
    num_workers: int = 4  # Ray Train workers (one per GPU)
    cpus_per_worker: int = 4  # CPUs reserved per Ray worker: its DataLoader processes need them
    loader_workers: int = 4  # DataLoader processes per Ray worker
    use_gpu: bool = False
    pathways: Pathways = "both"
    intensity_mode: IntensityMode = "reference"
    intensity_definition: IntensityDefinition = "JBA_weighted"
    # JBA_weighted with these J/B/A (or ten-definition) accuracies instead of the shard builder's weights;
    # the loader recomputes the peaks from the stored curves (intint.store.reweighted_peaks). Set by the
    # ablation sweep.
    jba_weights: dict[str, float] | None = None
    heatmaps_on: HeatmapsOn = "workers"
    pretrained: str | None = None  # PYSKL checkpoint loaded into both pathways' backbones (heads skipped)
    num_classes: int | None = None  # None: taken from the shard manifest
    storage_path: str = "runs"  # local folder or fsspec URL holding run folders
    name: str = "finegym"  # run folder name; re-running with the same name resumes that run
    max_failures: int = 1  # worker-group restarts from the last checkpoint before the run fails
    fusion_weights: tuple[float, float] = (1.0, 1.0)  # integrity, intensity (docs/method.md §7: 1:1 sum)
    seed: int = 0
    wandb: WandbMode = "auto"  # auto: online with an API key, else offline
    wandb_project: str = "intint"
    wandb_group: str | None = None  # W&B group, e.g. the ablation sweep that runs this
    compile: bool = False
    bf16: bool = True  # bf16 autocast; only on GPU
    eval_num_clips: int = 1  # test views: clips per video
    eval_flip: bool = True  # test views: add the mirrored view (docs/method.md §5 double=True)
    log_every: int = 20  # progress line / W&B point every N steps
    inject_failure_at_epoch: int | None = None  # fault test: last rank raises once mid-epoch (also env)
    optim: OptimConfig = field(default_factory=OptimConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        for name, choices in (("pathways", Pathways), ("heatmaps_on", HeatmapsOn), ("wandb", WandbMode),
                              ("intensity_mode", IntensityMode),
                              ("intensity_definition", IntensityDefinition)):
            check_choice(name, getattr(self, name), choices)
        for name in ("epochs", "repeat", "batch_size", "num_workers", "cpus_per_worker", "eval_num_clips",
                     "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.loader_workers < 0:
            raise ValueError(f"loader_workers must be >= 0, got {self.loader_workers}")
        if len(self.fusion_weights) != 2:
            raise ValueError(f"fusion_weights must be (integrity, intensity), got {self.fusion_weights}")

    @property
    def active_pathways(self) -> tuple[str, ...]:
        """The pathways this run trains, in the fixed order integrity, intensity."""
        return ("integrity", "intensity") if self.pathways == "both" else (self.pathways,)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.num_workers

    @property
    def lr_used(self) -> float:
        """The learning rate after the linear scaling rule; logged and written with every checkpoint."""
        return self.optim.scaled_lr(self.global_batch)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists); `from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Rebuild from `to_dict` output (e.g. a checkpoint's config.json); unknown keys are an error."""
        return _from_dict(cls, values, "config")


def _from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise TypeError(f"{where}: expected a dict, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown} for {cls.__name__}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _from_dict(hint, value, f"{where}.{name}")
        elif isinstance(value, list) and (typing.get_origin(hint) is tuple or tuple in typing.get_args(hint)):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def with_env_overrides(cfg: TrainConfig) -> TrainConfig:
    """Apply `INTINT_INJECT_FAILURE=<epoch>` when the option was not given (how CI injects the fault)."""
    env = os.environ.get(INJECT_FAILURE_ENV)
    if cfg.inject_failure_at_epoch is not None or not env:
        return cfg
    try:
        epoch = int(env)
    except ValueError as err:
        raise ValueError(f"{INJECT_FAILURE_ENV} must be an epoch number, got {env!r}") from err
    return dataclasses.replace(cfg, inject_failure_at_epoch=epoch)


@dataclass
class EvaluateConfig:
    """Testing a checkpoint folder: its stored run config, with the shard set, split and views overridable."""

    checkpoint: str  # checkpoint folder (state.pt + config.json), or a run folder: its tested checkpoint
    shards: str | None = None  # default: the shard set the run trained on
    split: str | None = None  # default: the run's test split
    out: str | None = None  # results JSON; default results.json inside the checkpoint folder
    num_clips: int | None = None  # default: the run's eval_num_clips
    flip: bool | None = None  # default: the run's eval_flip
    loader_workers: int | None = None
    device: str | None = None  # default: cuda when available


# ---------------------------------------------------------------------------------------------- presets


def finegym() -> TrainConfig:
    """FineGYM as the reference trains it (docs/method.md §4.1, §6.1, §6.3): from scratch, cosine LR per
    iteration."""
    return TrainConfig(
        dataset="finegym", name="finegym", epochs=80, repeat=10, batch_size=16, num_workers=4, use_gpu=True,
        intensity_definition="JBA_weighted", intensity_mode="reference",
        optim=OptimConfig(lr=0.4, weight_decay=3e-4, schedule="cosine", grad_clip=40.0, base_batch=64),
        model=ModelConfig(stage_blocks=(4, 6, 3), base_channels=32, dropout=0.5),
        data=DataConfig(clip_len=48, train_size=56, test_size=64, train_split="train", val_split="val",
                        test_split="val"),
    )


def hmdb51(split: int = 1) -> TrainConfig:
    """HMDB51 split `split` (docs/method.md §4.2, §6.3): K400-pretrained R50 (3, 4, 6), step LR at epochs 9
    and 11.

    Pass the K400 PoseC3D checkpoint with `--pretrained PATH`; the 400-way head is skipped on load.
    """
    if split not in (1, 2, 3):
        raise ValueError(f"HMDB51 has splits 1, 2 and 3, got {split}")
    return TrainConfig(
        dataset="hmdb51", name=f"hmdb51-split{split}", epochs=12, repeat=10, batch_size=16, num_workers=4,
        use_gpu=True, intensity_definition="J", intensity_mode="reference",
        optim=OptimConfig(lr=0.01, weight_decay=1e-4, schedule="step", steps=(9, 11), gamma=0.1,
                          grad_clip=40.0, base_batch=64),
        model=ModelConfig(stage_blocks=(3, 4, 6), base_channels=32, dropout=0.5),
        data=DataConfig(clip_len=48, train_size=48, test_size=56, train_split=f"train{split}",
                        val_split=f"test{split}", test_split=f"test{split}"),
    )


def _cpu_run(**fields: Any) -> TrainConfig:
    """A small CPU run: 2 Ray workers of 1 CPU and 1 loader process each, one pass per epoch, fp32,
    intensity definition J; `fields` gives the rest."""
    return TrainConfig(repeat=1, num_workers=2, cpus_per_worker=1, loader_workers=1, intensity_definition="J",
                       bf16=False, **fields)


def demo() -> TrainConfig:
    """A CPU-sized run that learns the demo dataset in a few minutes on 2 cores (2 Ray workers, 1 CPU each).

    The 1×7×7 stem over 17 joint channels costs most of a step, so the model is narrow (base 8, one block
    per stage) and the heatmaps small (16×16); clips stay 48 frames, the window that covers a whole demo
    burst. σ = 1 px keeps a joint's blob resolvable at that size.
    """
    return _cpu_run(
        dataset="demo", name="demo", epochs=16, batch_size=8, log_every=5,
        optim=OptimConfig(lr=0.2, weight_decay=1e-4, schedule="cosine", grad_clip=40.0, base_batch=16),
        model=ModelConfig(stage_blocks=(1, 1, 1), base_channels=8, dropout=0.0),
        data=DataConfig(clip_len=48, train_size=16, test_size=16, train_short_side=18, sigma=1.0,
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


def loader_config(cfg: TrainConfig, split: str, *, train: bool):
    """The `intint.loader.config.LoaderConfig` for one split of this run (train or val/test sizes).

    Imported lazily: parsing a config must not pay for importing torch and webdataset.
    """
    from intint.loader.config import LoaderConfig
    from intint.pose.transforms import PipelineConfig

    pipeline = PipelineConfig(train_hw=(cfg.data.train_size,) * 2, test_hw=(cfg.data.test_size,) * 2,
                              train_short_side=cfg.data.train_short_side)
    return LoaderConfig(
        shards=cfg.shards,
        split=split,
        batch_size=cfg.batch_size,
        num_workers=cfg.loader_workers,
        pathways=cfg.pathways,
        heatmaps_on=cfg.heatmaps_on,
        clip_len=cfg.data.clip_len,
        intensity_mode=cfg.intensity_mode,
        intensity_definition=cfg.intensity_definition,
        jba_weights=cfg.jba_weights,
        jitter=cfg.data.jitter if train else 0,
        pipeline=pipeline,
        sigma=cfg.data.sigma,
        max_persons=cfg.data.max_persons,
        seed=cfg.seed,
        shuffle_buffer=cfg.data.shuffle_buffer,
        pin_memory=cfg.use_gpu,
    )


def parse(default: TrainConfig, args: Sequence[str] | None = None, description: str | None = None,
          prog: str | None = None) -> TrainConfig:
    """Command-line overrides of `default`: every field, e.g. `--epochs 2 --optim.lr 0.1 --wandb disabled`."""
    return tyro.cli(TrainConfig, default=default, args=args, description=description, prog=prog)


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
        base.data = dataclasses.replace(base.data, train_split=f"train{split}", val_split=f"test{split}",
                                        test_split=f"test{split}")
    if description:
        names = ",".join(sorted(PRESETS))
        description = f"{description}\n\nBase config: --preset {{{names}}} (default {default_preset})."
    return parse(base, rest, description, prog)


def parse_evaluate(args: Sequence[str] | None = None, description: str | None = None,
                   prog: str | None = None) -> EvaluateConfig:
    """Command-line options of `intint evaluate` and jobs/evaluate.py: `--checkpoint DIR` and overrides."""
    return tyro.cli(EvaluateConfig, args=args, description=description, prog=prog)
