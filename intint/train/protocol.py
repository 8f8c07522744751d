"""The test protocol of a training run: which epoch it tests, chosen how, and the record of that choice.

The reference tests each pathway's last checkpoint, and that is the default (`select="last"`). Choosing
the best epoch instead (`select="best"`) is only allowed on a validation set disjoint from the test split
(`intint.config.check_best_selection`): a val split, or videos held out of train (`data.val_fraction`).
The choice uses validation scores only (`Progress.observe`, `select_epoch`); the test split is scored
once, after it. `record_tested` is what results.json says about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from intint.config import Select, TrainConfig


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint so a restart continues the epoch count and best."""

    next_epoch: int = 0
    global_step: int = 0
    best_epoch: int = -1  # by validation top-1 on a split disjoint from the test split; -1: none tracked
    best_score: float = -1.0
    resumes: int = 0

    def observe(self, epoch: int, score: float) -> bool:
        """Record an epoch's validation score; True when it is the best so far (ties go to the later epoch,
        so a plateau keeps the newest weights)."""
        if score >= self.best_score:
            self.best_score, self.best_epoch = score, epoch
            return True
        return False


def select_epoch(select: Select, val_scores: Sequence[float]) -> int:
    """The epoch a run of `len(val_scores)` epochs tests: the last one, or the best by validation score
    (the rule the loop applies epoch by epoch through `Progress.observe`). Only validation scores enter."""
    if not val_scores:
        raise ValueError("select_epoch: no epoch was trained")
    if select == "last":
        return len(val_scores) - 1
    progress = Progress()
    for epoch, score in enumerate(val_scores):
        progress.observe(epoch, score)
    return progress.best_epoch


def record_tested(cfg: TrainConfig, progress: Progress) -> dict[str, Any]:
    """results.json's `tested`: `{"epoch": N, "weights": "last" | "best", "selected_on": split | None}`."""
    if progress.next_epoch < 1:
        raise RuntimeError(f"run {cfg.name}: no epoch was trained, so there are no weights to test")
    if cfg.select == "last":
        return {"epoch": progress.next_epoch - 1, "weights": "last", "selected_on": None}
    if progress.best_epoch < 0:
        raise RuntimeError(f"run {cfg.name}: select=best, but no validation score was recorded")
    return {"epoch": progress.best_epoch, "weights": "best", "selected_on": cfg.data.selection_split}


def protocol_line(cfg: TrainConfig, device_type: str) -> str:
    """One log line saying what a run validates, which weights it tests and in which precision."""
    val, selection = cfg.data.validation_split, cfg.data.selection_split
    if val is None:
        validation = "no per-epoch validation"
    elif selection is None:
        validation = f"per-epoch validation on the test split {val!r} (monitoring only, never selects)"
    else:
        validation = f"per-epoch validation on {val!r}"
    tested = "the last epoch" if cfg.select == "last" else f"the best epoch on {selection!r}"
    if not cfg.bf16:
        precision = "fp32"
    else:
        precision = "bf16 autocast" if device_type == "cuda" else "fp32 (bf16 autocast is GPU-only)"
    return f"protocol: {validation}; tests {tested} on {cfg.data.test_split!r}; precision {precision}"
