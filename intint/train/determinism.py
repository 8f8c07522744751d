"""Reproducible training: every RNG seeded from the run's seed, fixed thread counts, deterministic kernels.

The same command twice on the same machine gives the identical results.json. What could differ between two
runs, and what fixes it, on each Ray Train worker (`make_reproducible`, called first thing in
`intint.train.loop.train_loop_per_worker`):

- Thread count: torch's CPU kernels split reductions by thread, so the count changes the rounding. Ray
  sets `OMP_NUM_THREADS` from the worker's CPUs only when the launching shell has not set it; here the
  count is the config's `cpus_per_worker`, whatever the shell says. Loader processes use one thread each
  (`intint.loader.process_seeds.init_worker`).
- Global RNGs (Python `random`, NumPy's global, torch): seeded per rank from (seed, rank). The model's
  initial weights and the dropout stream are seeded again by the loop itself (same init on every rank,
  per-rank dropout); the loader draws from explicit Generators keyed by the seed.
- Kernels: `torch.use_deterministic_algorithms(True)` on CPU. On CUDA, cuDNN's autotuner off and its
  deterministic algorithms on, cuBLAS's fixed workspace, and deterministic algorithms with `warn_only`
  (an op without a deterministic CUDA kernel warns instead of stopping the run).

Wall-clock figures never go into results.json, so the file compares byte for byte.
"""

from __future__ import annotations

import logging
import os

import torch

from intint.config import TrainConfig
from intint.loader.process_seeds import seed_global_rngs

log = logging.getLogger(__name__)

CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs for deterministic results (CUBLAS_WORKSPACE_CONFIG)


def deterministic_kernels(device: torch.device) -> None:
    """Deterministic torch kernels for `device` (strict on CPU, warn-only on CUDA; see the module doc)."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(True)


def make_reproducible(cfg: TrainConfig, rank: int, device: torch.device) -> int:
    """Fix this training process's threads (`cpus_per_worker`), seed its RNGs from (seed, rank) and switch
    on deterministic kernels; returns the seed its global RNGs got."""
    torch.set_num_threads(cfg.cpus_per_worker)
    seed = seed_global_rngs(cfg.seed, rank)
    deterministic_kernels(device)
    log.debug("rank %d: %d torch threads, global RNG seed %d, deterministic kernels on %s", rank,
              cfg.cpus_per_worker, seed, device.type)
    return seed
