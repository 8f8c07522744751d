"""Hostile and broken annotation pickles (issue 13, "Pickle loading"): every attack is refused with a clean
``UnsafePickleError`` in bounded memory and time, and fuzzed input never crashes the loader.

The attack files are written opcode by opcode below (``pickletools`` names in comments), so each test holds
the exact bytes it feeds the loader. Attacks run in a child process under ``RLIMIT_AS`` (a memory bomb
must not take the test run down, a forged pointer must not crash it) that also loads, validates and
prints what it got, as a user of a loaded file would.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import tracemalloc
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intint.pose.annotations import AnnotationError, parse_annotations, validate
from intint.pose.safe_pickle import (
    ALLOWED_GLOBALS,
    LoadLimits,
    MalformedPickleError,
    RestrictedUnpickler,
    UnsafePickleError,
    bounded_repr,
    safe_loads,
)
from intint.testing import synthetic

REPO = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------- opcodes by hand

NONE, TRUE, FALSE = b"N", b"\x88", b"\x89"  # NONE, NEWTRUE, NEWFALSE


def text(value: str) -> bytes:  # BINUNICODE
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def raw(data: bytes) -> bytes:  # BINBYTES
    return b"B" + struct.pack("<I", len(data)) + data


def num(value: int) -> bytes:  # BININT
    return b"J" + struct.pack("<i", value)


def glob(module: str, name: str) -> bytes:  # GLOBAL
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tup(*items: bytes) -> bytes:  # MARK ... TUPLE
    return b"(" + b"".join(items) + b"t"


def lst(*items: bytes) -> bytes:  # MARK ... LIST
    return b"(" + b"".join(items) + b"l"


def dct(*pairs: tuple[bytes, bytes]) -> bytes:  # EMPTY_DICT MARK key value ... SETITEMS
    return b"}(" + b"".join(k + v for k, v in pairs) + b"u"


def call(func: bytes, *args: bytes) -> bytes:  # func args REDUCE
    return func + tup(*args) + b"R"


def build(obj: bytes, state: bytes) -> bytes:  # obj state BUILD
    return obj + state + b"b"


def dtype_obj(code: str) -> bytes:
    return call(glob("numpy", "dtype"), text(code), FALSE, TRUE)


def plain_dtype(code: str, order: str = "<") -> bytes:
    """A dtype exactly as NumPy pickles it: numpy.dtype(code, False, True) + BUILD of its state."""
    return build(dtype_obj(code), tup(num(3), text(order), NONE, NONE, NONE, num(-1), num(-1), num(0)))


def array(dtype: bytes, shape: tuple[int, ...], data: bytes) -> bytes:
    """An array as protocols 2-4 pickle it: _reconstruct(ndarray, (0,), b'b') + BUILD of its state."""
    empty = call(glob("numpy.core.multiarray", "_reconstruct"), glob("numpy", "ndarray"), tup(num(0)),
                 raw(b"b"))
    return build(empty, tup(num(1), tup(*map(num, shape)), dtype, FALSE, raw(data)))


def annotation_file(**fields: bytes) -> bytes:
    """A one-video PYSKL file (protocol 3) whose fields are the given opcode bytes (defaults: valid)."""
    video = {"frame_dir": text("v0"), "label": num(0), "total_frames": num(1),
             "img_shape": tup(num(240), num(320)),
             "keypoint": array(plain_dtype("f4"), (1, 1, 17, 2), np.full(34, 5, "<f4").tobytes()),
             "keypoint_score": array(plain_dtype("f4"), (1, 1, 17), np.ones(17, "<f4").tobytes())}
    video.update(fields)
    videos = lst(dct(*((text(k), v) for k, v in video.items())))
    return b"\x80\x03" + dct((text("split"), dct((text("train"), lst(text("v0"))))),
                             (text("annotations"), videos)) + b"."


# The memory-corruption attack: a dtype whose state declares an object field at offset 0 while its
# flags (0) claim it holds no objects; an array of it built from raw bytes holds the pointer 0x4141....
OBJECT_DTYPE = build(dtype_obj("O"), tup(num(3), text("|"), NONE, NONE, NONE, num(-1), num(-1), num(63)))
OBJECT_FIELD = dct((text("f0"), tup(OBJECT_DTYPE, num(0))))
FORGED_STATE = tup(num(3), text("|"), NONE, tup(text("f0")), OBJECT_FIELD, num(8), num(1), num(0))
FORGED_DTYPE = build(dtype_obj("V8"), FORGED_STATE)
# A float64 whose state claims a field (itself a float64): no plain dtype's state says that.
PLAIN_FIELD = dct((text("f0"), tup(plain_dtype("f8"), num(0))))
FORGED_PLAIN_DTYPE = build(dtype_obj("f8"),
                           tup(num(3), text("<"), NONE, tup(text("f0")), PLAIN_FIELD, num(8), num(1), num(0)))


def billion_laughs(levels: int = 30, width: int = 10) -> bytes:
    """A list of `width` references to a list of `width` references ... `levels` deep: 10**30 leaves from
    ~700 bytes (each level memoized with BINPUT and fetched with BINGET)."""
    out = lst(text("lol")) + b"q\x00" + b"0"  # LIST BINPUT 0 POP
    for k in range(1, levels + 1):
        out += lst(*[b"h" + bytes([k - 1])] * width) + b"q" + bytes([k]) + b"0"
    return out + b"h" + bytes([levels])


DEEP = 5_000  # levels: far beyond what repr() and friends recurse through, well inside the memory budget
RECONSTRUCT = glob("numpy.core.multiarray", "_reconstruct")
CODECS = glob("_codecs", "encode")


def label_is(payload: bytes) -> bytes:
    return annotation_file(label=payload)


ATTACKS: dict[str, tuple[bytes, str]] = {  # name: (file, what the refusal must say)
    "forged object-field dtype as label": (
        label_is(array(FORGED_DTYPE, (1,), b"A" * 8)), "numpy.dtype 'V8' is refused"),
    "forged object-field dtype as img_shape": (
        annotation_file(img_shape=array(FORGED_DTYPE, (2,), b"A" * 16)), "numpy.dtype 'V8' is refused"),
    "plain dtype whose state claims fields": (
        label_is(array(FORGED_PLAIN_DTYPE, (1,), b"A" * 8)), "claims fields"),
    "object dtype": (label_is(array(OBJECT_DTYPE, (1,), b"A" * 8)), "numpy.dtype 'O' is refused"),
    "ndarray(shape) of 12.7 GiB": (
        annotation_file(keypoint=call(glob("numpy", "ndarray"), tup(num(100_000_000), num(17), num(2)),
                                      plain_dtype("f4"))), r"numpy.ndarray\(shape\) is refused"),
    "bytes(N) of 2 GiB": (label_is(call(glob("builtins", "bytes"), num(2**31 - 1))), "never from a size"),
    "bytearray(N) of 2 GiB": (
        label_is(call(glob("builtins", "bytearray"), num(2**31 - 1))), "never from a size"),
    "array larger than its bytes": (
        annotation_file(keypoint=array(plain_dtype("f4"), (1, 10**6, 17, 2), bytes(136))),
        "the file holds 136"),
    "_frombuffer larger than its bytes": (
        annotation_file(keypoint=call(glob("numpy.core.numeric", "_frombuffer"), raw(bytes(8)),
                                      plain_dtype("f4"), tup(num(2**30)), text("C"))), "the file holds 8"),
    "billion-laughs label": (label_is(billion_laughs()), "billion laughs"),
    "label nested 5000 deep": (label_is(b"(" * DEEP + b"l" * DEEP), "nesting deeper than 64"),
    # A tuple key is hashed when the dict is filled; hashing a million nested tuples overflows the C stack.
    # EMPTY_DICT EMPTY_TUPLE TUPLE1 ... BININT SETITEM
    "dict key: tuple nested 10**6 deep": (label_is(b"})" + b"\x85" * 10**6 + num(1) + b"s"), "memory bomb"),
    "dict key: tuple nested 100 deep": (
        label_is(b"})" + b"\x85" * 100 + num(1) + b"s"), "dict key or set member holds more"),
    "1 MB of empty lists (64 MB built)": (label_is(b"(" + b"]" * 1_000_000 + b"l"), "memory bomb"),
    "_codecs.encode with an unknown codec": (
        label_is(call(CODECS, text("a"), text("no-such-codec"))), r"only accepted as \(text"),
    "_codecs.encode of a number": (
        label_is(call(CODECS, num(1), text("latin1"))), r"only accepted as \(text"),
    "_reconstruct misused": (label_is(call(RECONSTRUCT, num(1), num(2), num(3))), "only accepted as NumPy"),
}

PROBE = r"""
import json, resource, sys, time, tracemalloc
from intint.pose.annotations import AnnotationError, parse_annotations, validate
from intint.pose.safe_pickle import UnsafePickleError
data = sys.stdin.buffer.read()
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
tracemalloc.start()
start = time.perf_counter()
try:
    raw = parse_annotations(data, source="attack.pkl")
    outcome = "loaded"
    found = validate(raw)
    shown = repr(raw)  # what printing a loaded file does: it must never crash or explode
    outcome = f"loaded: {len(found.rejects)} rejects, repr of {len(shown)} characters"
