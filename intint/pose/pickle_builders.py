"""What the safe unpickler builds when a pickle calls a global: NumPy arrays, dtypes and scalars of a fixed
list of plain dtypes, bytes, and the few builtins PYSKL files use, each from checked arguments.

Why builders instead of the real callables: ``numpy.dtype`` + BUILD, ``_reconstruct`` + BUILD or
``ndarray(shape)`` hand NumPy a state the file chose (a dtype whose state declares object fields while
its flags claim none turns raw bytes into pointers), and ``bytes(N)`` / ``ndarray(shape)`` allocate what
a 100-byte file asks for. Here every dtype comes from :data:`PLAIN_DTYPES`, built by this module; an
array's data is always copied out of raw bytes present in the file (``np.frombuffer`` + copy) after its
declared size was checked against those bytes; every allocation is charged to the load's
:class:`Budget` before it happens. Values a builder refuses raise :class:`UnsafePickleError`.
"""

from __future__ import annotations

import math
import pickle
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

MAX_NDIM = 32
MAX_KEY_ITEMS = 16  # a tuple / frozenset used as a dict key or set member holds at most this many values
_MAX_TEXT_NUMBER = 100  # characters of a string passed to int() / float() / complex()
_NATIVE = "<" if sys.byteorder == "little" else ">"
_OBJECT_BYTES = 64  # what a new Python object is charged beside its payload
_SLOT_BYTES = 8  # one reference in a container


class UnsafePickleError(pickle.UnpicklingError):
    """The file could not be loaded safely: it names a global outside the allow-list, asks for something
    the loader refuses (an object dtype, an array larger than its bytes, more memory than the file can
    justify, deep nesting), or is not a pickle at all. Nothing from it was executed. ``source`` names the
    file when the reader knows it (the message then starts with it)."""

    def __init__(self, reason: str, source: str | None = None) -> None:
        self.reason = reason
        self.source = source
        super().__init__(f"{source}: {reason}" if source else reason)

    def with_source(self, source: str) -> UnsafePickleError:
        """The same error (same class), naming the file it came from."""
        return type(self)(self.reason, source)

    def __reduce__(self) -> tuple:  # so that it crosses process boundaries (Ray tasks) intact
        return type(self), (self.reason, self.source)


class MalformedPickleError(UnsafePickleError):
    """The bytes are not a well-formed pickle (empty, truncated, text, compressed, a bad opcode)."""


def bounded_repr(value: Any, limit: int = 100, _depth: int = 0) -> str:
    """A description of ``value`` of at most about ``limit`` characters, computed without ever formatting
    an unbounded object (a huge string or integer, a deeply nested or self-containing list): small tuples
    and lists show their items (two levels), anything bigger only its type and length."""
    kind = type(value)
    if kind in (tuple, list) and len(value) <= 6 and _depth < 2:
        inner = ", ".join(bounded_repr(v, 40, _depth + 1) for v in value)
        text = f"({inner}{',' if len(value) == 1 else ''})" if kind is tuple else f"[{inner}]"
    elif value is None or kind in (bool, float, complex):
        text = repr(value)
    elif kind is int:
        text = repr(value) if value.bit_length() <= 256 else f"<int of {value.bit_length()} bits>"
    elif kind in (str, bytes, bytearray):
        text = repr(value[:limit]) + ("…" if len(value) > limit else "")
    elif isinstance(value, (np.bool_, np.integer, np.floating)):
        text = repr(value.item())
    elif isinstance(value, np.ndarray):
        text = f"<array {value.dtype.str} shape {value.shape[:MAX_NDIM]}>"
    elif kind in (list, tuple, dict, set, frozenset):
        text = f"<{kind.__name__} of {len(value)} items>"
    else:
        text = f"<{kind.__name__}>"
    return text if len(text) <= limit + 1 else text[:limit] + "…"


class Budget:
    """The memory a load may allocate: ``limit`` bytes, charged before each allocation."""

    def __init__(self, limit: int, file_size: int) -> None:
        self.limit = limit
        self.left = limit
        self.file_size = file_size

    def charge(self, nbytes: int) -> None:
        self.left -= nbytes
        if self.left < 0:
            raise UnsafePickleError(
                f"refusing to load: building it would take more than {self.limit} bytes for a file of "
                f"{self.file_size} bytes (arrays are stored raw in a pickle, so a real annotation file "
                "never needs that much: this looks like a memory bomb)")

    def charge_container(self, items: int) -> None:
        self.charge(_OBJECT_BYTES + _SLOT_BYTES * items)


