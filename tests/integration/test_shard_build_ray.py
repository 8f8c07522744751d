"""`intint build-shards --ray` (issue 2): the Ray executor writes the same bytes as the process pool."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from intint.store import build
from intint.testing import synthetic
from intint.train import shard_tasks

pytestmark = pytest.mark.ray


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_ray_build_is_byte_identical_to_local(ray_session, tmp_path: Path) -> None:
    raw = synthetic.make_annotations(24, 3, seed=4, frames=(20, 60))
    src = tmp_path / "a.pkl"
    synthetic.write_pickle(raw, str(src))

    def config(out: Path) -> build.BuildConfig:
        return build.BuildConfig(input=str(src), output=str(out), progress=False, shard_size=6, workers=2)

    build.build(config(tmp_path / "local"))
    build.build(config(tmp_path / "ray"), run_tasks=shard_tasks.run_ray)
    assert file_hashes(tmp_path / "ray") == file_hashes(tmp_path / "local")
