"""Running the repository's job scripts (jobs/*.py) in the test process, on the tiny preset."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_job(name: str) -> ModuleType:
    """jobs/<name>.py as a module (the scripts are not a package); call its `main(argv)`."""
    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unique_name(prefix: str) -> str:
    """A run name no earlier run used: Ray Train V2 resumes a run whose name and storage path exist."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def tiny_train_args(shards: Path, storage: Path, name: str, *extra: str) -> list[str]:
    """Arguments of a tiny 2-worker training job (1 loader process per worker) on `shards`."""
    return ["--preset", "tiny", "--shards", str(shards), "--storage-path", str(storage), "--name", name,
            "--num-workers", "2", "--loader-workers", "1", *extra]
