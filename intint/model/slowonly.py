"""SlowOnly 3D-ResNet pathways, the I3D head, two-pathway wrapper and PYSKL checkpoint import.

The architecture is PoseC3D's ``ResNet3dSlowOnly`` exactly as the Int&Int reference configures it (spec §6.1,
§6.2): Bottleneck3d blocks (expansion 4) with '3x1x1' temporal inflation, a 1×7×7 stem without striding,
only the last stage's features go to the head. Parameter counts and feature shapes match the reference, so
PYSKL / MMAction2 checkpoints (e.g. the K400 PoseC3D weights HMDB51 starts from) load through a key-name
mapping instead of a copy of PYSKL's registries.

The two pathways are independent networks. ``TwoPathwayModel`` only puts them in one module so that one data
step feeds both; the summed loss gives each pathway exactly the gradients of a separate run (the reference
trains them in separate runs, spec §6.2).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import fsspec
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "PATHWAYS",
    "SlowOnlyConfig",
    "finegym_backbone",
    "hmdb51_backbone",
    "small_backbone",
    "Bottleneck3d",
    "ResNet3dSlowOnly",
    "I3DHead",
    "Recognizer",
    "TwoPathwayModel",
    "to_channels_last",
    "LoadReport",
    "pyskl_to_intint_key",
    "intint_to_pyskl_key",
    "to_pyskl_state_dict",
    "from_pyskl_state_dict",
    "load_pyskl_checkpoint",
]

PATHWAYS: tuple[str, str] = ("integrity", "intensity")
EXPANSION = 4  # Bottleneck3d output channels = planes * 4 (ResNet-50 style)


# --------------------------------------------------------------------------------------------------------
# Configuration and presets
# --------------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class SlowOnlyConfig:
    """One pathway's network: ``ResNet3dSlowOnly`` backbone + ``I3DHead`` (spec §6.1 table).

    Defaults are the FineGYM backbone; ``num_classes`` has no default because a wrong class count only shows
    up as a silently useless head.
    """

    num_classes: int
    in_channels: int = 17
    base_channels: int = 32
    num_stages: int = 3
    stage_blocks: tuple[int, ...] = (4, 6, 3)
    conv1_kernel: tuple[int, int, int] = (1, 7, 7)
    inflate: tuple[int, ...] = (0, 1, 1)
    spatial_strides: tuple[int, ...] = (2, 2, 2)
    temporal_strides: tuple[int, ...] = (1, 1, 2)
    dropout: float = 0.5
    zero_init_residual: bool = True

    def __post_init__(self) -> None:
        for name in ("stage_blocks", "inflate", "spatial_strides", "temporal_strides"):
            value = tuple(getattr(self, name))
            if len(value) != self.num_stages:
                raise ValueError(
                    f"SlowOnlyConfig.{name} has {len(value)} entries but num_stages is {self.num_stages}"
                )
            setattr(self, name, value)
        self.conv1_kernel = tuple(self.conv1_kernel)
        if len(self.conv1_kernel) != 3 or any(k % 2 == 0 for k in self.conv1_kernel):
            raise ValueError(f"SlowOnlyConfig.conv1_kernel must be 3 odd sizes, got {self.conv1_kernel}")
        if self.num_classes < 1:
            raise ValueError(f"SlowOnlyConfig.num_classes must be >= 1, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SlowOnlyConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.in_channels < 1 or self.base_channels < 1 or min(self.stage_blocks) < 1:
            raise ValueError("SlowOnlyConfig in_channels, base_channels and stage_blocks must be positive")

    @property
    def feature_channels(self) -> int:
        """Channels of the last stage, the head's input (512 for the reference)."""
        return self.base_channels * 2 ** (self.num_stages - 1) * EXPANSION


def finegym_backbone(num_classes: int = 99, dropout: float = 0.5) -> SlowOnlyConfig:
    """FineGYM pathway: stage blocks (4, 6, 3), 1,994,080 backbone parameters."""
    return SlowOnlyConfig(num_classes=num_classes, stage_blocks=(4, 6, 3), dropout=dropout)


def hmdb51_backbone(num_classes: int = 51, dropout: float = 0.5) -> SlowOnlyConfig:
    """HMDB51 pathway: stage blocks (3, 4, 6) (the K400 PoseC3D checkpoint's shape), 3,003,360 parameters."""
    return SlowOnlyConfig(num_classes=num_classes, stage_blocks=(3, 4, 6), dropout=dropout)


