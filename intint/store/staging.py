"""Build into a staging folder inside the set's root, then publish: the old set survives a failed build.

A build writes every new file (shards, ``rejects.jsonl``, ``manifest.json``) under
``<root>/.staging-<uuid>/``. Only once all of them are written does :func:`publish` swap them in:
the old manifest goes first (from then on the folder holds no finished set, so no reader can pair an
old manifest with new files), the staged shards and ``rejects.jsonl`` are renamed into place, the old
set's shards this build did not rewrite are deleted (only names its validated manifest lists, only
inside the root, never through a symbolic link), and the new manifest is renamed in last.

So a build that fails before publishing (``--strict`` and a bad sample, too many shards, a failed
task, any exception) leaves the old set's manifest and files as they were; one killed while
publishing leaves a folder without a manifest, never a manifest with the wrong files. A killed build
leaves temporaries (``*.tmp-<uuid>`` files of ``fsio.atomic_open``, ``.staging-<uuid>`` folders); the
next build into the same root removes them (:func:`remove_temporaries`). Two builds into one root at
the same time are not supported.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from intint.store import fsio, shardio

log = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"
_STAGING = re.compile(r"\.staging-[0-9a-f]{32}")
_TEMPORARY = re.compile(r".+\.tmp-[0-9a-f]{32}")


@dataclass(frozen=True)
class Staging:
    """Where a build writes before publishing: ``url`` is a fresh folder inside ``root``."""

    root: str
    url: str

    def file(self, name: str) -> str:
        return fsio.child(self.url, name)


def new_staging(root: str) -> Staging:
    """A staging area for a build into ``root`` (the folder is created by :func:`create`)."""
    return Staging(root, fsio.child(root, STAGING_PREFIX + uuid.uuid4().hex))


def create(stage: Staging) -> None:
    fsio.makedirs(stage.url)


def discard(stage: Staging) -> None:
    """Remove the staging folder and whatever is left in it (a no-op after :func:`publish`)."""
    try:
        fsio.remove_tree(stage.url)
    except OSError as e:  # the next build removes it
        log.warning("could not remove the staging folder %s: %s", stage.url, e)


def remove_temporaries(root: str) -> list[str]:
    """Delete what killed builds left directly inside ``root``: ``.staging-<uuid>`` folders and
    ``*.tmp-<uuid>`` files. Returns their names."""
    removed = []
    for name in fsio.list_names(root):
        if _STAGING.fullmatch(name):
            fsio.remove_tree(fsio.child(root, name))
        elif _TEMPORARY.fullmatch(name):
            fsio.remove_file(fsio.child(root, name))
        else:
            continue
        removed.append(name)
    if removed:
        log.info("%s: removed %d temporaries of an interrupted build", root, len(removed))
    return removed


def publish(stage: Staging, written: Iterable[str], old: shardio.Manifest | None) -> None:
    """Swap the staged set into ``stage.root`` (see the module docstring for the order and why).

    ``written``: the shard file names the build staged (the staged ``rejects.jsonl`` and
    ``manifest.json`` come with them). ``old``: the validated manifest of the set being replaced.
    """
    root = stage.root
    names = list(written)
    fsio.remove_file(shardio.manifest_url(root))
    for name in (*names, shardio.REJECTS_NAME):
        fsio.move(stage.file(name), fsio.child(root, name))
    if old is not None:
        keep = set(names)
        for info in old.splits.values():
            for entry in info.shards:
                for name in (entry.tar, entry.arrow):
                    if name not in keep:
                        fsio.remove_file(fsio.child(root, name))
    fsio.move(stage.file(shardio.MANIFEST_NAME), shardio.manifest_url(root))
    discard(stage)