class Pending:
    """An object whose value arrives with the next BUILD opcode (a NumPy dtype or an array): ``finish``
    turns the BUILD state into the object. ``memo_keys`` are the memo slots that hold it meanwhile."""

    __slots__ = ("finish", "memo_keys", "what")

    def __init__(self, what: str, finish: Callable[[Any], Any]) -> None:
        self.what = what
        self.finish = finish
        self.memo_keys: list[int] = []

    def __repr__(self) -> str:
        return f"<{self.what} awaiting its state>"


class Builder:
    """A global the safe unpickler allows: called by REDUCE with the pickled arguments, it checks them
    and builds the value itself (``build(args, budget)``)."""

    __slots__ = ("build", "name")

    def __init__(self, name: str, build: Callable[[tuple, Budget], Any]) -> None:
        self.name = name
        self.build = build

    def __repr__(self) -> str:
        return f"<allowed global {self.name}>"


# ------------------------------------------------------------------------------------- dtypes and arrays

PLAIN_DTYPE_CODES: tuple[str, ...] = ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")
# code -> {byte order as pickled -> the dtype object this module built}; nothing else becomes a dtype.
PLAIN_DTYPES: dict[str, dict[str, np.dtype]] = {}
for _code in PLAIN_DTYPE_CODES:
    _native = np.dtype(_code)
    _swapped = _native.newbyteorder("S") if _native.itemsize > 1 else _native
    PLAIN_DTYPES[_code] = {"=": _native, "|": _native, _NATIVE: _native, "<>".replace(_NATIVE, ""): _swapped}
_BUILT_DTYPES: dict[int, np.dtype] = {id(d): d for orders in PLAIN_DTYPES.values() for d in orders.values()}


def _is_flag(value: Any) -> bool:
    return type(value) is bool or (type(value) is int and value in (0, 1))


def _plain_dtype(value: Any, what: str) -> np.dtype:
    """``value`` if it is one of the dtype objects this module built, else refuse."""
    if _BUILT_DTYPES.get(id(value)) is not value:
        raise UnsafePickleError(f"{what}: expected a plain numeric dtype, got {bounded_repr(value)}")
    return value


def build_dtype(args: tuple, budget: Budget) -> Pending:
    """``numpy.dtype(code, align, copy)``: only codes of :data:`PLAIN_DTYPE_CODES`."""
    if len(args) != 3 or type(args[0]) is not str or not (_is_flag(args[1]) and _is_flag(args[2])):
        raise UnsafePickleError(f"numpy.dtype: unexpected arguments {bounded_repr(args)}")
    code = args[0]
    if code not in PLAIN_DTYPES:
        raise UnsafePickleError(f"numpy.dtype {bounded_repr(code)} is refused: only plain numeric and bool "
                                f"dtypes ({', '.join(PLAIN_DTYPE_CODES)}) may be loaded")
    return Pending(f"dtype {code}", lambda state: _finish_dtype(code, state))


def _finish_dtype(code: str, state: Any) -> np.dtype:
    """The dtype's BUILD state may only say what a plain dtype's state says: a byte order, and no
    subarray, names, fields, sizes, flags or metadata."""
    plain = (type(state) is tuple and len(state) in (8, 9) and state[0] in (3, 4)
             and state[1] in PLAIN_DTYPES[code] and state[2:5] == (None, None, None)
             and state[5:8] == (-1, -1, 0) and (len(state) == 8 or state[8] is None))
    if not plain:
        raise UnsafePickleError(f"dtype {code}: refusing a state that claims fields, flags, sizes or "
                                f"metadata ({bounded_repr(state)})")
    return PLAIN_DTYPES[code][state[1]]


def _raw_bytes(value: Any, what: str, budget: Budget) -> bytes | bytearray:
    """Array data as pickled: bytes, a bytearray, or (Python 2 files) a latin-1 string."""
    if type(value) in (bytes, bytearray):
        return value
    if type(value) is str:
        budget.charge(_OBJECT_BYTES + len(value))
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            raise UnsafePickleError(f"{what}: the data string is not latin-1 bytes") from None
    raise UnsafePickleError(f"{what}: expected the data as bytes, got {bounded_repr(value)}")


def _checked_shape(shape: Any, what: str) -> tuple[int, ...]:
    if type(shape) is not tuple or len(shape) > MAX_NDIM or any(
            type(d) is not int or not 0 <= d < 2**40 for d in shape):
        raise UnsafePickleError(f"{what}: bad shape {bounded_repr(shape)} (up to {MAX_NDIM} sizes >= 0)")
    return shape


