"""Read a PYSKL annotation file from a path or any fsspec URL, never executing code from it.

The bytes are parsed by ``intint.pose.annotations.parse_annotations`` (the safe unpickler of
``intint.pose.safe_pickle``, then the top-level check); this module fetches them, so the pose stage stays
free of file systems, and makes every whole-file problem name the file: an unusable pickle raises
``UnsafePickleError`` (or ``MalformedPickleError``) whose message starts with the URL, a pickle that is not
a PYSKL dict raises :class:`BadInputError`; a missing file or a folder is the ``OSError`` of the file
system (``FileNotFoundError``, ``IsADirectoryError``), which carries the path.
"""

from __future__ import annotations

from intint.pose.annotations import AnnotationError, parse_annotations
from intint.pose.safe_pickle import UnsafePickleError
from intint.store import fsio


class BadInputError(AnnotationError):
    """A whole input file that cannot be used (not a PYSKL annotation dict); the message is
    ``<source>: <reason>``. An :class:`AnnotationError` with no sample, so existing handlers catch it."""

    def __init__(self, source: str, reason: str, field: str = "<file>") -> None:
        super().__init__(None, field, reason)
        self.source = source
        self.args = (f"{source}: {reason}",)

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple:  # so that it crosses process boundaries (Ray tasks) intact
        return type(self), (self.source, self.reason, self.field)


def parse_file_bytes(data: bytes, url: str) -> dict:
    """The annotation dict in ``data`` (read from ``url``), its top level checked; errors name ``url``."""
    try:
        return parse_annotations(data, source=url)
    except UnsafePickleError as err:
        raise err.with_source(url) from None
    except AnnotationError as err:
        if err.frame_dir is not None:
            raise
        reason = err.reason[len(url) + 2:] if err.reason.startswith(f"{url}: ") else err.reason
        raise BadInputError(url, f"not a PYSKL annotation file: {reason}", err.field) from None


def read_annotations(url: str) -> dict:
    """The annotation dict of the file at ``url`` (top level checked; per-sample checks are
    ``intint.pose.annotations.validate``'s job)."""
    return parse_file_bytes(fsio.read_bytes(url), url)


def read_annotations_and_sha256(url: str) -> tuple[dict, str]:
    """:func:`read_annotations` and the SHA-256 of the file's bytes (the shard manifest records it)."""
    data = fsio.read_bytes(url)
    return parse_file_bytes(data, url), fsio.sha256_bytes(data)