def small_backbone(
    num_classes: int, base_channels: int = 8, stage_blocks: tuple[int, ...] = (1, 1, 1), dropout: float = 0.5
) -> SlowOnlyConfig:
    """A narrow, shallow variant of the same architecture for CPU runs, tests and the demo."""
    return SlowOnlyConfig(
        num_classes=num_classes, base_channels=base_channels, stage_blocks=stage_blocks, dropout=dropout
    )


# --------------------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------------------


def _conv(in_ch: int, out_ch: int, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> nn.Conv3d:
    """Bias-free Conv3d with 'same' padding per axis, as PYSKL's ConvModule(bias=False) builds it."""
    padding = tuple((k - 1) // 2 for k in kernel)
    return nn.Conv3d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False)


class ConvBN(nn.Sequential):
    """Conv3d + BatchNorm3d without activation: the residual shortcut (PYSKL ``downsample``)."""

    def __init__(self, in_ch: int, out_ch: int, stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv = _conv(in_ch, out_ch, (1, 1, 1), stride)
        self.bn = nn.BatchNorm3d(out_ch)


class Bottleneck3d(nn.Module):
    """1×1×1 (or 3×1×1 when inflated) → 1×3×3 (carries the stride) → 1×1×1 ×4, plus shortcut.

    '3x1x1' inflation puts the only temporal kernel in conv1, so the temporal receptive field grows only in
    the inflated stages; the stride sits on conv2 ('pytorch' style), exactly as PYSKL's Bottleneck3d.
    """

    def __init__(
        self, inplanes: int, planes: int, spatial_stride: int, temporal_stride: int, inflate: bool
    ) -> None:
        super().__init__()
        out = planes * EXPANSION
        stride = (temporal_stride, spatial_stride, spatial_stride)
        self.conv1 = _conv(inplanes, planes, (3, 1, 1) if inflate else (1, 1, 1), (1, 1, 1))
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = _conv(planes, planes, (1, 3, 3), stride)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = _conv(planes, out, (1, 1, 1), (1, 1, 1))
        self.bn3 = nn.BatchNorm3d(out)
        self.relu = nn.ReLU(inplace=True)
        needs_shortcut = spatial_stride != 1 or temporal_stride != 1 or inplanes != out
        self.shortcut = ConvBN(inplanes, out, stride) if needs_shortcut else None

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class Stem(nn.Module):
    """Conv 1×7×7 + BN + ReLU + MaxPool 1×3×3, all stride 1: no downsampling, heatmaps are already small."""

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv = _conv(in_ch, out_ch, kernel, (1, 1, 1))
        self.bn = nn.BatchNorm3d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 1, 1), padding=(0, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))


class ResNet3dSlowOnly(nn.Module):
    """PoseC3D's SlowOnly backbone: ``B×K×T×H×W`` heatmaps → last-stage features ``B×C×T'×H'×W'``."""

    def __init__(self, cfg: SlowOnlyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = Stem(cfg.in_channels, cfg.base_channels, cfg.conv1_kernel)
        stages = []
        inplanes = cfg.base_channels
        for i in range(cfg.num_stages):
            planes = cfg.base_channels * 2**i
            blocks = []
            for j in range(cfg.stage_blocks[i]):
                first = j == 0
                blocks.append(
                    Bottleneck3d(
                        inplanes,
                        planes,
                        spatial_stride=cfg.spatial_strides[i] if first else 1,
                        temporal_stride=cfg.temporal_strides[i] if first else 1,
                        inflate=bool(cfg.inflate[i]),
                    )
                )
                inplanes = planes * EXPANSION
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming (fan_out, ReLU) convs, BN = identity, and the last BN of each block zeroed.

        Zeroing bn3 makes every residual block start as the identity, which is what lets the reference train
        from scratch at lr 0.4 (spec §6.1, mmcv ``kaiming_init`` + ``zero_init_residual``).
        """
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.cfg.zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck3d):
                    nn.init.zeros_(m.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


class I3DHead(nn.Module):
    """Global average pool → dropout → linear classifier (PYSKL ``I3DHead`` / ``SimpleHead(mode='3D')``)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.pool(x).flatten(1)))


