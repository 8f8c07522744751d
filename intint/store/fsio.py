"""fsspec helpers: URL joining, atomic writes, moves and removals that stay inside a folder, SHA-256.

Every file of a shard set is written through :func:`atomic_open`, so a crash (or a killed Ray task)
never leaves a partial file under a final name: bytes go to ``<final>.tmp-<uuid>`` and are renamed
(``os.replace`` locally, fsspec ``mv`` elsewhere) only once the writer closed cleanly. Readers can
then trust that a file that exists is complete, and the manifest's checksums say whether it is the
one the build meant.

File names that come from data (a manifest's shard entries) are joined with :func:`child`, which
refuses anything but a plain name, so no URL built from them leaves its folder; :func:`remove_file`
never follows a symbolic link and never removes a folder. Nothing here creates an object-store bucket
(:func:`check_bucket`): a misspelt ``s3://`` URL is an error, not a new bucket. The object-store clients'
own errors (no credentials, no endpoint) get a one-line message with a fix (:func:`client_error_message`).
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


# Object-store client errors that are not OSErrors (botocore under s3fs, aiohttp under gcsfs and http, Google
# auth), by module so none of them is imported here: (module prefix, class name or "", fix for the line).
_CLIENT_ERRORS = (
    ("botocore", "NoCredentialsError", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for "
     "S3, and AWS_ENDPOINT_URL for an S3-compatible server"),
    ("botocore", "PartialCredentialsError", "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
    ("botocore", "EndpointConnectionError", "check AWS_ENDPOINT_URL (an S3-compatible server's address), "
     "the network, and the bucket name"),
    ("botocore", "NoRegionError", "set AWS_DEFAULT_REGION"),
    ("botocore", "", "check the URL and the S3 settings (AWS_* variables)"),
    ("aiobotocore", "", "check the URL and the S3 settings (AWS_* variables)"),
    ("google.auth", "", "no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS or run "
     "`gcloud auth application-default login`"),
    ("aiohttp", "", "check the URL, the network and the storage endpoint"),
)


def client_error_message(exc: BaseException) -> str | None:
    """``<what>: <fix>`` for an object-store client error (see ``_CLIENT_ERRORS``: no credentials, no
    endpoint, ...), None for any other exception; the command line prints it as its one error line."""
    for cls in type(exc).__mro__:
        module = cls.__module__
        for prefix, name, fix in _CLIENT_ERRORS:
            if (module == prefix or module.startswith(prefix + ".")) and name in ("", cls.__name__):
                return f"{str(exc) or type(exc).__name__}: {fix}"
    return None


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


class MissingBucketError(FileNotFoundError):
    """A write into an object-store bucket that does not exist: intint never creates buckets."""

    def __init__(self, url: str, bucket: str) -> None:
        super().__init__(f"{url}: bucket {bucket!r} does not exist: check the URL, or create the bucket "
                         "(intint never creates buckets)")
        self.url, self.bucket = url, bucket


_BUCKETS_SEEN: set[tuple[str, str, str]] = set()  # buckets known to exist, per filesystem, in this process


def bucket_of(fs: fsspec.AbstractFileSystem, path: str) -> str | None:
    """The bucket (container) ``path`` lies in on an object store (s3fs, gcsfs, adlfs split their paths
    into bucket and key), None on a filesystem without buckets (local disk, memory://)."""
    split = getattr(fs, "split_path", None)
    if split is None or isinstance(fs, LocalFileSystem):
        return None
    return str(split(path)[0]) or None


def check_bucket(url: str) -> None:
    """Raise :class:`MissingBucketError` when ``url`` is on an object store whose bucket does not exist
    (nothing to check on a local disk).

    s3fs and gcsfs create a missing bucket on ``makedirs`` (and so on any write through
    :func:`atomic_open`): a misspelt URL would quietly make a new bucket. Checked once per bucket and process.
    """
    fs, path = url_to_fs(url)
    _check_bucket(fs, path)


def _check_bucket(fs: fsspec.AbstractFileSystem, path: str) -> None:
    bucket = bucket_of(fs, path)
    if bucket is None:
        return
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    seen = (protocol, str(getattr(fs, "_fs_token", id(fs))), bucket)  # the filesystem's options, the bucket
    if seen in _BUCKETS_SEEN:
        return
    if not fs.exists(bucket):
        raise MissingBucketError(f"{protocol}://{path}", bucket)
    _BUCKETS_SEEN.add(seen)


def _make_folder(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """A folder on a filesystem with folders; on an object store only the bucket check (no folders there,
    and makedirs would create a missing bucket)."""
    if bucket_of(fs, path) is not None:
        _check_bucket(fs, path)
        return
    fs.makedirs(path, exist_ok=True)


def makedirs(url: str) -> None:
    """Create a folder; on object stores (no folders) check that the bucket exists, never create it."""
    fs, path = url_to_fs(url)
    _make_folder(fs, path)


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
        _make_folder(fs, parent)
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
