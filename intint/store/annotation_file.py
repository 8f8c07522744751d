"""Read a PYSKL annotation file from a path or any fsspec URL, never executing code from it.

The bytes are parsed by ``intint.pose.annotations.parse_annotations`` (allow-list unpickler, top-level
check); this module only fetches them, so the pose stage stays free of file systems.
"""

from __future__ import annotations

from intint.pose.annotations import parse_annotations
from intint.store import fsio


def read_annotations(url: str) -> dict:
    """The annotation dict of the file at ``url`` (top level checked; per-sample checks are
    ``intint.pose.annotations.validate``'s job)."""
    return parse_annotations(fsio.read_bytes(url), source=url)


def read_annotations_and_sha256(url: str) -> tuple[dict, str]:
    """:func:`read_annotations` and the SHA-256 of the file's bytes (the shard manifest records it)."""
    data = fsio.read_bytes(url)
    return parse_annotations(data, source=url), fsio.sha256_bytes(data)
