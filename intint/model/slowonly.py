"""SlowOnly 3D-ResNet pathways, the I3D head and the two-pathway wrapper.

The architecture is PoseC3D's ``ResNet3dSlowOnly`` exactly as the Int&Int reference configures it
(docs/method.md §6.1, §6.2): Bottleneck3d blocks (expansion 4) with '3x1x1' temporal inflation, a 1×7×7 stem
without striding, only the last stage's features go to the head. Parameter counts and feature shapes match
the reference, so PYSKL / MMAction2 checkpoints (e.g. the K400 PoseC3D weights HMDB51 starts from) load
through a key-name mapping (``intint.model.pyskl_checkpoint``) instead of a copy of PYSKL's registries.

The two pathways are independent networks. ``TwoPathwayModel`` only puts them in one module so that one data
step feeds both; the summed loss gives each pathway exactly the gradients of a separate run (the reference
trains them in separate runs, docs/method.md §6.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from intint.pose.sampling import PATHWAYS

__all__ = [
    "PATHWAYS",
    "SlowOnlyConfig",
    "Bottleneck3d",
    "ResNet3dSlowOnly",
    "I3DHead",
    "Recognizer",
    "TwoPathwayModel",
    "average_views",
    "to_channels_last",
]

EXPANSION = 4  # Bottleneck3d output channels = planes * 4 (ResNet-50 style)


# --------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class SlowOnlyConfig:
    """One pathway's network: ``ResNet3dSlowOnly`` backbone + ``I3DHead`` (docs/method.md §6.1 table).

    Defaults are the FineGYM backbone; the run presets (``intint.config``) set the sizes that differ.
    ``num_classes`` has no default because a wrong class count only shows up as a silently useless head.
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
        from scratch at lr 0.4 (docs/method.md §6.1, mmcv ``kaiming_init`` + ``zero_init_residual``).
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

        The views are averaged by ``average_views``. Gradient mode is left to the caller (wrap evaluation in
        ``torch.inference_mode()``).
        """
        if x.dim() != 6:
            raise ValueError(f"predict_views expects B×N×K×T×H×W input, got shape {tuple(x.shape)}")
        b, n = x.shape[:2]
        logits = self(x.reshape(b * n, *x.shape[2:]))
        return average_views(logits.reshape(b, n, -1))


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
        """Cross-entropy per pathway (loss weight 1, no smoothing, docs/method.md §6.2); train on the sum."""
        return {name: F.cross_entropy(value.float(), labels) for name, value in logits.items()}


def average_views(logits: Tensor) -> Tensor:
    """``B×N×C`` logits (N test views per video) → ``B×C`` probabilities: softmax per view, mean over views.

    Averaging probabilities rather than logits is the reference's ``average_clips='prob'`` (docs/method.md
    §6.2). The softmax is done in float32 so bf16 autocast does not quantise the probabilities that fusion
    adds up.
    """
    if logits.dim() != 3:
        raise ValueError(f"average_views expects B×N×C logits, got shape {tuple(logits.shape)}")
    return logits.float().softmax(dim=-1).mean(dim=1)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Convert parameters to ``channels_last_3d`` (NDHWC), the layout cuDNN's fast 3D conv kernels want.

    Feed inputs converted with ``x.contiguous(memory_format=torch.channels_last_3d)`` as well.
    """
    return model.to(memory_format=torch.channels_last_3d)
