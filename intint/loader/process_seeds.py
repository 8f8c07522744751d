"""Seeding a process's global RNGs from the run's seed, and what every loader worker process does first.

The loader's own randomness draws from explicit Generators keyed by (seed, epoch, video, pathway)
(`intint.pose.sampling.clip_rng`), but library code may still draw from the global ones (Python `random`,
NumPy's legacy global, torch's default generator). torch seeds those in a DataLoader worker from the main
process's torch RNG, i.e. from however far training has drawn; `init_worker` seeds them from
(run seed, rank, worker) instead and fixes the worker to one torch thread (the process count is the
loader's parallelism), so a loader worker is the same on every run of the same command.
`intint.train.determinism` seeds the training processes with `seed_global_rngs` too.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import get_worker_info

__all__ = ["derived_seed", "seed_global_rngs", "init_worker"]


def derived_seed(*entropy: int) -> int:
    """A 32-bit seed from integers such as (run seed, rank, worker): distinct streams, reproducible."""
    return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1)[0])


def seed_global_rngs(*entropy: int) -> int:
    """Seed Python `random`, NumPy's global RNG and torch (CPU and CUDA) from `entropy`; returns the seed."""
    seed = derived_seed(*entropy)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


def init_worker(worker_id: int) -> None:
    """`DataLoader(worker_init_fn=...)`: one torch thread, global RNGs from (seed, rank, worker_id).

    The seed and rank come from the worker's dataset layout (`intint.loader.streams`); a dataset without
    one keeps torch's per-worker seed.
    """
    torch.set_num_threads(1)
    info = get_worker_info()
    layout = getattr(info.dataset, "layout", None) if info is not None else None
    if layout is not None:
        seed_global_rngs(layout.cfg.seed, layout.rank, worker_id)
