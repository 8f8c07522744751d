"""SGD and the reference's learning-rate schedules, one optimizer + scheduler per pathway.

Each pathway gets its own SGD and schedule so that training both pathways in one job equals two
separate runs (docs/method.md §6.2: the reference trains them separately): gradient clipping, momentum and
weight decay see only that pathway's parameters.

The schedules follow mmcv's runner hooks (docs/method.md §6.3): cosine annealing per iteration from the scaled
rate to `min_lr` with no warm-up, or a step decay by `gamma` at the listed epochs. The factor is a pure
function of the iteration so the schedule is resumable from the checkpointed step alone:
`restore_scheduler` takes only that position from a checkpoint and keeps the schedule this run built, so
a run resumed with more epochs anneals over the new total (and one resumed on another number of workers
keeps its share of epochs done).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from intint.config import OptimConfig


def cosine_lr(base_lr: float, min_lr: float, iteration: int, total_iterations: int) -> float:
    """mmcv `annealing_cos`: min + ½(base − min)(1 + cos(π·it/total)); `base_lr` at 0, `min_lr` at the end."""
    progress = min(max(iteration, 0), total_iterations) / max(total_iterations, 1)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def step_lr(base_lr: float, epoch: int, steps: tuple[int, ...], gamma: float) -> float:
    """mmcv `StepLrUpdater` by epoch: base × gamma^(number of steps ≤ epoch), epochs counted from 0."""
    return base_lr * gamma ** sum(1 for s in steps if epoch >= s)


@dataclass
class LRFactor:
    """Multiplier of the scaled base rate at an iteration, for `torch.optim.lr_scheduler.LambdaLR`.

    A callable object (not a closure) so LambdaLR saves its fields in `state_dict` as plain numbers,
    which `torch.load(weights_only=True)` can read back.
    """

    base_lr: float
    min_lr: float
    schedule: str
    steps: tuple[int, ...]
    gamma: float
    iterations_per_epoch: int
    total_iterations: int

    def __call__(self, iteration: int) -> float:
        if self.schedule == "cosine":
            lr = cosine_lr(self.base_lr, self.min_lr, iteration, self.total_iterations)
        elif self.schedule == "step":
            lr = step_lr(self.base_lr, iteration // max(self.iterations_per_epoch, 1), self.steps, self.gamma)
        else:
            raise ValueError(f"optim.schedule must be 'cosine' or 'step', got {self.schedule!r}")
        return lr / self.base_lr


def build_optimizer(params, cfg: OptimConfig, lr: float) -> torch.optim.SGD:
    """SGD with weight decay on every parameter (the reference applies it to BN and biases too)."""
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.nesterov)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, lr: float, iterations_per_epoch: int,
                    epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration scheduler: call `.step()` after every optimizer step."""
    factor = LRFactor(base_lr=lr, min_lr=cfg.min_lr, schedule=cfg.schedule, steps=tuple(cfg.steps),
                      gamma=cfg.gamma, iterations_per_epoch=iterations_per_epoch,
                      total_iterations=iterations_per_epoch * epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def restore_scheduler(scheduler: torch.optim.lr_scheduler.LambdaLR, saved: Mapping[str, Any]) -> None:
    """Continue `scheduler` (built by `build_scheduler` for this run) from a checkpointed scheduler's state.

    Only the position (iterations done) comes from `saved`; the schedule itself (base rate, iterations per
    epoch, total iterations) stays the one just built from the run's config. `LambdaLR.load_state_dict`
    would restore the old `LRFactor` fields too, so a finished cosine run resumed with more epochs would
    keep its old total and train the new epochs at `min_lr`. When the iterations per epoch differ (another
    number of workers), the position is rescaled so the same share of epochs counts as done. The
    optimizer's rates are set to the schedule's rate at that position (call after loading the optimizer).
    """
    done = int(saved["last_epoch"])
    factor = scheduler.lr_lambdas[0]
    saved_factors = saved.get("lr_lambdas") or [None]
    saved_per_epoch = (saved_factors[0] or {}).get("iterations_per_epoch")
    if isinstance(factor, LRFactor) and saved_per_epoch and saved_per_epoch != factor.iterations_per_epoch:
        done = round(done * factor.iterations_per_epoch / saved_per_epoch)
    scheduler.last_epoch = done
    scheduler._step_count = done + 1  # LambdaLR's own counter (its call-order warning)
    rates = [base * fn(done) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)]
    for group, rate in zip(scheduler.optimizer.param_groups, rates, strict=True):
        group["lr"] = rate
    scheduler._last_lr = rates  # what get_last_lr() returns
