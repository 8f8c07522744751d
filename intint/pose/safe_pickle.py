"""Unpickling without running code: an allow-list unpickler for PYSKL annotation files.

Why: a PYSKL file is a pickle, and ``pickle.load`` runs whatever callable the file names. Annotation
files are downloaded from third parties, so loading one must never be able to run code.
:class:`RestrictedUnpickler` resolves only an explicit allow-list of globals (NumPy array/dtype/scalar
reconstruction and a few plain builtins) from a table, without importing anything the file names, and
refuses every other global with :class:`UnsafePickleError`. The allow-list is a class attribute, so a
subclass may extend it for its own kind of data.
"""

from __future__ import annotations

import builtins
import codecs
import io
import pickle
from typing import Any

import numpy as np

try:  # NumPy >= 2 keeps the implementation in numpy._core; 1.x in numpy.core.
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

# (module, name) -> object. Both the NumPy 1.x and 2.x module paths map to the objects of the
# NumPy installed here, so files written by either load. Nothing outside this table is importable.
_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _NUMPY_GLOBALS[(_mod, "_reconstruct")] = _multiarray._reconstruct
    _NUMPY_GLOBALS[(_mod, "scalar")] = _multiarray.scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    # Protocol-5 pickles of contiguous arrays rebuild them from a raw buffer with _frombuffer.
    _NUMPY_GLOBALS[(_mod, "_frombuffer")] = _numeric._frombuffer
_NUMPY_GLOBALS[("numpy", "ndarray")] = np.ndarray
_NUMPY_GLOBALS[("numpy", "dtype")] = np.dtype

_SAFE_BUILTINS: dict[str, Any] = {
    name: getattr(builtins, name)
    for name in ("set", "frozenset", "bytearray", "bytes", "complex", "tuple", "list", "dict",
                 "int", "float", "str", "bool")
}

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **_NUMPY_GLOBALS,
    **{("builtins", n): obj for n, obj in _SAFE_BUILTINS.items()},
    **{("__builtin__", n): obj for n, obj in _SAFE_BUILTINS.items()},  # protocol-2 files from Python 2
    # Protocol <= 2 stores bytes (e.g. array buffers) as _codecs.encode(text, "latin1").
    ("_codecs", "encode"): codecs.encode,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The file names a global outside the allow-list; nothing from it was executed."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves globals only from ``allowed`` (:data:`ALLOWED_GLOBALS`; a subclass may
    allow more for its own kind of data)."""

    allowed: dict[tuple[str, str], Any] = ALLOWED_GLOBALS

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: annotation files may only contain dicts, "
                "lists, strings, numbers and NumPy arrays (a pickle naming other callables could run code)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing persistent ids in an annotation file")


def safe_loads(data: bytes) -> Any:
    """Unpickle ``data`` with the restricted unpickler (a stream: ``RestrictedUnpickler(f).load()``)."""
    return RestrictedUnpickler(io.BytesIO(data)).load()
