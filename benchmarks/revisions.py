"""The ``intint`` package of an older git revision, importable beside the working tree's, for A/B benchmarks.

``extract_revision`` copies ``intint/`` at a revision out of git into a throw-away package ``intint_<rev>``
(every ``from intint`` / ``import intint`` rewritten, in every module of every subpackage), so the baseline
and the working tree run in one process on the same data. The package moved from flat modules
(``intint/transforms.py``, ``intint/clips.py``, ...) to subpackages (``intint/pose/transforms.py``,
``intint/loader/clip_maker.py``, ...); ``load_modules`` finds a benchmark's modules under either layout by
a short role name, taking the first candidate file that exists at that revision.
"""

from __future__ import annotations

import importlib
import io
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]

# role -> candidate modules, newest layout first: the first one whose file exists is the role's module
CANDIDATES: dict[str, tuple[str, ...]] = {
    "transforms": ("pose.transforms", "transforms"),
    "sampling": ("pose.sampling", "sampling"),
    "clips": ("loader.clip_maker", "clips"),
    "data": ("loader.streams", "data"),
    "config": ("loader.config", "loader.streams", "data"),  # where LoaderConfig is defined
    "bufferpool": ("loader.shared_ring", "bufferpool"),
    "wire": ("loader.batch_transport", "wire"),
    "shardstream": ("store.shardstream", "shardstream"),
    "shardio": ("store.shardio", "shardio"),
}


def extract_revision(rev: str, into: Path) -> str:
    """``intint/`` at ``rev`` as package ``intint_<rev>`` under ``into`` (put on sys.path); its name.

    Extracting the same revision twice into the same folder reuses the first copy.
    """
    name = "intint_" + re.sub(r"\W", "_", rev)
    package = into / name
    if not package.exists():
        archive = subprocess.run(["git", "archive", rev, "intint"], cwd=REPO, check=True,
                                 capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(into, filter="data")
        (into / "intint").rename(package)
        for path in package.rglob("*.py"):
            text = re.sub(r"^(\s*)(from|import) intint\b", rf"\1\2 {name}", path.read_text(), flags=re.M)
            path.write_text(text)
    if str(into) not in sys.path:
        sys.path.insert(0, str(into))
    return name


def module_names(package: str, roles: tuple[str, ...]) -> dict[str, str]:
    """Each role's dotted module name in ``package``, by which candidate file exists there."""
    root = Path(importlib.import_module(package).__path__[0])
    names = {}
    for role in roles:
        found = [c for c in CANDIDATES[role] if (root / (c.replace(".", "/") + ".py")).is_file()]
        if not found:
            raise ModuleNotFoundError(f"{package}: no module for {role!r} (tried {CANDIDATES[role]})")
        names[role] = f"{package}.{found[0]}"
    return names


def load_modules(package: str, roles: tuple[str, ...]) -> dict[str, ModuleType]:
    """Each role's module of ``package`` (``intint`` or an extracted ``intint_<rev>``), imported."""
    return {role: importlib.import_module(name) for role, name in module_names(package, roles).items()}
