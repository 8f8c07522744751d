"""Every tar read goes through fsspec (issue 15 item 6): no webdataset ``gopen``, which runs ``curl`` for
http(s):// and ``gsutil cat`` for gs:// in subprocesses (slow, silent on partial reads, and absent from
slim images).

What a user relies on: a shard set served over http(s) or kept on an object store streams, and its runs
of samples read with range reads, in this process through fsspec, spawning nothing; the same videos as
from the local copy.
"""

from __future__ import annotations

import ast
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import intint
from intint.store import fsio
from intint.store.shardstream import shard_refs, shard_videos

NUM_CLASSES = 4  # tests/conftest.py's tiny set
_SPAWN_EVENTS = ("subprocess.Popen", "os.system", "os.posix_spawn", "os.exec", "os.fork", "os.spawn")
_spawned: list[str] | None = None  # recording while a list


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _spawned is not None and event.startswith(_SPAWN_EVENTS):
        _spawned.append(f"{event} {str(args)[:200]}")


sys.addaudithook(_audit)  # audit hooks stay for the process: it records only inside `_no_spawns`


class _NoSpawns:
    def __enter__(self) -> list[str]:
        global _spawned
        _spawned = []
        return _spawned

    def __exit__(self, *exc: object) -> None:
        global _spawned
        _spawned = None


def _keys(url: str, split: str, **kw: Any) -> dict[int, list[str]]:
    return {ref.index: [v.key for v in shard_videos(ref, NUM_CLASSES, None, _no_skips, verify=True, **kw)]
            for ref in shard_refs(url, split)}


def _no_skips(n: int, message: str) -> None:
    raise AssertionError(message)


@pytest.fixture
def http_root(tiny_shards: Path) -> Iterator[str]:
    """The tiny set served by ``python -m http.server`` (no Range support: runs fall back to streaming)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(tiny_shards)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(url + "/manifest.json", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_an_http_shard_set_streams_through_fsspec_in_process(tiny_shards: Path, http_root: str) -> None:
    local = _keys(str(tiny_shards), "train")
    local_runs = _keys(str(tiny_shards), "train", start=1, stop=4)
    with _NoSpawns() as spawned:
        assert _keys(http_root, "train") == local
        assert _keys(http_root, "train", start=1, stop=4) == local_runs
    assert spawned == []


def test_an_s3_shard_set_reads_runs_with_range_reads(s3, tiny_shards: Path) -> None:
    """On a real S3 API server: whole shards and runs of samples equal the local set's, with nothing
    spawned by the reads."""
    local = _keys(str(tiny_shards), "val")
    runs = {(a, b): _keys(str(tiny_shards), "val", start=a, stop=b) for a, b in ((0, 1), (1, 3), (2, None))}
    # the run's one S3 server (`s3` in tests/conftest.py)
    s3.make_bucket("bkt")
    fs, _ = fsio.url_to_fs("s3://bkt")
    for path in tiny_shards.iterdir():
        fs.put_file(str(path), f"bkt/set/{path.name}")
    with _NoSpawns() as spawned:
        assert _keys("s3://bkt/set", "val") == local
        for (a, b), want in runs.items():
            assert _keys("s3://bkt/set", "val", start=a, stop=b) == want
    assert spawned == []


def test_no_module_of_the_package_uses_webdataset_gopen() -> None:
    """``gopen`` (webdataset's opener, and its scheme table) is named nowhere in intint's code."""
    root = Path(intint.__file__).parent
    users = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        if "gopen" not in source:
            continue
        tree = ast.parse(source, filename=str(path))
        for node in ast.walk(tree):
            name = (node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name)
                    else node.module or "" if isinstance(node, ast.ImportFrom) else "")
            names = [a.name for a in node.names] if isinstance(node, ast.Import | ast.ImportFrom) else []
            if "gopen" in name or any("gopen" in n for n in names):
                users.append(f"{path.relative_to(root)}:{node.lineno}")
    assert users == []
