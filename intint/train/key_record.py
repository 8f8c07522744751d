"""A debugging record of what each rank trains on: the keys of its batches, one JSON line per batch.

Switched on per run by a file named `KEY_RECORD_MARKER` in its (local) run folder, read when a worker group
starts, so it reaches the Ray workers without a config field or an environment variable. Each rank then
appends to `keys/rank<r>-attempt<n>.jsonl` (`n`: the run's restarts so far), e.g. for a test that checks
that an epoch resumed on another number of workers saw every video exactly once.
"""

from __future__ import annotations

import json
import os

from intint.store import fsio

KEY_RECORD_MARKER = "record-keys"
KEY_RECORD_FOLDER = "keys"


def key_record_path(run_folder: str, rank: int, attempt: int) -> str | None:
    """This rank's record file when the run folder holds `KEY_RECORD_MARKER`, else None (also for remote
    storage, where appending is not possible)."""
    if not fsio.is_local(run_folder) or not fsio.exists(fsio.join(run_folder, KEY_RECORD_MARKER)):
        return None
    _, path = fsio.url_to_fs(fsio.join(run_folder, KEY_RECORD_FOLDER))
    os.makedirs(path, exist_ok=True)
    return os.path.join(path, f"rank{rank}-attempt{attempt}.jsonl")


def append_keys(path: str | None, **line: object) -> None:
    """Append one batch's line (its keys and where it was trained) to `path`; nothing when None."""
    if path is not None:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")


def read_key_records(run_folder: str) -> list[dict]:
    """Every recorded batch line of a run, in file then line order."""
    _, path = fsio.url_to_fs(fsio.join(run_folder, KEY_RECORD_FOLDER))
    lines = []
    for name in sorted(os.listdir(path)) if os.path.isdir(path) else []:
        with open(os.path.join(path, name), encoding="utf-8") as records:
            lines += [json.loads(line) for line in records if line.strip()]
    return lines