except (AnnotationError, UnsafePickleError) as err:
    outcome = f"refused {type(err).__name__}: {err}"
print(json.dumps({"outcome": outcome, "seconds": time.perf_counter() - start,
                  "peak": tracemalloc.get_traced_memory()[1]}))
"""
RLIMIT_AS = 1536 * 2**20


def probe(data: bytes) -> dict[str, Any]:
    """Load ``data`` in a child process limited to 1.5 GB of address space; what happened, how long it took
    and the peak of traced memory. A crash, a hang (60 s) or an unexpected exception fails the test."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(RLIMIT_AS)], input=data, capture_output=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, f"the load crashed (rc {proc.returncode}): {proc.stderr.decode()[-2000:]}"
    return json.loads(proc.stdout)


def test_the_hand_built_file_is_valid_without_an_attack() -> None:
    found = validate(parse_annotations(annotation_file()))
    assert list(found.samples) == ["v0"] and not found.rejects
    assert found.samples["v0"].keypoint.dtype == np.float32 and found.samples["v0"].keypoint[0, 0, 3, 1] == 5


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_is_refused_cleanly_in_bounded_memory_and_time(name: str) -> None:
    data, says = ATTACKS[name]
    report = probe(data)
    assert report["outcome"].startswith("refused UnsafePickleError: "), report
    assert re.search(says, report["outcome"]), report
    assert len(report["outcome"]) < 500  # the message never formats the hostile value
    assert report["seconds"] < 5, report
    assert report["peak"] < 50 * 2**20, report


