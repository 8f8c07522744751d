"""fsspec helpers: URL joining, atomic writes, moves and removals that stay inside a folder, SHA-256.

Every file of a shard set is written through :func:`atomic_open`, so a crash (or a killed Ray task)
never leaves a partial file under a final name: bytes go to ``<final>.tmp-<uuid>`` and are renamed
(``os.replace`` locally, fsspec ``mv`` elsewhere) only once the writer closed cleanly. Readers can
then trust that a file that exists is complete, and the manifest's checksums say whether it is the
one the build meant.

File names that come from data (a manifest's shard entries) are joined with :func:`child`, which
refuses anything but a plain name, so no URL built from them leaves its folder; :func:`remove_file`
never follows a symbolic link and never removes a folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

CHUNK = 1 << 20


def url_to_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Resolve a path or fsspec URL into (filesystem, path inside it)."""
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def join(base: str, name: str) -> str:
    """Join a file name onto a folder URL without mangling the scheme (``s3://b/x`` + ``y``)."""
    return base.rstrip("/") + "/" + name


def child(base: str, name: str) -> str:
    """``base`` + ``/name`` for a plain file name only: no ``/`` or ``\\``, not ``.``/``..``, not empty
    (a ValueError otherwise), so the result always names something directly inside ``base``."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"{base}: {name!r:.80} is not a plain file name inside the folder")
    return join(base, name)


def is_local(url: str) -> bool:
    """True when ``url`` is on the local disk (plain path or ``file://``)."""
    fs, _ = url_to_fs(url)
    return isinstance(fs, LocalFileSystem)


def is_process_local(url: str) -> bool:
    """True when the filesystem lives inside this process (``memory://``).

    Such a filesystem is invisible to worker processes and Ray tasks, so the builder must write it
    from the main process.
    """
    fs, _ = url_to_fs(url)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "memory" in protocols


def makedirs(url: str) -> None:
    """Create a folder (a no-op on object stores that have no folders)."""
    fs, path = url_to_fs(url)
    fs.makedirs(path, exist_ok=True)


def exists(url: str) -> bool:
    fs, path = url_to_fs(url)
    return bool(fs.exists(path))


def list_names(url: str) -> list[str]:
    """The names of the entries directly inside folder ``url`` ([] when it does not exist)."""
    fs, path = url_to_fs(url)
    if not fs.exists(path):
        return []
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))


def move(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst`` (same filesystem), replacing ``dst``: atomic on a local disk."""
    fs, spath = url_to_fs(src)
    _, dpath = url_to_fs(dst)
    if isinstance(fs, LocalFileSystem):
        os.replace(spath, dpath)
    else:
        fs.mv(spath, dpath)


def remove_file(url: str) -> bool:
    """Delete the file at ``url`` if there is one; a symbolic link is removed itself, never what it
    points to, and a folder is left alone. True if something was deleted."""
    fs, path = url_to_fs(url)
    if isinstance(fs, LocalFileSystem):
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
            return True
        return False
    if fs.isfile(path):
        fs.rm(path)
        return True
    return False


def remove_tree(url: str) -> None:
    """Delete the folder at ``url`` and everything in it (a symbolic link: only the link)."""
    fs, path = url_to_fs(url)
    if isinstance(fs, LocalFileSystem):
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)
    elif fs.exists(path):
        fs.rm(path, recursive=True)


class _HashingWriter:
    """File-like wrapper that hashes what passes through, so a file is hashed while it is written
    instead of being read back afterwards (shards are 100-200 MB)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._raw.write(data)

    def flush(self) -> None:
        self._raw.flush()

    def tell(self) -> int:
        return self.size

    @property
    def closed(self) -> bool:
        return bool(getattr(self._raw, "closed", False))

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


@contextmanager
def atomic_open(url: str) -> Iterator[_HashingWriter]:
    """Open ``url`` for binary writing; the file appears under its name only if the block succeeds.

    Yields a writer whose ``hexdigest()`` is the SHA-256 of everything written. On an exception
    the temporary file is removed and the exception propagates.
    """
    fs, path = url_to_fs(url)
    parent = fs._parent(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    committed = False
    try:
        with fs.open(tmp, "wb") as raw:
            writer = _HashingWriter(raw)
            yield writer
        if isinstance(fs, LocalFileSystem):
            os.replace(tmp, path)
        else:
            fs.mv(tmp, path)
        committed = True
    finally:
        if not committed:
            try:
                if fs.exists(tmp):
                    fs.rm(tmp)
            except OSError:
                pass


def atomic_write(url: str, data: bytes) -> str:
    """Write ``data`` to ``url`` atomically; returns its SHA-256 hex digest."""
    with atomic_open(url) as f:
        f.write(data)
    return f.hexdigest()


def read_bytes(url: str) -> bytes:
    fs, path = url_to_fs(url)
    with fs.open(path, "rb") as f:
        return f.read()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_url(url: str) -> str:
    """SHA-256 of a file at any fsspec URL, read in 1 MiB chunks (never whole into memory)."""
    fs, path = url_to_fs(url)
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
