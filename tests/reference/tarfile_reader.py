"""A shard tar read with the standard library's ``tarfile``: the independent oracle the shard tests read
the builder's output with (the library reads tars with its own ``intint.store.tar_reader``)."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from intint.store import fsio
from intint.store.shardio import MEMBER_SUFFIXES, ShardFormatError


def iter_tar(url: str) -> Iterator[dict[str, Any]]:
    """Decode a shard tar with the standard library: per video a dict of the JSON fields plus
    ``key``, ``keypoint`` and ``keypoint_score`` (stored dtype). Raises on a member that is missing
    or out of place, naming the tar and key."""
    fs, path = fsio.url_to_fs(url)
    with fs.open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        current: dict[str, bytes] = {}
        key: str | None = None
        for member in tar:
            if not member.isfile():
                raise ShardFormatError(f"{url}: member {member.name!r} is not a regular file")
            k, _, suffix = member.name.partition(".")
            if k != key:
                if key is not None:
                    yield _decode(url, key, current)
                key, current = k, {}
            fobj = tar.extractfile(member)
            assert fobj is not None
            current[suffix] = fobj.read()
        if key is not None:
            yield _decode(url, key, current)


def _decode(url: str, key: str, members: dict[str, bytes]) -> dict[str, Any]:
    missing = [s for s in MEMBER_SUFFIXES if s not in members]
    extra = [s for s in members if s not in MEMBER_SUFFIXES]
    if missing or extra:
        raise ShardFormatError(f"{url}: sample {key}: members missing {missing}, unexpected {extra}")
    meta = json.loads(members["json"])
    where = f"{url}: sample {key} ({meta.get('frame_dir')!r})"
    out: dict[str, Any] = {"key": key, **meta}
    out["keypoint"] = _load_npy(members["keypoint.npy"], f"{where} keypoint")
    out["keypoint_score"] = _load_npy(members["keypoint_score.npy"], f"{where} keypoint_score")
    return out


def _load_npy(data: bytes, where: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:
        raise ShardFormatError(f"{where}: not a plain .npy array ({e})") from e
