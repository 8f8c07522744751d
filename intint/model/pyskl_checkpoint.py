"""Import of PYSKL / MMAction2 PoseC3D checkpoints into a ``Recognizer``, and export of one in that format.

Our modules have other names than PYSKL's registries build (``stem`` for ``conv1``, ``stages.0`` for
``layer1``, ``bn1`` for ``conv1.bn``, ...), so a checkpoint loads through a key-name mapping. One table of
name pairs describes it; both directions are read from that table, so an exported checkpoint
(``save_pyskl_checkpoint``) imports back to the same tensors. The file is read weights-only, so a
checkpoint from shared storage cannot run code.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import fsspec
import torch
from torch import Tensor

from intint.model.slowonly import Recognizer
from intint.store import fsio

__all__ = [
    "LoadReport",
    "pyskl_to_intint_key",
    "intint_to_pyskl_key",
    "from_pyskl_state_dict",
    "to_pyskl_state_dict",
    "load_pyskl_checkpoint",
    "save_pyskl_checkpoint",
]

# What each {field} of a name template matches. PYSKL numbers layers from 1 ({layer}), we number stages from
# 0 ({stage}); every other field is copied as it is.
_FIELDS = {
    "module": r"conv|bn",
    "tensor": r"weight|bias|running_mean|running_var|num_batches_tracked",
    "param": r"weight|bias",
    "layer": r"\d+",
    "stage": r"\d+",
    "block": r"\d+",
    "k": r"\d",
}
# (PYSKL name, our name). ConvModule = ".conv" + ".bn"; the convs/BNs of a block are conv{k}.conv /
# conv{k}.bn in PYSKL and conv{k} / bn{k} here.
_NAME_PAIRS: tuple[tuple[str, str], ...] = (
    ("backbone.conv1.{module}.{tensor}", "backbone.stem.{module}.{tensor}"),
    ("backbone.layer{layer}.{block}.conv{k}.conv.{tensor}",
     "backbone.stages.{stage}.{block}.conv{k}.{tensor}"),
    ("backbone.layer{layer}.{block}.conv{k}.bn.{tensor}", "backbone.stages.{stage}.{block}.bn{k}.{tensor}"),
    (
        "backbone.layer{layer}.{block}.downsample.{module}.{tensor}",
        "backbone.stages.{stage}.{block}.shortcut.{module}.{tensor}",
    ),
    ("cls_head.fc_cls.{param}", "head.fc.{param}"),
)


def _compile(template: str) -> re.Pattern[str]:
    """A name template → a regex matching the whole name, one named group per field."""
    parts = re.split(r"\{(\w+)\}", template)  # literal, field, literal, field, ..., literal
    body = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>{_FIELDS[part]})"
                   for i, part in enumerate(parts))
    return re.compile(f"^{body}$")


_PATTERNS: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = tuple(
    (_compile(pyskl), _compile(ours)) for pyskl, ours in _NAME_PAIRS
)


def _rename(key: str, source: int) -> str | None:
    """``key`` renamed from side ``source`` (0 = PYSKL, 1 = ours) of the name table to the other side."""
    for patterns, templates in zip(_PATTERNS, _NAME_PAIRS, strict=True):
        match = patterns[source].match(key)
        if match is None:
            continue
        fields = match.groupdict()
        if "layer" in fields:
            fields["stage"] = str(int(fields["layer"]) - 1)
        elif "stage" in fields:
            fields["layer"] = str(int(fields["stage"]) + 1)
        return templates[1 - source].format(**fields)
    return None


def pyskl_to_intint_key(key: str) -> str | None:
    """PYSKL name (``backbone.layer1.0.conv1.bn.weight``) → ours (``backbone.stages.0.0.bn1.weight``).

    ``None`` for names that have no counterpart here (they are reported as unexpected). A DDP ``module.``
    prefix is ignored.
    """
    return _rename(key.removeprefix("module."), 0)


def intint_to_pyskl_key(key: str) -> str:
    """Our ``Recognizer`` state-dict name → the PYSKL name (error messages speak the checkpoint's names)."""
    mapped = _rename(key, 1)
    if mapped is None:
        raise KeyError(f"state-dict key {key!r} has no PYSKL counterpart")
    return mapped


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


def to_pyskl_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A ``Recognizer`` state dict renamed to PYSKL's names (KeyError for a tensor without a counterpart)."""
    return {intint_to_pyskl_key(key): value for key, value in state.items()}


def save_pyskl_checkpoint(model: Recognizer, url: str, meta: Mapping[str, Any] | None = None) -> str:
    """Write ``model`` as a PYSKL / MMAction2 checkpoint, ``{"meta": meta, "state_dict": PYSKL names}``, to
    a path or fsspec URL, atomically; CPU tensors and plain values only, so it loads weights-only."""
    state = {k: v.detach().to("cpu", copy=True) for k, v in to_pyskl_state_dict(model.state_dict()).items()}
    buffer = io.BytesIO()
    torch.save({"meta": dict(meta or {}), "state_dict": state}, buffer)
    fsio.atomic_write(url, buffer.getvalue())
    return url


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


def _sort_tensors(report: LoadReport, source: Mapping[str, Tensor], own: Mapping[str, Tensor]
                  ) -> tuple[dict[str, Tensor], list[str]]:
    """Split the renamed checkpoint into tensors to load and the rest (recorded in ``report``).

    Returns the tensors to load and the backbone shape errors; a head of another shape is skipped.
    """
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
    return to_load, shape_errors


def _backbone_problems(report: LoadReport, shape_errors: list[str]) -> list[str]:
    """What makes the load a different backbone: wrong shapes, missing or unexpected backbone tensors.

    BN ``num_batches_tracked`` counters are never required (older checkpoints lack them).
    """

    def backbone(keys: list[str]) -> list[str]:
        return [k for k in keys if k.startswith("backbone.") and not k.endswith("num_batches_tracked")]

    problems = []
    if shape_errors:
        problems.append("backbone shape mismatch: " + "; ".join(shape_errors[:5]))
    if backbone(report.missing):
        problems.append(f"missing backbone tensors: {backbone(report.missing)[:5]}")
    if backbone(report.unexpected):
        problems.append(f"unexpected backbone tensors (PYSKL names): {backbone(report.unexpected)[:5]}")
    return problems


def load_pyskl_checkpoint(model: Recognizer, url: str, *, strict_backbone: bool = True) -> LoadReport:
    """Load a PYSKL / MMAction2 PoseC3D checkpoint (path or fsspec URL) into ``model``.

    A head of another class count (the K400 checkpoint's 400-way head for HMDB51, docs/method.md §6.3) is
    skipped with a warning and keeps its fresh init. Missing, unexpected or wrongly shaped backbone tensors
    raise when ``strict_backbone`` (a partially loaded backbone silently trains a different model);
    everything else is reported. BN ``num_batches_tracked`` counters are never required.
    """
    source, unexpected = from_pyskl_state_dict(_read_state_dict(url))
    own = model.state_dict()
    report = LoadReport(source=url, unexpected=sorted(unexpected))
    to_load, shape_errors = _sort_tensors(report, source, own)
    if report.skipped:
        shape = tuple(source["head.fc.weight"].shape) if "head.fc.weight" in source else "?"
        warnings.warn(
            f"checkpoint {url}: head skipped, its weight shape {shape} (classes × features) does not fit "
            f"this model's {tuple(own['head.fc.weight'].shape)}; the head keeps its fresh init",
            stacklevel=2,
        )
    problems = _backbone_problems(report, shape_errors)
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
