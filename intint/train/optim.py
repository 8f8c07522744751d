"""SGD and the reference's learning-rate schedules, one optimizer + scheduler per pathway.

Each pathway gets its own SGD and schedule so that training both pathways in one job equals two
separate runs (docs/method.md §6.2: the reference trains them separately): gradient clipping, momentum and
weight decay see only that pathway's parameters.

The schedules follow mmcv's runner hooks (docs/method.md §6.3): cosine annealing per iteration from the scaled
rate to `min_lr` with no warm-up, or a step decay by `gamma` at the listed epochs. The factor is a pure
function of the iteration so the schedule is resumable from the checkpointed step alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
