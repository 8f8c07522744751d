"""The safe unpickler's machine: every pickle opcode the standard library writes (protocols 0-5),
interpreted here in Python, so that each one is checked and charged before it allocates.

Why not ``pickle.Unpickler``: its C machine calls whatever REDUCE and BUILD are given and allocates
what a length field says, and an allow-list of globals alone cannot stop a dtype state that forges
pointers, a ``bytes(N)`` of 10 GB or a dict key nested a million tuples deep (hashing it overflows the C
stack). Here: globals come only from the unpickler's ``find_class``; a global is called only if it is a
:class:`~intint.pose.pickle_builders.Builder` (which checks its arguments and builds the value itself)
or a callable of a subclass's extended allow-list; BUILD only completes a pending dtype or array, or sets
the state of an instance of an allowed class; lists, dicts and sets are filled only through their own
opcodes (never a method of another object); dict keys and set members are checked
(:func:`~intint.pose.pickle_builders.check_key`); and every allocation is charged to a
:class:`~intint.pose.pickle_builders.Budget`. Malformed input raises
:class:`~intint.pose.pickle_builders.MalformedPickleError` naming the byte offset, never a bare
``IndexError`` / ``EOFError``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from intint.pose.pickle_builders import (
    Budget,
    Builder,
    MalformedPickleError,
    Pending,
    UnsafePickleError,
    bounded_repr,
)
from intint.pose.pickle_opcodes import DISPATCH, OPCODE_NAMES

_OBJECT = 64  # bytes charged for a new Python object beside its payload
_SLOT = 8  # bytes charged for one more reference (stack, memo, container slot)
_CONTAINERS = (list, tuple, dict, set, frozenset)
# Errors of Python operations on malformed input; anything else is a bug and propagates as it is.
_MALFORMED = (IndexError, KeyError, struct.error, ValueError, TypeError, OverflowError, UnicodeError,
              AttributeError)


class PickleMachine:
    """One load: ``run()`` interprets ``data`` and returns the unpickled object.

    ``resolve(module, name)`` supplies globals (the unpickler's ``find_class``); objects it returned are
    the only non-builder callables REDUCE / NEWOBJ may call, and the only classes BUILD may set state on.
    """

    def __init__(self, data: bytes, resolve: Callable[[str, str], Any], budget: Budget) -> None:
        self.data = data
        self.view = memoryview(data)
        self.pos = 0
        self.op_at = 0
        self.resolve = resolve
        self.budget = budget
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.resolved: dict[int, Any] = {}  # id -> global handed out by resolve (kept alive here)
        self.result: Any = None
        self.done = False

    # ------------------------------------------------------------------------------------ the loop

    def run(self) -> Any:
        data, dispatch = self.data, DISPATCH
        try:
            while not self.done:
                if self.pos >= len(data):
                    raise MalformedPickleError("truncated pickle: the data ends before the STOP opcode")
                self.op_at = self.pos
                code = data[self.pos]
                self.pos += 1
                handler = dispatch[code]
                if handler is None:
                    raise MalformedPickleError(f"invalid opcode {code:#04x}")
                handler(self)
        except UnsafePickleError as err:
            raise type(err)(self._located(err.reason)) from None
        except _MALFORMED as err:
            reason = f"{type(err).__name__}: {str(err)[:200]}"
            raise MalformedPickleError(self._located(f"not a valid pickle ({reason})")) from None
        return self.result

    def _located(self, reason: str) -> str:
        where = f" (at byte {self.op_at}"
        code = self.data[self.op_at] if self.op_at < len(self.data) else None
        name = OPCODE_NAMES.get(code) if code is not None else None
        return reason + where + (f", opcode {name})" if name else ")")

    # ------------------------------------------------------------------------------------ reading

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise MalformedPickleError(f"truncated pickle: an opcode needs {n} bytes, the data holds "
                                       f"{len(self.data) - self.pos} more")
        chunk = self.view[self.pos:end]
        self.pos = end
        return chunk

    def unpack(self, fmt: struct.Struct) -> Any:
        end = self.pos + fmt.size
        if end > len(self.data):
            raise MalformedPickleError(f"truncated pickle: an opcode needs {fmt.size} bytes, the data holds "
                                       f"{len(self.data) - self.pos} more")
        value = fmt.unpack_from(self.data, self.pos)[0]
        self.pos = end
        return value

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise MalformedPickleError("truncated pickle: an opcode's argument is missing")
        self.pos += 1
        return self.data[self.pos - 1]

    def line(self) -> bytes:
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise MalformedPickleError("truncated pickle: a text opcode's line has no end")
        text = self.data[self.pos:end]
        self.pos = end + 1
        return text

    def payload(self, n: int) -> memoryview:
        """``n`` bytes of string / bytes data, charged before they are copied."""
        self.budget.charge(_OBJECT + n)
        return self.take(n)

    # ------------------------------------------------------------------------------------ stack

    def push(self, value: Any, cost: int = _SLOT) -> None:
        self.budget.charge(cost)
        self.stack.append(value)

    def pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise MalformedPickleError("an opcode needs a MARK that is not there")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def pop_values(self, n: int) -> list[Any]:
        if len(self.stack) < n:
            raise MalformedPickleError("stack underflow")
        values = self.stack[-n:]
        del self.stack[-n:]
        return values

    def put(self, key: int) -> None:
        if key < 0:
            raise MalformedPickleError(f"negative memo key {key}")
        if not self.stack:
            raise MalformedPickleError("memoizing from an empty stack")
        value = self.stack[-1]
        if key not in self.memo:
            self.budget.charge(4 * _SLOT)
        self.memo[key] = value
        if type(value) is Pending:
            value.memo_keys.append(key)

    def get(self, key: int) -> None:
        if key not in self.memo:
            raise MalformedPickleError(f"memo key {key} was never stored")
        self.push(self.memo[key])

    # ------------------------------------------------------------------------------------ globals and calls

    def global_(self, module: Any, name: Any) -> None:
        if type(module) is not str or type(name) is not str:
            raise MalformedPickleError("a global's module and name must be strings")
        obj = self.resolve(module, name)
        self.resolved[id(obj)] = obj
        self.push(obj)

    def call(self, func: Any, args: Any) -> Any:
        if type(args) is not tuple:
            raise MalformedPickleError(f"call arguments are {bounded_repr(args)}, not a tuple")
        if type(func) is Builder:
            return func.build(args, self.budget)
        if self.resolved.get(id(func)) is not func or not callable(func):
            raise UnsafePickleError(f"refusing to call {bounded_repr(func)}: only allowed globals are called")
        return func(*args)

    def instantiate(self, cls: Any, args: Any, kwargs: Any) -> Any:
        if (type(cls) is Builder or not isinstance(cls, type) or self.resolved.get(id(cls)) is not cls
                or type(args) is not tuple or type(kwargs) is not dict):
            raise UnsafePickleError(f"refusing to create an instance of {bounded_repr(cls)}")
        return cls.__new__(cls, *args, **kwargs)

    def build(self) -> None:
        """BUILD: complete a pending dtype / array, or set the state of an instance of an allowed class."""
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(state) is Pending:
            raise UnsafePickleError(f"{state.what} used before its own state was set")
        if type(inst) is Pending:
            obj = inst.finish(state)
            self.stack[-1] = obj
            for key in inst.memo_keys:
                if self.memo.get(key) is inst:
                    self.memo[key] = obj
            return
        if self.resolved.get(id(type(inst))) is not type(inst):
            raise UnsafePickleError(f"refusing to set the state of {bounded_repr(inst)}")
        _set_state(inst, state)


def _set_state(inst: Any, state: Any) -> None:
    """What ``pickle`` does for BUILD on an instance (classes of an extended allow-list only)."""
    setstate = getattr(inst, "__setstate__", None)
    if setstate is not None:
        setstate(state)
        return
    slotstate = None
    if type(state) is tuple and len(state) == 2:
        state, slotstate = state
    if state:
        inst.__dict__.update(state)
    if slotstate:
        for key, value in slotstate.items():
            setattr(inst, key, value)


def check_nesting(root: Any, max_depth: int, max_references: int) -> None:
    """Refuse a result nested deeper than ``max_depth`` (or containing itself) or whose containers,
    expanded as a tree, hold more than ``max_references`` references: shared sub-lists nested a few
    dozen times (a "billion laughs") are small in memory but explode in every ``repr``, copy or walk.
    Also refuses a half-built object or a bare allowed global left in the result."""
    todo = [(root, 0)]
    references = 1
    while todo:
        obj, depth = todo.pop()
        kind = type(obj)
        if kind is Pending or kind is Builder:
            raise UnsafePickleError(f"{bounded_repr(obj)} is left in the data")
        if kind not in _CONTAINERS:
            continue
        if depth >= max_depth:
            raise UnsafePickleError(f"nesting deeper than {max_depth} levels (or a container that holds "
                                    "itself)")
        children = (v for kv in obj.items() for v in kv) if kind is dict else obj
        references += 2 * len(obj) if kind is dict else len(obj)
        if references > max_references:
            raise UnsafePickleError(f"its containers expand to more than {max_references} references "
                                    "(sub-containers shared many times over: a 'billion laughs' structure)")
        for child in children:
            child_kind = type(child)
            if child_kind in _CONTAINERS or child_kind is Pending or child_kind is Builder:
                todo.append((child, depth + 1))
