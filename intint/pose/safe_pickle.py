"""Unpickling without running code or trusting sizes: the loader of PYSKL annotation files.

Why: a PYSKL file is a pickle, and ``pickle.load`` runs whatever callable the file names; even with only
NumPy's own array and dtype globals allowed, a 200-byte file can forge a dtype that turns raw bytes into
pointers (a segfault, or worse, when the array is printed), ask ``ndarray(shape)`` or ``bytes(N)`` for
gigabytes, or nest a dict key deep enough to overflow the C stack when it is hashed. Annotation files come
from third parties, so loading one must not be able to do any of that.

How: :class:`RestrictedUnpickler` does not use the standard unpickler. Its own machine
(:mod:`intint.pose.pickle_machine`) interprets the opcodes and resolves globals only from an allow-list
(:data:`ALLOWED_GLOBALS`), whose entries are *builders* (:mod:`intint.pose.pickle_builders`), not the
real callables:

* **dtypes** are taken from a fixed list of plain numeric / bool dtypes (``b1 i1-i8 u1-u8 f2 f4 f8``, either
  byte order) that the loader built itself; a dtype state with fields, a subarray, flags, sizes or
  metadata is refused, so NumPy never sees an object or structured dtype, nor any state from the file;
* **arrays** (``_reconstruct`` + BUILD for protocols 0-4, ``_frombuffer`` for protocol 5, ``scalar`` for
  NumPy scalars) are copied out of bytes the file actually holds (``np.frombuffer`` + copy, always native
  byte order), after checking that shape × itemsize equals the number of those bytes; ``ndarray(shape)``
  and ``bytes(N)`` / ``bytearray(N)`` with a size are refused;
* **memory**: every object the load creates is charged, before it is created, to a budget of
  ``bytes_per_file_byte`` × the file's size + ``extra_bytes`` (:class:`LoadLimits`). A pickle stores
  array data raw, so a real file needs a small multiple of its size (the bytes read, the array copies,
  and Python's per-object overhead, which weighs most in files of videos only a few frames long); the
  default leaves twice the room synthetic PYSKL files of every dtype and protocol need. A memory bomb
  (``ndarray(shape)``, ``bytes(N)``, a megabyte of one-byte empty lists) needs orders of magnitude more;
* **shape of the result**: nesting deeper than ``max_depth`` (or a container holding itself) and shared
  sub-containers that expand to more references than the file could have written one by one (a "billion
  laughs" label) are refused after the load; dict keys and set members must be strings, bytes, small ints
  or small tuples of those (:func:`~intint.pose.pickle_builders.check_key`);
* **errors** are :class:`UnsafePickleError` (refused) or its subclass :class:`MalformedPickleError`
  (empty, truncated, text, compressed, bad opcodes), with the byte offset; a message never formats an
  unbounded value (:func:`bounded_repr`).

``allowed`` is a class attribute: a subclass may extend it with real callables and classes for its own,
trusted kind of data (benchmarks/bench_loader.py adds torch's shared-memory rebuilders); those are called
as they are, and only they.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import IO, Any

from intint.pose import pickle_builders as builders
from intint.pose.pickle_builders import MalformedPickleError, UnsafePickleError, bounded_repr
from intint.pose.pickle_machine import PickleMachine, check_nesting

__all__ = ["ALLOWED_GLOBALS", "LoadLimits", "MalformedPickleError", "RestrictedUnpickler",
           "UnsafePickleError", "bounded_repr", "safe_loads"]


@dataclass(frozen=True)
class LoadLimits:
    """What one load may cost: memory ``bytes_per_file_byte`` × file size + ``extra_bytes``; nesting
    ``max_depth`` levels; ``extra_references`` container references beyond one per byte of the file."""

    bytes_per_file_byte: int = 8
    extra_bytes: int = 1 << 20
    max_depth: int = 64
    extra_references: int = 10_000


_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {("numpy", "ndarray"): builders.NDARRAY,
                                               ("numpy", "dtype"): builders.DTYPE}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):  # NumPy 1.x and 2.x module paths
    _NUMPY_GLOBALS[(_mod, "_reconstruct")] = builders.RECONSTRUCT
    _NUMPY_GLOBALS[(_mod, "scalar")] = builders.SCALAR
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _NUMPY_GLOBALS[(_mod, "_frombuffer")] = builders.FROMBUFFER

# (module, name) -> what the file gets for that global. Nothing outside this table is importable.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **_NUMPY_GLOBALS,
    **{("builtins", n): b for n, b in builders.BUILTINS.items()},
    **{("__builtin__", n): b for n, b in builders.BUILTINS.items()},  # protocol-2 files from Python 2
    # Protocol <= 2 stores bytes (array data among them) as _codecs.encode(text, "latin1").
    ("_codecs", "encode"): builders.CODECS_ENCODE,
}


class RestrictedUnpickler:
    """``RestrictedUnpickler(file).load()``: unpickle with the allow-list ``allowed`` (a subclass may
    allow more for its own kind of data) within ``limits``; see the module docstring."""

    allowed: dict[tuple[str, str], Any] = ALLOWED_GLOBALS

    def __init__(self, file: IO[bytes], *, limits: LoadLimits | None = None) -> None:
        self.file = file
        self.limits = limits or LoadLimits()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {_name(module)}.{_name(name)}: annotation files may "
                "only contain dicts, lists, strings, numbers and NumPy arrays (a pickle naming other "
                "callables could run code)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing persistent ids in an annotation file")

    def load(self) -> Any:
        data = self.file.read()
        if not isinstance(data, bytes):
            data = bytes(data)
        if not data:
            raise MalformedPickleError("empty file, not a pickle")
        lim = self.limits
        budget = builders.Budget(lim.bytes_per_file_byte * len(data) + lim.extra_bytes, len(data))
        try:
            result = PickleMachine(data, self.find_class, budget).run()
        except UnsafePickleError as err:
            hint = _not_a_pickle_hint(data, text_too=isinstance(err, MalformedPickleError))
            if not hint:
                raise
            raise MalformedPickleError(f"not a pickle: {hint} ({err.reason})") from None
        check_nesting(result, lim.max_depth, len(data) + lim.extra_references)
        return result


def _name(text: str) -> str:
    """A module or global name from the file, for a message: at most 100 characters, escaped."""
    return text[:100].encode("unicode_escape").decode("ascii")


def _not_a_pickle_hint(data: bytes, text_too: bool) -> str:
    """What the bytes look like when they do not start as a pickle of protocol 2 or later does: a known
    file format, or (``text_too``: only for malformed data, protocol 0 pickles being text) text."""
    if data[:1] == b"\x80":
        return ""
    for magic, what in ((b"\x1f\x8b", "gzip-compressed data (decompress it first)"),
                        (b"PK\x03\x04", "a zip archive (an .npz?)"), (b"\x93NUMPY", "a .npy array file"),
                        (b"BZh", "bzip2-compressed data"), (b"\xfd7zXZ", "xz-compressed data")):
        if data.startswith(magic):
            return f"the file is {what}"
    if text_too and all(32 <= c < 127 or c in b"\t\r\n" for c in data[:512]):
        return "the file looks like text"
    return ""


def safe_loads(data: bytes, limits: LoadLimits | None = None) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (see the module docstring)."""
    return RestrictedUnpickler(io.BytesIO(data), limits=limits).load()