class Recognizer(nn.Module):
    """One pathway: backbone + head. ``forward`` gives logits for training; ``predict_views`` test probs."""

    def __init__(self, cfg: SlowOnlyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNet3dSlowOnly(cfg)
        self.head = I3DHead(cfg.feature_channels, cfg.num_classes, cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``B×K×T×H×W`` heatmap volumes → ``B×num_classes`` logits."""
        if x.dim() != 5 or x.shape[1] != self.cfg.in_channels:
            raise ValueError(
                f"Recognizer expects B×{self.cfg.in_channels}×T×H×W input, got shape {tuple(x.shape)} "
                "(test batches with views B×N×K×T×H×W go through predict_views)"
            )
        return self.head(self.backbone(x))

    def predict_views(self, x: Tensor) -> Tensor:
        """``x``: ``B×N×K×T×H×W`` (N test views) → ``B×num_classes`` probabilities.

        Softmax per view, then the mean over views (``average_clips='prob'``, spec §6.2). The softmax is done
        in float32 so bf16 autocast does not quantise the probabilities that fusion adds up. Gradient mode is
        left to the caller (wrap evaluation in ``torch.inference_mode()``).
        """
        if x.dim() != 6:
            raise ValueError(f"predict_views expects B×N×K×T×H×W input, got shape {tuple(x.shape)}")
        b, n = x.shape[:2]
        logits = self(x.reshape(b * n, *x.shape[2:]))
        return logits.float().softmax(dim=-1).reshape(b, n, -1).mean(dim=1)


class TwoPathwayModel(nn.Module):
    """The Integrity and Intensity recognisers of one architecture; either may be absent.

    The pathways share nothing (no parameters, no features), so ``sum(losses(...).values())`` back-propagates
    into each exactly what its own loss would in a separate run.
    """

    def __init__(self, integrity: Recognizer | None, intensity: Recognizer | None) -> None:
        super().__init__()
        if integrity is None and intensity is None:
            raise ValueError("TwoPathwayModel needs at least one of the integrity / intensity pathways")
        self.add_module("integrity", integrity)
        self.add_module("intensity", intensity)

    @classmethod
    def from_config(cls, cfg: SlowOnlyConfig, pathways: str = "both") -> TwoPathwayModel:
        """Fresh recognisers; ``pathways`` is "both", "integrity" or "intensity" (as in LoaderConfig)."""
        if pathways not in ("both", *PATHWAYS):
            raise ValueError(f"pathways must be 'both', 'integrity' or 'intensity', got {pathways!r}")
        integrity = Recognizer(cfg) if pathways in ("both", "integrity") else None
        intensity = Recognizer(cfg) if pathways in ("both", "intensity") else None
        return cls(integrity, intensity)

    @property
    def pathways(self) -> tuple[str, ...]:
        """Names of the pathways this model holds, in the fixed order (integrity, intensity)."""
        return tuple(name for name in PATHWAYS if getattr(self, name) is not None)

    def recognizer(self, name: str) -> Recognizer:
        """The recogniser of pathway ``name``, with an error naming it when absent."""
        if name not in PATHWAYS:
            raise KeyError(f"unknown pathway {name!r}; expected one of {PATHWAYS}")
        module = getattr(self, name)
        if module is None:
            raise KeyError(f"pathway {name!r} is not part of this model (it holds {self.pathways})")
        return module

    def _inputs(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        missing = [name for name in self.pathways if name not in batch]
        if missing:
            raise KeyError(
                f"batch has no {missing} entry; keys are {sorted(batch)} (check LoaderConfig.pathways)"
            )
        return {name: batch[name] for name in self.pathways}

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Train batch ``{pathway: B×K×T×H×W}`` → ``{pathway: B×C logits}`` for every pathway held."""
        return {name: self.recognizer(name)(x) for name, x in self._inputs(batch).items()}

    def predict(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Eval batch ``{pathway: B×N×K×T×H×W}`` → ``{pathway: B×C view-averaged probabilities}``."""
        return {name: self.recognizer(name).predict_views(x) for name, x in self._inputs(batch).items()}

    @staticmethod
    def losses(logits: Mapping[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        """Cross-entropy per pathway (loss weight 1, no smoothing, spec §6.2); train on their sum."""
        return {name: F.cross_entropy(value.float(), labels) for name, value in logits.items()}


def to_channels_last(model: nn.Module) -> nn.Module:
    """Convert parameters to ``channels_last_3d`` (NDHWC), the layout cuDNN's fast 3D conv kernels want.

    Feed inputs converted with ``x.contiguous(memory_format=torch.channels_last_3d)`` as well.
    """
    return model.to(memory_format=torch.channels_last_3d)


# --------------------------------------------------------------------------------------------------------
# PYSKL / MMAction2 checkpoint import
# --------------------------------------------------------------------------------------------------------

# (PYSKL pattern, intint template) and the reverse. ConvModule = ".conv" + ".bn"; convs/BNs of a block are
# numbered conv{k}.conv / conv{k}.bn in PYSKL and conv{k} / bn{k} here; layers are 1-based there.
_P = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_PYSKL_TO_INTINT: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"^backbone\.conv1\.(conv|bn)\.{_P}$"), "backbone.stem.{0}.{1}"),
    (
        re.compile(rf"^backbone\.layer(\d+)\.(\d+)\.conv(\d)\.conv\.{_P}$"),
        "backbone.stages.{0-1}.{1}.conv{2}.{3}",
    ),
    (
        re.compile(rf"^backbone\.layer(\d+)\.(\d+)\.conv(\d)\.bn\.{_P}$"),
        "backbone.stages.{0-1}.{1}.bn{2}.{3}",
    ),
    (
        re.compile(rf"^backbone\.layer(\d+)\.(\d+)\.downsample\.(conv|bn)\.{_P}$"),
        "backbone.stages.{0-1}.{1}.shortcut.{2}.{3}",
    ),
    (re.compile(r"^cls_head\.fc_cls\.(weight|bias)$"), "head.fc.{0}"),
)
_INTINT_TO_PYSKL: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"^backbone\.stem\.(conv|bn)\.{_P}$"), "backbone.conv1.{0}.{1}"),
    (
        re.compile(rf"^backbone\.stages\.(\d+)\.(\d+)\.conv(\d)\.{_P}$"),
        "backbone.layer{0+1}.{1}.conv{2}.conv.{3}",
    ),
    (
        re.compile(rf"^backbone\.stages\.(\d+)\.(\d+)\.bn(\d)\.{_P}$"),
        "backbone.layer{0+1}.{1}.conv{2}.bn.{3}",
    ),
    (
        re.compile(rf"^backbone\.stages\.(\d+)\.(\d+)\.shortcut\.(conv|bn)\.{_P}$"),
        "backbone.layer{0+1}.{1}.downsample.{2}.{3}",
    ),
    (re.compile(r"^head\.fc\.(weight|bias)$"), "cls_head.fc_cls.{0}"),
)
_FIELD = re.compile(r"\{(\d)([+-]1)?\}")


def _apply(rules: tuple[tuple[re.Pattern[str], str], ...], key: str) -> str | None:
    for pattern, template in rules:
        match = pattern.match(key)
        if match is None:
            continue
        groups = match.groups()

        def fill(m: re.Match[str], groups: tuple[str, ...] = groups) -> str:
            value = groups[int(m.group(1))]
            return str(int(value) + int(m.group(2))) if m.group(2) else value

        return _FIELD.sub(fill, template)
    return None


def pyskl_to_intint_key(key: str) -> str | None:
    """PYSKL name (``backbone.layer1.0.conv1.bn.weight``) → ours (``backbone.stages.0.0.bn1.weight``).

    ``None`` for names that have no counterpart here (they are reported as unexpected). A DDP ``module.``
    prefix is ignored.
    """
    return _apply(_PYSKL_TO_INTINT, key.removeprefix("module."))


def intint_to_pyskl_key(key: str) -> str:
    """Our ``Recognizer`` state-dict name → the PYSKL name, for exporting checkpoints PYSKL can read."""
    mapped = _apply(_INTINT_TO_PYSKL, key)
    if mapped is None:
        raise KeyError(f"state-dict key {key!r} has no PYSKL counterpart")
    return mapped


def to_pyskl_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A ``Recognizer.state_dict()`` renamed to PYSKL's key names."""
    return {intint_to_pyskl_key(k): v for k, v in state.items()}


def from_pyskl_state_dict(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """A PYSKL state dict renamed to ours, plus the PYSKL keys that have no counterpart."""
    mapped: dict[str, Tensor] = {}
    unexpected: list[str] = []
    for key, value in state.items():
        new = pyskl_to_intint_key(key)
        if new is None:
            unexpected.append(key)
        else:
            mapped[new] = value
    return mapped, unexpected


@dataclass
class LoadReport:
    """What ``load_pyskl_checkpoint`` did: our names loaded / missing / skipped, PYSKL names unexpected."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # head tensors of another class count

    @property
    def head_loaded(self) -> bool:
        return any(k.startswith("head.") for k in self.loaded)


def _read_state_dict(url: str) -> dict[str, Tensor]:
    """Tensors only: ``weights_only=True`` refuses arbitrary objects, so a checkpoint cannot run code."""
    try:
        with fsspec.open(url, "rb") as f:
            raw = torch.load(f, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises UnpicklingError / RuntimeError with the offending global
        raise ValueError(f"checkpoint {url}: cannot be read as a weights-only torch file: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise ValueError(f"checkpoint {url}: expected a dict, got {type(raw).__name__}")
    state = raw.get("state_dict", raw)
    if not isinstance(state, Mapping):
        raise ValueError(f"checkpoint {url}: field 'state_dict' is a {type(state).__name__}, not a dict")
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise ValueError(f"checkpoint {url}: no tensors found (keys: {sorted(map(str, state))[:10]})")
    return tensors


def load_pyskl_checkpoint(model: Recognizer, url: str, *, strict_backbone: bool = True) -> LoadReport:
    """Load a PYSKL / MMAction2 PoseC3D checkpoint (path or fsspec URL) into ``model``.

    A head of another class count (the K400 checkpoint's 400-way head for HMDB51, spec §6.3) is skipped with
    a warning and keeps its fresh init. Missing, unexpected or wrongly shaped backbone tensors raise when
    ``strict_backbone`` (a partially loaded backbone silently trains a different model); everything else is
    reported. BN ``num_batches_tracked`` counters are never required (older checkpoints lack them).
    """
    source, unexpected = from_pyskl_state_dict(_read_state_dict(url))
    own = model.state_dict()
    report = LoadReport(source=url, unexpected=sorted(unexpected))
    to_load: dict[str, Tensor] = {}
    shape_errors: list[str] = []
    for key, value in source.items():
        if key not in own:
            report.unexpected.append(intint_to_pyskl_key(key))
        elif value.shape != own[key].shape:
            if key.startswith("head."):
                report.skipped.append(key)
            else:
                shape_errors.append(
                    f"{intint_to_pyskl_key(key)}: {tuple(value.shape)} vs {tuple(own[key].shape)}"
                )
        else:
            to_load[key] = value
    report.loaded = sorted(to_load)
    report.skipped.sort()
    report.unexpected.sort()
    report.missing = sorted(k for k in own if k not in to_load and k not in report.skipped)
    if report.skipped:
        shape = tuple(source["head.fc.weight"].shape) if "head.fc.weight" in source else "?"
        warnings.warn(
            f"checkpoint {url}: head skipped, its weight shape {shape} (classes × features) does not fit "
            f"this model's {tuple(own['head.fc.weight'].shape)}; the head keeps its fresh init",
            stacklevel=2,
        )

    def backbone(keys: list[str]) -> list[str]:
        return [k for k in keys if k.startswith("backbone.") and not k.endswith("num_batches_tracked")]

    problems = []
    if shape_errors:
        problems.append("backbone shape mismatch: " + "; ".join(shape_errors[:5]))
    if backbone(report.missing):
        problems.append(f"missing backbone tensors: {backbone(report.missing)[:5]}")
    if backbone(report.unexpected):
        problems.append(f"unexpected backbone tensors (PYSKL names): {backbone(report.unexpected)[:5]}")
    if problems and strict_backbone:
        raise ValueError(
            f"checkpoint {url} does not fit this backbone ({model.cfg}): " + " | ".join(problems)
        )
    if problems or report.unexpected or [k for k in report.missing if not k.endswith("num_batches_tracked")]:
        warnings.warn(
            f"checkpoint {url}: partial load; missing={report.missing[:5]} unexpected={report.unexpected[:5]}"
            + (f" problems={problems}" if problems else ""),
            stacklevel=2,
        )
    with torch.no_grad():
        model.load_state_dict(to_load, strict=False)
    return report
