"""Shared pytest setup: the `ray` marker, and what the suite builds once per run.

- `tiny_shards`: a small shard set every Ray test trains on (read-only: a test that changes a shard set
  builds its own).
- `s3`: a real S3 API server (moto) for the run, started before the shared Ray (whose workers inherit its
  endpoint).
- `ray_session`: one local Ray for every Ray test, started on first use and shut down at the end of the
  run (a run of `-m "not ray"` never starts it). Ray Train V2 resumes a run whose storage path and name
  already exist (docs/platform-notes.md §1b), so each run on it needs its own folder or a unique name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TINY_CLASSES = 4
TINY_VIDEOS = 48
TINY_SPLITS = {"train": 0.5, "val": 0.25, "test": 0.25}
TINY_SHARDS_PER_SPLIT = 4  # 2 ranks × 1-2 loader workers each get a shard
RAY_CPUS = 4  # two 2-worker runs at once (the ablation sweep's concurrency); oversubscribes 2 cores


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ray: starts Ray (slow: ~20-60 s each on a 2-core machine)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests on the shared Ray run last (otherwise in collection order): the others then run without
    an idle Ray beside them, and `-x` stops at a fast failure first. It also keeps the session's Ray from
    holding Ray's fixed dashboard-agent port (52365) while tests/integration/test_cluster.py starts a
    `ray start` head, whose job agent needs that port to accept job submissions."""
    items.sort(key=lambda item: "ray_session" in getattr(item, "fixturenames", ()))


def build_tiny_shards(out: Path) -> Path:
    """48 short synthetic videos of 4 classes: 24 train, 12 val, 12 test, 4 shards per split."""
    from intint.store import build
    from intint.testing import synthetic

    raw = synthetic.make_annotations(TINY_VIDEOS, TINY_CLASSES, splits=TINY_SPLITS, seed=0, frames=(20, 40))
    build.build(build.BuildConfig(input="synthetic", output=str(out), num_classes=TINY_CLASSES,
                                  num_shards=TINY_SHARDS_PER_SPLIT, workers=1, progress=False,
                                  modes=("reference",)), raw=raw)
    return out


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared tiny shard set (see `build_tiny_shards`); tests only read it."""
    return build_tiny_shards(tmp_path_factory.mktemp("tiny") / "shards")


@pytest.fixture(scope="session")
def s3() -> Iterator[Any]:
    """One real S3 API server (moto) for the run; its endpoint and dummy credentials are in os.environ.

    Started before the shared Ray so Ray's workers inherit the endpoint, as a user's workers do.
    """
    from intint.testing.s3_server import s3_server

    with s3_server() as server:
        yield server


@pytest.fixture(scope="session")
def ray_session(s3: Any) -> Iterator[Any]:
    """One private local Ray (4 logical CPUs, no dashboard) shared by every Ray test of the run.

    intint's entry points find it initialised and use it (they start a Ray of their own only when none
    is). `address="local"` keeps a `RAY_ADDRESS` of the calling shell from attaching the tests to a
    cluster.
    """
    from intint.train import launch

    launch.ray_env_defaults()
    os.environ.setdefault("WANDB_SILENT", "true")
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False)
    yield ray
    if started:
        ray.shutdown()