@pytest.mark.parametrize("name", ["truncated", "text", "gzip", "empty", "npz", "random"])
def test_files_that_are_not_pickles_are_malformed_not_crashes(name: str) -> None:
    good = pickle.dumps(synthetic.make_annotations(3, 2, seed=0), protocol=4)
    data = {"truncated": good[: len(good) // 2], "text": b"frame_dir,label\nv0,1\n",
            "gzip": gzip.compress(good), "empty": b"", "npz": b"PK\x03\x04" + bytes(40),
            "random": bytes(range(7, 256))}[name]
    hint = {"text": "looks like text", "gzip": "gzip", "empty": "empty", "npz": "zip",
            "truncated": "truncated"}
    with pytest.raises(MalformedPickleError) as err:
        safe_loads(data)
    assert hint.get(name, "") in str(err.value)


def test_every_prefix_of_a_pickle_is_refused_as_malformed() -> None:
    for protocol in (0, 2, 5):
        data = pickle.dumps(synthetic.make_annotations(1, 2, seed=3, frames=(2, 3)), protocol=protocol)
        for n in range(len(data)):
            with pytest.raises(MalformedPickleError):
                safe_loads(data[:n])


# ------------------------------------------------------------------------------------- what still loads


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):  # same values bit for bit (NaN included), now in native byte order
        native = a.astype(a.dtype.newbyteorder("="))
        same_bits = np.ascontiguousarray(native).tobytes() == np.ascontiguousarray(b).tobytes()
        return (isinstance(b, np.ndarray) and a.shape == b.shape and native.dtype == b.dtype
                and b.dtype.isnative and same_bits)
    if isinstance(a, np.generic):
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


