"""Typed training configuration: what a run trains, how it is validated and which weights it tests.

Every knob of a training run lives in one `TrainConfig` (with nested `OptimConfig`, `ModelConfig` and
`DataConfig`), so a run is fully described by one JSON-able dict: it travels to the Ray workers as the
`train_loop_config`, is written into every checkpoint and is logged to W&B. Presets (docs/method.md §6.3)
are plain functions returning a `TrainConfig`, in `intint.presets` and importable from here; the command
line overrides any field of a preset through `tyro.cli(TrainConfig, default=preset)` (see `parse`).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import tyro

from intint.pose.intensity import DEFINITIONS, MODES

INJECT_FAILURE_ENV = "INTINT_INJECT_FAILURE"

Schedule = Literal["cosine", "step"]
Pathways = Literal["both", "integrity", "intensity"]
WandbMode = Literal["auto", "online", "offline", "disabled"]
HeatmapsOn = Literal["workers", "device"]
# Which weights a run tests: the last epoch's (the reference's protocol) or the best epoch's by validation
# top-1 (only with a validation set disjoint from the test split).
Select = Literal["last", "best"]
Weights = Literal["best", "last"]  # which weights of a checkpoint `intint evaluate` tests
Precision = Literal["fp32", "bf16"]  # bf16 = bf16 autocast on GPU (never on CPU); fp32 = the reference's
HELDOUT_SUFFIX = "@heldout"  # `<train split>@heldout`: the validation videos `data.val_fraction` holds out
# The intensity variants the shards store (`intint.pose.intensity`); "random" centres the Intensity clip at
# random (the ablation's baseline row). Literals, so a misspelt mode fails at parse time, before Ray starts.
IntensityMode = Literal[MODES]  # type: ignore[valid-type]
IntensityDefinition = Literal[(*DEFINITIONS, "random")]  # type: ignore[valid-type]


def parse_use_gpu(values: list[str]) -> bool | str:
    """`--use-gpu` → True, `--use-gpu true|false|auto` (any case, also yes/no/1/0) → True | False | "auto"."""
    if not values:
        return True
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False, "auto": "auto"}
    if len(values) > 1 or values[0].lower() not in words:
        raise ValueError(f"--use-gpu takes true, false or auto, got {' '.join(values)!r}")
    return words[values[0].lower()]


# Where a run trains: True (GPUs, one per Ray worker; an error when they are not there), False (CPU), or
# "auto" (GPUs when the machine or cluster has them, else CPU; `intint.train.preflight` decides and says so).
UseGpu = Annotated[
    bool | Literal["auto"],
    tyro.constructors.PrimitiveConstructorSpec(
        nargs="*", metavar="{true,false,auto}", instance_from_str=parse_use_gpu,
        is_instance=lambda v: v is True or v is False or v == "auto",
        str_from_instance=lambda v: [str(v).lower()]),
]


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
    val_split: str | None = "val"  # validated every epoch (None: no per-epoch validation)
    test_split: str = "val"
    # > 0: hold out this class-stratified share of train_split as the validation set (the same videos
    # every run and rank, never trained on; `intint.loader.holdout`), for datasets without a val split.
    val_fraction: float = 0.0
    val_seed: int = 0  # which videos the hold-out draws (independent of the training seed)
    jitter: int = 0  # temporal jitter of the intensity peak in training (0 = the deterministic reference)
    sigma: float = 0.6
    shuffle_buffer: int = 256
    max_persons: int | None = None  # None renders every person (the reference); a cap drops the rest, counted
    # The samples an even split over ranks × loader workers leaves each epoch: "repeat" re-reads the fewest
    # that give every rank equal batches, "drop" leaves them out (both counted and logged).
    remainder: Literal["repeat", "drop"] = "repeat"

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_fraction > 0 and self.val_split is not None:
            raise ValueError(f"data.val_fraction holds out part of {self.train_split!r} as the validation "
                             f"set; data.val_split {self.val_split!r} would be a second one: pass "
                             "--data.val-split None")

    @property
    def validation_split(self) -> str | None:
        """The split validated every epoch: `val_split`, or `<train_split>@heldout` when `val_fraction`
        holds videos out of train (`loader_config` reads that name as the held-out videos), or None."""
        return f"{self.train_split}{HELDOUT_SUFFIX}" if self.val_fraction > 0 else self.val_split

    @property
    def selection_split(self) -> str | None:
        """The validation split when it is disjoint from the test split (best-epoch selection may use it),
        else None: a validation on the test split only monitors training."""
        split = self.validation_split
        return split if split is not None and split != self.test_split else None


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
    use_gpu: UseGpu = "auto"  # True | False | "auto" (GPUs when there are any); see `UseGpu`
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
    name: str = "finegym"  # run folder name; re-running it continues that run (same config, or --resume)
    max_failures: int = 1  # worker-group restarts from the last checkpoint before the run fails
    checkpoint_every_batches: int | None = None  # also checkpoint mid-epoch every N steps (None: epoch ends)
    fusion_weights: tuple[float, float] = (1.0, 1.0)  # integrity, intensity (docs/method.md §7: 1:1 sum)
    seed: int = 0
    wandb: WandbMode = "auto"  # auto: online with an API key, else offline
    wandb_project: str = "intint"
    wandb_group: str | None = None  # W&B group, e.g. the ablation sweep that runs this
    compile: bool = False
    precision: Precision = "fp32"  # "bf16": bf16 autocast in training and evaluation, on GPU only
    # Tested weights: "last" epoch (the reference) or "best" by validation top-1 on a split disjoint from
    # the test split (data.val_split or data.val_fraction); results.json records which ("tested").
    select: Select = "last"
    from_scratch: bool = False  # HMDB51: train without --pretrained weights on purpose (train.launch.resolve)
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
                              ("intensity_definition", IntensityDefinition), ("precision", Precision),
                              ("select", Select)):
            check_choice(name, getattr(self, name), choices)
        for name in ("epochs", "repeat", "batch_size", "num_workers", "cpus_per_worker", "eval_num_clips",
                     "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.loader_workers < 0:
            raise ValueError(f"loader_workers must be >= 0, got {self.loader_workers}")
        if self.use_gpu not in (True, False, "auto"):
            raise ValueError(f"use_gpu must be true, false or 'auto', got {self.use_gpu!r}")
        if len(self.fusion_weights) != 2:
            raise ValueError(f"fusion_weights must be (integrity, intensity), got {self.fusion_weights}")
        if self.pretrained and self.from_scratch:
            raise ValueError("--pretrained and --from-scratch contradict each other: give one")
        if self.select == "best":
            check_best_selection(self.data)

    @property
    def bf16(self) -> bool:
        """True when `precision` asks for bf16 autocast (which applies on GPU only)."""
        return self.precision == "bf16"

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
        """Rebuild from `to_dict` output (e.g. a checkpoint's config.json); unknown keys are an error.

        A config written before `precision` existed holds `bf16: true|false`; it maps to bf16 | fp32.
        """
        if isinstance(values, dict) and "bf16" in values:
            values = dict(values)
            legacy = values.pop("bf16")
            values.setdefault("precision", "bf16" if legacy else "fp32")
        return _from_dict(cls, values, "config")


def check_best_selection(data: DataConfig) -> None:
    """Refuse `select="best"` unless a validation set disjoint from the test split picks the epoch."""
    if data.validation_split is None:
        raise ValueError("--select best picks the epoch by validation top-1, and this run has no validation "
                         "set: give --data.val-split NAME (not the test split) or --data.val-fraction F")
    if data.selection_split is None:
        raise ValueError(f"--select best would pick the epoch on the test split {data.test_split!r} "
                         "(data.val_split == data.test_split): give a disjoint --data.val-split, or "
                         "--data.val-split None --data.val-fraction F to hold videos out of train")


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


_PRESET_NAMES = ("PRESETS", "preset", "finegym", "hmdb51", "demo", "tiny", "parse_args")


def __getattr__(name: str) -> Any:
    """`intint.config.finegym`, the other presets and `parse_args`, from `intint.presets` (which imports
    this module, so it is imported on first use)."""
    if name in _PRESET_NAMES:
        import intint.presets

        return getattr(intint.presets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    weights: Weights = "last"  # the checkpoint's own epoch ("last") or the best epoch it holds ("best")
    shards: str | None = None  # default: the shard set the run trained on
    split: str | None = None  # default: the run's test split
    out: str | None = None  # results JSON; default eval-<split>-<weights>.json in the checkpoint folder
    num_clips: int | None = None  # default: the run's eval_num_clips
    flip: bool | None = None  # default: the run's eval_flip
    loader_workers: int | None = None
    device: str | None = None  # default: cuda when available


def loader_config(cfg: TrainConfig, split: str, *, train: bool):
    """The `intint.loader.config.LoaderConfig` for one split of this run (train or val/test sizes).

    With `data.val_fraction > 0` the training loader of `train_split` skips the held-out videos, and the
    split name `<train_split>@heldout` (`DataConfig.validation_split`) reads only them. Imported lazily:
    parsing a config must not pay for importing torch and webdataset.
    """
    from intint.loader.config import LoaderConfig
    from intint.loader.holdout import Holdout
    from intint.pose.transforms import PipelineConfig

    holdout = None
    if cfg.data.val_fraction > 0 and split == cfg.data.validation_split:
        split, holdout = cfg.data.train_split, Holdout(cfg.data.val_fraction, cfg.data.val_seed, "val")
    elif cfg.data.val_fraction > 0 and train and split == cfg.data.train_split:
        holdout = Holdout(cfg.data.val_fraction, cfg.data.val_seed, "train")
    pipeline = PipelineConfig(train_hw=(cfg.data.train_size,) * 2, test_hw=(cfg.data.test_size,) * 2,
                              train_short_side=cfg.data.train_short_side)
    data = cfg.data
    return LoaderConfig(
        shards=cfg.shards, split=split, batch_size=cfg.batch_size, num_workers=cfg.loader_workers,
        pathways=cfg.pathways, heatmaps_on=cfg.heatmaps_on, clip_len=data.clip_len,
        intensity_mode=cfg.intensity_mode, intensity_definition=cfg.intensity_definition,
        jba_weights=cfg.jba_weights, jitter=data.jitter if train else 0, pipeline=pipeline, sigma=data.sigma,
        max_persons=data.max_persons, seed=cfg.seed, shuffle_buffer=data.shuffle_buffer,
        remainder=data.remainder, holdout=holdout,
        pin_memory=cfg.use_gpu is True,  # "auto" is resolved before a loader exists
    )


def parse(default: TrainConfig, args: Sequence[str] | None = None, description: str | None = None,
          prog: str | None = None) -> TrainConfig:
    """Command-line overrides of `default`: every field, e.g. `--epochs 2 --optim.lr 0.1 --wandb disabled`."""
    return tyro.cli(TrainConfig, default=default, args=args, description=description, prog=prog)


def parse_evaluate(args: Sequence[str] | None = None, description: str | None = None,
                   prog: str | None = None) -> EvaluateConfig:
    """Command-line options of `intint evaluate` and jobs/evaluate.py: `--checkpoint DIR` and overrides."""
    return tyro.cli(EvaluateConfig, args=args, description=description, prog=prog)
