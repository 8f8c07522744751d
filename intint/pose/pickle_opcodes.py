"""The opcodes of the safe unpickler's machine (:mod:`intint.pose.pickle_machine`): one handler per
pickle opcode of protocols 0-5, and the table from opcode byte to handler.

Each handler reads its argument through the machine (which checks it is there), charges what it creates
to the load's budget before creating it, and adds items only to a list, dict or set of exactly that type
(pickle's own APPEND would call ``append`` on any object); opcodes that instantiate classes by name,
use persistent ids, extension codes or out-of-band buffers are refused.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from intint.pose.pickle_builders import (
    MalformedPickleError,
    Pending,
    UnsafePickleError,
    bounded_repr,
    check_key,
)

if TYPE_CHECKING:
    from intint.pose.pickle_machine import PickleMachine

_OBJECT = 64  # bytes charged for a new Python object beside its payload
_SLOT = 8  # bytes charged for one more reference (stack, memo, container slot)


def no_pending(items: Any) -> Any:
    """``items`` (a list of values about to go into a container), refusing a half-built dtype / array."""
    if Pending in map(type, items):
        raise UnsafePickleError("a dtype or array is used before its state was set")
    return items



# Each handler takes the machine; the table at the end maps opcode bytes to them.


def _text_int(m: PickleMachine) -> int:
    return int(m.line())


def _op_int(m: PickleMachine) -> None:
    text = m.line()
    value: Any = {b"00": False, b"01": True}.get(text)
    m.push(int(text) if value is None else value, _OBJECT)


def _op_long(m: PickleMachine) -> None:
    text = m.line()
    m.push(int(text[:-1] if text.endswith(b"L") else text), _OBJECT + len(text))


def _op_long_bytes(m: PickleMachine, n: int) -> None:
    if n < 0:
        raise MalformedPickleError("negative LONG4 length")
    m.push(int.from_bytes(m.payload(n), "little", signed=True), _SLOT)


def _op_string(m: PickleMachine) -> None:
    """Protocol 0 ``S'...'`` (a Python 2 str): unescaped, then read as latin-1 text."""
    text = m.line()
    if len(text) < 2 or text[0] != text[-1] or text[:1] not in (b"'", b'"'):
        raise MalformedPickleError("the STRING opcode argument must be quoted")
    m.budget.charge(_OBJECT + len(text))
    m.push(codecs.escape_decode(text[1:-1])[0].decode("latin-1"))


def _push_text(m: PickleMachine, n: int, encoding: str) -> None:
    raw = m.payload(n)
    m.push(str(raw, encoding, "surrogatepass") if encoding == "utf-8" else str(raw, encoding))


def _push_bytes(m: PickleMachine, n: int, kind: type) -> None:
    m.push(kind(m.payload(n)))


def _op_unicode(m: PickleMachine) -> None:
    text = m.line()
    m.budget.charge(_OBJECT + len(text))
    m.push(str(text, "raw-unicode-escape"))


def _op_pop(m: PickleMachine) -> None:
    if m.stack:
        m.stack.pop()
    else:
        m.pop_mark()


def _op_dup(m: PickleMachine) -> None:
    if not m.stack:
        raise MalformedPickleError("DUP on an empty stack")
    m.push(m.stack[-1])


def _op_mark(m: PickleMachine) -> None:
    m.budget.charge(_OBJECT)
    m.metastack.append(m.stack)
    m.stack = []


def _op_stop(m: PickleMachine) -> None:
    if not m.stack:
        raise MalformedPickleError("STOP with an empty stack")
    m.result = no_pending([m.stack.pop()])[0]
    m.done = True


def _op_proto(m: PickleMachine) -> None:
    version = m.byte()
    if version > 5:
        raise MalformedPickleError(f"unsupported pickle protocol {version}")


def _op_frame(m: PickleMachine) -> None:
    size = m.unpack(_FIELDS["<Q"])
    if size > len(m.data) - m.pos:
        raise MalformedPickleError(f"truncated pickle: a frame of {size} bytes, the data holds "
                                   f"{len(m.data) - m.pos}")


def _op_tuple(m: PickleMachine, n: int | None) -> None:
    items = no_pending(m.pop_mark() if n is None else m.pop_values(n))
    m.budget.charge(_OBJECT + _SLOT * len(items))
    m.push(tuple(items))


def _op_list(m: PickleMachine) -> None:
    items = no_pending(m.pop_mark())
    m.push(items, _OBJECT + _SLOT * len(items))


def _dict_of(m: PickleMachine, items: list[Any], target: dict | None = None) -> dict:
    if len(items) % 2:
        raise MalformedPickleError("odd number of items for a dict")
    no_pending(items)
    keys = items[0::2]
    for key in keys:
        check_key(key)
    m.budget.charge(3 * _SLOT * len(keys))
    target = {} if target is None else target
    target.update(zip(keys, items[1::2], strict=True))
    return target


def _op_dict(m: PickleMachine) -> None:
    m.push(_dict_of(m, m.pop_mark()), _OBJECT)


def _target(m: PickleMachine, kind: type) -> Any:
    if not m.stack or type(m.stack[-1]) is not kind:
        found = bounded_repr(m.stack[-1]) if m.stack else "nothing"
        raise UnsafePickleError(f"refusing to add items to {found}: only a {kind.__name__} takes them")
    return m.stack[-1]


def _op_append(m: PickleMachine) -> None:
    value = no_pending(m.pop_values(1))[0]
    m.budget.charge(_SLOT)
    _target(m, list).append(value)


def _op_appends(m: PickleMachine) -> None:
    items = no_pending(m.pop_mark())
    m.budget.charge(_SLOT * len(items))
    _target(m, list).extend(items)


def _op_setitem(m: PickleMachine) -> None:
    items = m.pop_values(2)
    _dict_of(m, items, _target(m, dict))


def _op_setitems(m: PickleMachine) -> None:
    items = m.pop_mark()
    _dict_of(m, items, _target(m, dict))


def _set_items(m: PickleMachine, items: list[Any]) -> list[Any]:
    for item in no_pending(items):
        check_key(item)
    m.budget.charge(4 * _SLOT * len(items))
    return items


def _op_additems(m: PickleMachine) -> None:
    items = m.pop_mark()
    _target(m, set).update(_set_items(m, items))


def _op_frozenset(m: PickleMachine) -> None:
    m.push(frozenset(_set_items(m, m.pop_mark())), _OBJECT)


def _op_global(m: PickleMachine) -> None:
    module = m.line().decode("utf-8")
    name = m.line().decode("utf-8")
    m.global_(module, name)


def _op_stack_global(m: PickleMachine) -> None:
    module, name = m.pop_values(2)
    m.global_(module, name)


def _op_reduce(m: PickleMachine) -> None:
    func, args = m.pop_values(2)
    m.push(m.call(func, args), _OBJECT)


def _op_newobj(m: PickleMachine) -> None:
    cls, args = m.pop_values(2)
    m.push(m.instantiate(cls, args, {}), _OBJECT)


def _op_newobj_ex(m: PickleMachine) -> None:
    cls, args, kwargs = m.pop_values(3)
    m.push(m.instantiate(cls, args, kwargs), _OBJECT)


def _refuse(what: str) -> Callable[[PickleMachine], None]:
    def handler(m: PickleMachine) -> None:
        raise UnsafePickleError(f"refusing {what}")
    return handler


def _unpacked(fmt: str, then: Callable[..., None], *extra: Any) -> Callable[[PickleMachine], None]:
    field = _FIELDS[fmt]
    return lambda m: then(m, m.unpack(field), *extra)


_FIELDS = {fmt: struct.Struct(fmt) for fmt in ("<B", "<H", "<i", "<I", "<Q", ">d")}


_HANDLERS: dict[bytes, Callable[[PickleMachine], None]] = {
    b"(": _op_mark, b".": _op_stop, b"0": _op_pop, b"1": lambda m: m.pop_mark() and None, b"2": _op_dup,
    b"\x80": _op_proto, b"\x95": _op_frame,
    # numbers and constants
    b"N": lambda m: m.push(None), b"\x88": lambda m: m.push(True), b"\x89": lambda m: m.push(False),
    b"I": _op_int, b"J": lambda m: m.push(m.unpack(_FIELDS["<i"]), _OBJECT), b"K": lambda m: m.push(m.byte()),
    b"M": lambda m: m.push(m.unpack(_FIELDS["<H"]), _OBJECT), b"L": _op_long,
    b"\x8a": _unpacked("<B", _op_long_bytes), b"\x8b": _unpacked("<i", _op_long_bytes),
    b"F": lambda m: m.push(float(m.line()), _OBJECT),
    b"G": lambda m: m.push(m.unpack(_FIELDS[">d"]), _OBJECT),
    # strings and bytes (Python 2 str opcodes read as latin-1 text)
    b"S": _op_string, b"V": _op_unicode,
    b"T": _unpacked("<i", _push_text, "latin-1"), b"U": _unpacked("<B", _push_text, "latin-1"),
    b"X": _unpacked("<I", _push_text, "utf-8"), b"\x8c": _unpacked("<B", _push_text, "utf-8"),
    b"\x8d": _unpacked("<Q", _push_text, "utf-8"),
    b"B": _unpacked("<I", _push_bytes, bytes), b"C": _unpacked("<B", _push_bytes, bytes),
    b"\x8e": _unpacked("<Q", _push_bytes, bytes), b"\x96": _unpacked("<Q", _push_bytes, bytearray),
    # containers
    b")": lambda m: m.push((), _OBJECT), b"t": lambda m: _op_tuple(m, None),
    b"\x85": lambda m: _op_tuple(m, 1), b"\x86": lambda m: _op_tuple(m, 2),
    b"\x87": lambda m: _op_tuple(m, 3),
    b"]": lambda m: m.push([], _OBJECT), b"l": _op_list, b"a": _op_append, b"e": _op_appends,
    b"}": lambda m: m.push({}, _OBJECT), b"d": _op_dict, b"s": _op_setitem, b"u": _op_setitems,
    b"\x8f": lambda m: m.push(set(), _OBJECT), b"\x90": _op_additems, b"\x91": _op_frozenset,
    # memo
    b"g": lambda m: m.get(_text_int(m)), b"h": lambda m: m.get(m.byte()),
    b"j": lambda m: m.get(m.unpack(_FIELDS["<I"])), b"p": lambda m: m.put(_text_int(m)),
    b"q": lambda m: m.put(m.byte()), b"r": lambda m: m.put(m.unpack(_FIELDS["<I"])),
    b"\x94": lambda m: m.put(len(m.memo)),
    # globals, calls, state
    b"c": _op_global, b"\x93": _op_stack_global, b"R": _op_reduce, b"b": lambda m: m.build(),
    b"\x81": _op_newobj, b"\x92": _op_newobj_ex,
    b"i": _refuse("INST (instantiating a class by name)"), b"o": _refuse("OBJ (instantiating a class)"),
    b"P": _refuse("persistent ids"), b"Q": _refuse("persistent ids"),
    b"\x82": _refuse("extension codes"), b"\x83": _refuse("extension codes"),
    b"\x84": _refuse("extension codes"),
    b"\x97": _refuse("out-of-band buffers"), b"\x98": _refuse("out-of-band buffers"),
}
DISPATCH: list[Callable[[PickleMachine], None] | None] = [None] * 256
for _code, _handler in _HANDLERS.items():
    DISPATCH[_code[0]] = _handler


def _opcode_names() -> dict[int, str]:
    import pickletools

    return {op.code.encode("latin-1")[0]: op.name for op in pickletools.opcodes}


OPCODE_NAMES: dict[int, str] = _opcode_names()