def array_from_bytes(raw: Any, dtype: Any, shape: Any, fortran: bool, budget: Budget) -> np.ndarray:
    """A new array copied out of ``raw``, after checking that ``shape`` × the itemsize of ``dtype`` (a
    dtype this module built) is exactly the number of bytes present; always in native byte order."""
    dtype = _plain_dtype(dtype, "array")
    shape = _checked_shape(shape, "array")
    raw = _raw_bytes(raw, "array", budget)
    count = math.prod(shape)
    if count * dtype.itemsize != len(raw):
        raise UnsafePickleError(f"array: shape {shape} of {dtype.str} needs {count * dtype.itemsize} bytes, "
                                f"the file holds {len(raw)}")
    budget.charge(_OBJECT_BYTES + len(raw))
    # bool data is read as bytes and compared, so every element is a clean 0 or 1.
    flat = np.frombuffer(raw, dtype=np.uint8 if dtype.kind == "b" else dtype, count=count)
    try:
        view = flat.reshape(shape, order="F" if fortran else "C")
    except ValueError as e:
        raise UnsafePickleError(f"array: shape {shape}: {e}") from None
    if dtype.kind == "b":
        return view.astype(bool)
    return np.array(view, dtype=dtype.newbyteorder("="), order="K", copy=True)


def build_reconstruct(args: tuple, budget: Budget) -> Pending:
    """``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')``, exactly as NumPy pickles an array;
    the array itself is built from the BUILD state that follows."""
    if len(args) != 3 or args[0] is not NDARRAY or args[1] != (0,) or args[2] not in (b"b", "b"):
        raise UnsafePickleError(f"_reconstruct is only accepted as NumPy writes it, got {bounded_repr(args)}")
    return Pending("array", lambda state: _finish_array(state, budget))


def _finish_array(state: Any, budget: Budget) -> np.ndarray:
    """An array's BUILD state: ``(version, shape, dtype, is_fortran, data)`` (or without version)."""
    if type(state) is not tuple or len(state) not in (4, 5) or (len(state) == 5 and state[0] != 1):
        raise UnsafePickleError(f"array: unexpected state {bounded_repr(state)}")
    shape, dtype, fortran, raw = state[-4:]
    if not _is_flag(fortran):
        raise UnsafePickleError(f"array: bad order flag {bounded_repr(fortran)}")
    return array_from_bytes(raw, dtype, shape, bool(fortran), budget)


def build_frombuffer(args: tuple, budget: Budget) -> np.ndarray:
    """``numpy.core.numeric._frombuffer(data, dtype, shape, order)`` (protocol 5 arrays, data in-band)."""
    if len(args) != 4 or args[3] not in ("C", "F"):
        raise UnsafePickleError(f"_frombuffer: unexpected arguments {bounded_repr(args)}")
    return array_from_bytes(args[0], args[1], args[2], args[3] == "F", budget)


def build_scalar(args: tuple, budget: Budget) -> np.generic:
    """``numpy.core.multiarray.scalar(dtype, data)``: a NumPy scalar of a plain dtype from its bytes."""
    if len(args) != 2:
        raise UnsafePickleError(f"numpy scalar: unexpected arguments {bounded_repr(args)}")
    dtype = _plain_dtype(args[0], "numpy scalar")
    return array_from_bytes(args[1], dtype, (), False, budget)[()]


def _refuse_ndarray(args: tuple, budget: Budget) -> Any:
    raise UnsafePickleError("numpy.ndarray(shape) is refused: arrays are only rebuilt from the raw bytes "
                            "the file holds")


NDARRAY = Builder("numpy.ndarray", _refuse_ndarray)


# ------------------------------------------------------------------------------------- builtins

KEY_TYPES = (str, bytes, bool, int, type(None))


def check_key(key: Any) -> None:
    """A dict key or set member must be cheap to hash and unable to collide on purpose: a string, bytes,
    a bool, None, an int below 2**61, or a tuple / frozenset of at most :data:`MAX_KEY_ITEMS` of those
    (hashing a deep or wide tuple recurses or takes time for every key that repeats it)."""
    todo, seen = [key], 0
    while todo:
        item = todo.pop()
        seen += 1
        kind = type(item)
        if seen > MAX_KEY_ITEMS:
            raise UnsafePickleError(f"a dict key or set member holds more than {MAX_KEY_ITEMS} values")
        if kind is tuple or kind is frozenset:
            todo.extend(item)
        elif kind not in KEY_TYPES or (kind is int and not -(2**61) < item < 2**61):
            raise UnsafePickleError(f"refusing {bounded_repr(item)} as a dict key or set member (annotation "
                                    "files key dicts by strings)")


