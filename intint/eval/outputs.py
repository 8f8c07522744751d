"""What an evaluation leaves for use elsewhere: where its results go, its class names, and the per-video
probabilities beside the results file as Parquet.

Training writes ``results.json`` into the run folder; ``intint evaluate`` writes
``eval-<split>-<weights>.json`` into the checkpoint folder it tested (``evaluation_url``), so testing a
run again never replaces the numbers training recorded. Beside every results file lies its per-video table
(``probabilities_url``: the same name with ``.probs.parquet`` for ``.json``): one row per video with its
shard key, frame_dir, label and class name, and one ``list<double>`` column of class probabilities per
results entry (``integrity``, ``intensity``, ``fused``, ``fused_tuned``), the very rows the accuracies of the
results file were computed from. The file's metadata (key ``intint``) holds the class names, the split and
the fusion weights. It is written with pyarrow through fsspec, so it goes to ``s3://`` as to a local folder.

Class names come from the shard manifest (``intint build-shards --classes FILE``); a shard set built
without a class-name file names them ``class_<i>``, and so does a run whose manifest is gone or disagrees
with the checkpoint's class count. ``class_names`` says which in ``source``.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from intint.store import fsio, shardio

__all__ = ["PROBABILITY_COLUMNS", "ClassNames", "class_names", "evaluation_url", "probabilities_url",
           "frame_dirs", "probabilities_table", "write_probabilities", "read_probabilities"]

log = logging.getLogger(__name__)

PROBABILITY_COLUMNS: tuple[str, ...] = ("integrity", "intensity", "fused", "fused_tuned")
METADATA_KEY = b"intint"


@dataclass(frozen=True)
class ClassNames:
    """The names of a run's classes, index = class id, and where they came from (recorded with them)."""

    names: list[str]
    source: str


def _generated(num_classes: int, why: str) -> ClassNames:
    return ClassNames([f"class_{i}" for i in range(num_classes)], f"generated class_<i>: {why}")


def class_names(shards: str, num_classes: int) -> ClassNames:
    """The class names of the shard set a run trained on; ``class_<i>`` (and why) when it has none."""
    try:
        manifest = shardio.read_manifest(shards)
    except (OSError, ValueError) as err:
        log.warning("class names: cannot read the shard manifest of %s (%s); naming classes class_<i>",
                    shards, err)
        return _generated(num_classes, f"the shard manifest of {shards} could not be read")
    if manifest.num_classes != num_classes:
        return _generated(num_classes, f"the shard manifest names {manifest.num_classes} classes, the "
                                       f"model has {num_classes}")
    source = manifest.build_args.get("classes")
    if not source:
        return ClassNames(list(manifest.classes), "generated class_<i>: the shard set was built without a "
                                                  "class-name file (build-shards --classes)")
    return ClassNames(list(manifest.classes), f"shard manifest (class-name file {source})")


def evaluation_url(checkpoint_dir: str, split: str, weights: str) -> str:
    """Where ``intint evaluate`` writes by default: ``eval-<split>-<weights>.json`` in the checkpoint folder
    (never the ``results.json`` training wrote)."""
    return fsio.join(checkpoint_dir, f"eval-{split}-{weights}.json")


def probabilities_url(results_url: str) -> str:
    """The per-video Parquet beside a results file: ``results.json`` → ``results.probs.parquet``."""
    stem = results_url[: -len(".json")] if results_url.endswith(".json") else results_url
    return stem + ".probs.parquet"


def frame_dirs(shards: str, split: str, keys: Sequence[str]) -> list[str | None]:
    """The frame_dir of each shard key, from the Arrow tables of ``split`` (None where one is not found)."""
    found: dict[str, str] = {}
    try:
        for _, arrow, _ in shardio.shard_urls(shards, split):
            table = shardio.read_intensity(arrow, ["key", "frame_dir"])
            found.update(zip(table.column("key").to_pylist(), table.column("frame_dir").to_pylist(),
                             strict=True))
    except (OSError, KeyError, ValueError) as err:
        log.warning("per-video table: no frame_dir column (%s: %s)", type(err).__name__, err)
    return [found.get(k) for k in keys]


def _probability_column(rows: np.ndarray, n: int, name: str) -> pa.Array:
    """An N×C score matrix as a ``list<double>`` column (float64 keeps the exact ranking of the results)."""
    arr = np.ascontiguousarray(rows, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"per-video table: column {name!r} has shape {arr.shape}, expected {n}×C")
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * arr.shape[1])
    return pa.ListArray.from_arrays(offsets, pa.array(arr.reshape(-1)))


def probabilities_table(keys: Sequence[str], labels: np.ndarray, probs: Mapping[str, np.ndarray],
                        classes: ClassNames, *, frame_dir: Sequence[str | None] | None = None,
                        meta: Mapping[str, Any] | None = None) -> pa.Table:
    """One row per video: key, frame_dir, label, class_name, then one probability column per entry of
    ``probs`` in ``PROBABILITY_COLUMNS`` order; ``meta`` and the class names go into the file metadata."""
    n = len(keys)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (n,):
        raise ValueError(f"per-video table: {labels.shape[0]} labels for {n} keys")
    unknown = sorted(set(probs) - set(PROBABILITY_COLUMNS))
    if unknown:
        raise ValueError(f"per-video table: unknown probability column(s) {unknown}")
    columns: dict[str, pa.Array] = {
        "key": pa.array(list(keys), pa.string()),
        "frame_dir": pa.array(list(frame_dir) if frame_dir is not None else [None] * n, pa.string()),
        "label": pa.array(labels, pa.int64()),
        "class_name": pa.array([classes.names[i] for i in labels], pa.string()),
    }
    for name in PROBABILITY_COLUMNS:
        if name in probs:
            columns[name] = _probability_column(probs[name], n, name)
    record = {"classes": classes.names, "classes_source": classes.source, **dict(meta or {})}
    table = pa.table(columns)
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(record, sort_keys=True).encode()})


def write_probabilities(table: pa.Table, url: str) -> str:
    """Write the per-video table as Parquet, atomically (temp name beside the target, then rename)."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    fsio.atomic_write(url, buffer.getvalue())
    return url


def read_probabilities(url: str) -> tuple[pa.Table, dict[str, Any]]:
    """A per-video table and its metadata record (class names, split, fusion weights)."""
    table = pq.read_table(io.BytesIO(fsio.read_bytes(url)))
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    return table, (json.loads(raw) if raw else {})