PLAIN = ["?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"]


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    """Arrays of every plain dtype from random bytes, some big-endian, some in Fortran order."""
    code = draw(st.sampled_from(PLAIN))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=4)))
    size = int(np.prod(shape)) * np.dtype(code).itemsize
    arr = np.frombuffer(draw(st.binary(min_size=size, max_size=size)), "u1" if code == "?" else code)
    arr = (arr % 2).astype(bool) if code == "?" else arr.copy()
    arr = arr.reshape(shape)
    arr = arr.astype(arr.dtype.newbyteorder(">")) if draw(st.booleans()) else arr
    return np.asfortranarray(arr) if draw(st.booleans()) else arr


leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20),
                   st.binary(max_size=20), arrays(), st.integers(-100, 100).map(np.int64),
                   st.floats(-1, 1).map(np.float32))
values = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner),
    st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=20)


@settings(max_examples=150, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(value=values, protocol=st.integers(0, 5))
def test_plain_data_and_arrays_round_trip_in_every_protocol(value: Any, protocol: int) -> None:
    assert _same(value, safe_loads(pickle.dumps(value, protocol=protocol)))


def test_arrays_are_new_native_arrays_that_own_their_data() -> None:
    """Copied out of the file's bytes in every protocol (protocol 5 included, where pickle would hand back a
    big-endian view of a bytearray from the file)."""
    arrays_in = {"be": np.arange(6, dtype=">f4").reshape(2, 3),
                 "fortran": np.asfortranarray(np.arange(6, dtype="<i2").reshape(2, 3)), "bool": np.eye(2) > 0}
    for protocol in (2, 4, 5):
        out = safe_loads(pickle.dumps(arrays_in, protocol=protocol))
        for name, arr in out.items():
            assert arr.dtype.isnative and arr.flags.owndata and arr.flags.writeable and arr.base is None, name
            assert _same(arrays_in[name], arr), name
        assert out["fortran"].flags.f_contiguous


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32])
def test_real_files_load_within_half_the_memory_budget(protocol: int, dtype: Any) -> None:
    raw = synthetic.make_annotations(40, 4, splits=("train", "val"), seed=5)
    for ann in raw["annotations"]:
        ann["keypoint"] = ann["keypoint"].astype(dtype)
        ann["keypoint_score"] = ann["keypoint_score"].astype(dtype)
    tight = LoadLimits(bytes_per_file_byte=LoadLimits().bytes_per_file_byte // 2, extra_bytes=0)
    assert _same(raw, safe_loads(pickle.dumps(raw, protocol=protocol), limits=tight))


@pytest.mark.parametrize("value", [np.array([1], dtype=object), np.zeros(2, dtype=[("a", "f4")]),
                                   np.zeros(2, dtype=np.complex64), np.zeros(2, dtype="M8[s]"),
                                   np.zeros(2, dtype="U3")])
def test_dtypes_outside_the_plain_list_are_refused(value: Any) -> None:
    for protocol in (2, 5):
        with pytest.raises(UnsafePickleError, match="refused|not a plain|expected a plain"):
            safe_loads(pickle.dumps({"x": value}, protocol=protocol))


def test_bounded_repr_never_formats_an_unbounded_value() -> None:
    nested: list = []
    for _ in range(100_000):
        nested = [nested, nested]
    for value in (10**100_000, "x" * 10**7, nested, np.zeros((10**4, 10**3)), b"\x00" * 10**7):
        assert len(bounded_repr(value)) <= 101


class Point:
    def __init__(self, x: int) -> None:
        self.x = x


class _ExtendedUnpickler(RestrictedUnpickler):
    """What benchmarks/bench_loader.py does: the allow-list plus the subclass's own, trusted globals."""

    allowed = {**ALLOWED_GLOBALS, (Point.__module__, "Point"): Point, ("fractions", "Fraction"): Fraction,
               ("collections", "OrderedDict"): OrderedDict}


def test_a_subclass_extends_the_allow_list_and_only_it_does() -> None:
    data = pickle.dumps({"p": Point(3), "f": Fraction(1, 3), "a": np.arange(3)}, protocol=4)
    out = _ExtendedUnpickler(io.BytesIO(data)).load()
    assert out["p"].x == 3 and out["f"] == Fraction(1, 3) and list(out["a"]) == [0, 1, 2]
    with pytest.raises(UnsafePickleError, match="refusing to load global"):
        safe_loads(data)
    with pytest.raises(UnsafePickleError, match="refusing to add items"):  # OrderedDict takes no SETITEMS
        _ExtendedUnpickler(io.BytesIO(pickle.dumps(OrderedDict(a=1), protocol=2))).load()


def test_the_benchmarks_torch_allow_list_still_loads_shared_memory_tensors() -> None:
    import importlib
    from multiprocessing.reduction import ForkingPickler

    import torch

    class WireUnpickler(RestrictedUnpickler):  # benchmarks/bench_loader.py's _WireUnpickler
        allowed = {**ALLOWED_GLOBALS, **{
            (module, name): getattr(importlib.import_module(module), name) for module, name in (
                ("torch", "Size"), ("torch", "Tensor"), ("torch", "float16"), ("torch", "float32"),
                ("torch", "int64"), ("torch.storage", "UntypedStorage"),
                ("torch.multiprocessing.reductions", "rebuild_storage_fd"),
                ("torch.multiprocessing.reductions", "rebuild_tensor"),
                ("torch.multiprocessing.reductions", "rebuild_typed_storage"),
                ("multiprocessing.resource_sharer", "DupFd"))}}

    batch = {"heatmaps": torch.arange(12, dtype=torch.float16).reshape(3, 4).share_memory_(),
             "label": torch.tensor([1, 2], dtype=torch.int64).share_memory_(), "key": ["a", "b"]}
    out = WireUnpickler(io.BytesIO(bytes(ForkingPickler.dumps(batch)))).load()
    assert torch.equal(out["heatmaps"], batch["heatmaps"]) and torch.equal(out["label"], batch["label"])
    assert out["key"] == ["a", "b"]


# ------------------------------------------------------------------------------------- fuzzing

_FUZZ_BASES = [pickle.dumps(synthetic.make_annotations(2, 2, seed=7, frames=(3, 5)), protocol=p)
               for p in range(6)]
_OPCODES = [bytes([c]) for c in sorted({op.code.encode("latin-1")[0]
                                        for op in __import__("pickletools").opcodes})]
_mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2**20), st.integers(0, 255)),
    st.tuples(st.just("cut"), st.integers(0, 2**20)),
    st.tuples(st.just("insert"), st.integers(0, 2**20), st.sampled_from(_OPCODES), st.binary(max_size=9)))


def _mutated(base: bytes, mutations: list[tuple]) -> bytes:
    data = bytearray(base)
    for kind, where, *rest in mutations:
        at = where % (len(data) + 1)
        if kind == "flip" and at < len(data):
            data[at] = rest[0]
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = rest[0] + rest[1]
    return bytes(data)


def _load_cleanly(data: bytes) -> None:
    """Load and validate: it works or raises a clean error, and traced memory stays bounded."""
    tracemalloc.start()
    try:
        validate(parse_annotations(data))
    except (AnnotationError, UnsafePickleError):
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 16 * len(data) + 8 * 2**20


_FUZZ = settings(max_examples=400, deadline=None, database=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_never_crash_the_loader(data: bytes) -> None:
    _load_cleanly(data)


@_FUZZ
@given(st.sampled_from(range(len(_FUZZ_BASES))), st.lists(_mutations, min_size=1, max_size=4))
def test_fuzz_mutated_pickles_never_crash_the_loader(base: int, mutations: list[tuple]) -> None:
    _load_cleanly(_mutated(_FUZZ_BASES[base], mutations))