def _items(value: Any, what: str, budget: Budget) -> list | tuple | set | frozenset:
    """The iterable argument of list(), tuple(), set(), frozenset(): a container, charged for a copy."""
    if type(value) not in (list, tuple, set, frozenset):
        raise UnsafePickleError(f"{what}() of {bounded_repr(value)} is refused")
    budget.charge_container(len(value))
    return value


def _one_arg(args: tuple, what: str) -> Any:
    if len(args) > 1:
        raise UnsafePickleError(f"{what}() with {len(args)} arguments is refused")
    return args[0] if args else None


def _build_sequence(kind: type) -> Callable[[tuple, Budget], Any]:
    def build(args: tuple, budget: Budget) -> Any:
        value = _one_arg(args, kind.__name__)
        if value is None:
            return kind()
        items = _items(value, kind.__name__, budget)
        if kind in (set, frozenset):
            for item in items:
                check_key(item)
        return kind(items)
    return build


def _build_bytes(kind: type) -> Callable[[tuple, Budget], Any]:
    def build(args: tuple, budget: Budget) -> Any:
        value = _one_arg(args, kind.__name__)
        if value is None:
            return kind()
        if type(value) not in (bytes, bytearray):
            raise UnsafePickleError(f"{kind.__name__}() of {bounded_repr(value)} is refused: bytes are only "
                                    "built from byte data the file holds, never from a size")
        budget.charge(_OBJECT_BYTES + len(value))
        return kind(value)
    return build


def _build_dict(args: tuple, budget: Budget) -> dict:
    value = _one_arg(args, "dict")
    if value is None:
        return {}
    if type(value) is not dict:
        raise UnsafePickleError(f"dict() of {bounded_repr(value)} is refused")
    budget.charge_container(3 * len(value))
    return dict(value)


def _build_number(kind: type) -> Callable[[tuple, Budget], Any]:
    """int(), float(), bool(), complex(), str(): only from numbers or short strings (str() only from a
    string: formatting anything else could take unbounded time and memory)."""
    def build(args: tuple, budget: Budget) -> Any:
        if len(args) > 2 or (len(args) == 2 and kind is not complex):
            raise UnsafePickleError(f"{kind.__name__}() with {len(args)} arguments is refused")
        for value in args:
            numeric = type(value) in (bool, int, float) and kind is not str
            if type(value) is int and value.bit_length() > 1024:
                numeric = False
            short_text = type(value) is str and (kind is str or len(value) <= _MAX_TEXT_NUMBER)
            if not (numeric or short_text):
                raise UnsafePickleError(f"{kind.__name__}() of {bounded_repr(value)} is refused")
        if kind is str and args:
            budget.charge(_OBJECT_BYTES + len(args[0]))
        return kind(*args)
    return build


def _build_codecs_encode(args: tuple, budget: Budget) -> bytes:
    """``_codecs.encode(text, 'latin1')``: how protocol <= 2 stores bytes (array data among them)."""
    if len(args) != 2 or type(args[0]) is not str or type(args[1]) is not str \
            or args[1].lower() not in ("latin1", "latin-1", "iso-8859-1", "iso8859-1"):
        raise UnsafePickleError("_codecs.encode is only accepted as (text, 'latin1'), got "
                                f"{bounded_repr(args)}")
    budget.charge(_OBJECT_BYTES + len(args[0]))
    try:
        return args[0].encode("latin-1")
    except UnicodeEncodeError:
        raise UnsafePickleError("_codecs.encode: the text is not latin-1") from None


BUILTINS: dict[str, Builder] = {
    **{k.__name__: Builder(f"builtins.{k.__name__}", _build_sequence(k))
       for k in (list, tuple, set, frozenset)},
    **{k.__name__: Builder(f"builtins.{k.__name__}", _build_bytes(k)) for k in (bytes, bytearray)},
    **{k.__name__: Builder(f"builtins.{k.__name__}", _build_number(k))
       for k in (int, float, bool, complex, str)},
    "dict": Builder("builtins.dict", _build_dict),
}
CODECS_ENCODE = Builder("_codecs.encode", _build_codecs_encode)
DTYPE = Builder("numpy.dtype", build_dtype)
RECONSTRUCT = Builder("numpy.core.multiarray._reconstruct", build_reconstruct)
SCALAR = Builder("numpy.core.multiarray.scalar", build_scalar)
FROMBUFFER = Builder("numpy.core.numeric._frombuffer", build_frombuffer)
