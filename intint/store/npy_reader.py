"""Read the ``.npy`` members of a shard tar: plain float arrays, parsed from untrusted bytes.

A shard's bytes are input like any other: a damaged or hostile ``.npy`` must fail as a clean error,
never run code, allocate what it declares or take unbounded time. So ``read_npy`` never calls ``np.load``
(which would allocate the declared shape before reading a byte, and which parses the header with
``ast.literal_eval``) and takes only:

* the ``.npy`` magic, format version 1, 2 or 3, and a header of at most ``MAX_HEADER`` bytes: a dict
  literal with exactly ``descr``, ``fortran_order`` and ``shape`` (np.save's layout is matched first and
  cached; any other spelling of the same dict goes through a bounded regex, never an evaluator);
* a dtype from ``DTYPES`` (float16/32/64, either byte order): no object, structured or string dtype,
  so nothing can be unpickled;
* a declared size (shape × item size) equal to the bytes present after the header, not more, not less.

The array is a zero-copy view of the member's bytes (``np.frombuffer``).

Why not ``np.load``: besides the above, CPython 3.11's AST constructor keeps its recursion counter per
interpreter, not per thread (cpython#106905): in a DataLoader worker, whose queue feeder thread runs beside
the decoding thread, ``literal_eval`` occasionally fails a valid header with "SystemError: AST constructor
recursion depth mismatch".
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

import numpy as np

__all__ = ["DTYPES", "MAX_HEADER", "NpyError", "read_npy"]

MAGIC = b"\x93NUMPY"
MAX_HEADER = 4096  # bytes of header dict (np.save writes 128 for any array of a few dimensions)
DTYPES: frozenset[str] = frozenset(f"{order}f{size}" for order in "<>" for size in (2, 4, 8))
_MAX_DIMS = 32
# The header np.save writes: a fixed-order dict literal padded with spaces.
_SAVED = re.compile(r"\{'descr': '([<>]f[248])', 'fortran_order': (True|False), "
                    r"'shape': \(((?:\d+, ?)*\d*)\), \}[ ]*\n?")
# Any other spelling of that dict (key order, spacing, trailing comma); each value's length is bounded.
_ENTRY = r"'(descr|fortran_order|shape)'\s*:\s*('[^']{0,16}'|True|False|\([0-9, ]{0,400}\))"
_ANY_DICT = re.compile(r"\{\s*" + r"\s*,\s*".join([_ENTRY] * 3) + r"\s*,?\s*\}\s*")


class NpyError(ValueError):
    """The bytes are not a plain float ``.npy`` array (says why)."""


Layout = tuple[np.dtype, tuple[int, ...], str, int]  # dtype, shape, order, element count


def read_npy(data: bytes | memoryview) -> np.ndarray:
    """The array of an ``.npy`` member as a view of ``data``; :class:`NpyError` for anything else."""
    if len(data) < 10 or data[:6] != MAGIC:
        raise NpyError("no .npy magic")
    major = data[6]
    if major not in (1, 2, 3):
        raise NpyError(f"unknown .npy format version {major}")
    start = 10 if major == 1 else 12
    length = int.from_bytes(data[8:start], "little")
    if length > MAX_HEADER:
        raise NpyError(f"header of {length} bytes, more than {MAX_HEADER}")
    if start + length > len(data):
        raise NpyError(f"header of {length} bytes in a member of {len(data)}")
    dtype, shape, order, count = _layout(bytes(data[start:start + length]))  # bytes: a view pins its chunk
    present = len(data) - start - length
    if count * dtype.itemsize != present:
        raise NpyError(f"shape {shape} of {dtype} declares {count * dtype.itemsize} bytes, "
                       f"{present} are present")
    return np.frombuffer(data, dtype=dtype, count=count, offset=start + length).reshape(shape, order=order)


@lru_cache(maxsize=4096)
def _layout(header: bytes) -> Layout:
    """(dtype, shape, order, element count) of an ``.npy`` header. Cached: a shard set's arrays share few
    distinct headers (one per person count × length), and parsing one costs more than reading its array;
    the cache holds at most 4096 headers of at most ``MAX_HEADER`` bytes."""
    text = header.decode("latin1")
    saved = _SAVED.fullmatch(text)
    if saved is not None:
        descr, fortran, dims = saved.groups()
    else:
        descr, fortran, dims = _any_dict(text)
    if descr not in DTYPES:
        raise NpyError(f"dtype {descr!r} is not one of {sorted(DTYPES)}")
    parts = [d.strip() for d in dims.split(",")]
    if parts and not parts[-1]:
        parts.pop()  # the trailing comma of a tuple
    if len(parts) > _MAX_DIMS or not all(d.isdigit() for d in parts):
        raise NpyError(f"shape ({dims[:40]}) is not a tuple of at most {_MAX_DIMS} sizes")
    shape = tuple(int(d) for d in parts)
    return np.dtype(descr), shape, "F" if fortran == "True" else "C", math.prod(shape)


def _any_dict(text: str) -> tuple[str, str, str]:
    """descr, fortran_order and the shape tuple's inside from a header in another spelling than np.save's."""
    match = _ANY_DICT.fullmatch(text)
    if match is None:
        raise NpyError(f"header {text[:60]!r} is not a plain array's")
    values = dict(zip(match.groups()[0::2], match.groups()[1::2], strict=True))
    if len(values) != 3 or values["fortran_order"] not in ("True", "False"):
        raise NpyError(f"header {text[:60]!r} is not a plain array's")
    descr, shape = values["descr"], values["shape"]
    if not (descr.startswith("'") and shape.startswith("(")):
        raise NpyError(f"header {text[:60]!r} is not a plain array's")
    return descr[1:-1], values["fortran_order"], shape[1:-1]
