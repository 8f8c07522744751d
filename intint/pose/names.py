"""Names in an annotation file are data, never paths: the rules for split names and frame_dirs, and
bounded descriptions of untrusted values for error messages.

Why these rules: a split name becomes part of file names (``{split}-{i:06d}.tar``), so it is held to
a short ``[A-Za-z0-9_-]+`` (no ``/``, no ``..``, never empty) and a bad one refuses the build; a
frame_dir is only stored (tar member JSON, Arrow column, ``rejects.jsonl``) and hashed into the tar key,
so any printable text is fine, but it must encode to UTF-8 (no lone surrogates), hold no control,
format or line-separator characters (which would garble logs and JSON lines) and be of bounded length;
a bad one rejects its sample. Every value that reaches an error message passes through
:func:`intint.pose.pickle_builders.bounded_repr`, which never formats an unbounded object (a 100 MB
string, a 10**100000 integer, a deeply nested list).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from intint.pose.pickle_builders import bounded_repr

SPLIT_NAME_RULE = "1-64 characters from A-Z a-z 0-9 _ -"
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_FRAME_DIR_CHARS = 1024
# Control (Cc), format (Cf, e.g. bidi overrides), surrogate (Cs), line and paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_SHOWN_CHARS = 120


def split_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be a split name (it becomes part of shard file names), or None if it can."""
    if not isinstance(name, str):
        return f"split name {bounded_repr(name)} is not a string"
    if not _SPLIT_NAME.fullmatch(name):
        return f"split name {bounded_repr(name)} is not {SPLIT_NAME_RULE}"
    return None


def frame_dir_problem(frame_dir: str) -> str | None:
    """Why ``frame_dir`` cannot name a video (see the module docstring), or None if it can."""
    if not frame_dir:
        return "frame_dir is empty"
    if len(frame_dir) > MAX_FRAME_DIR_CHARS:
        return f"frame_dir has {len(frame_dir)} characters, more than {MAX_FRAME_DIR_CHARS}"
    if frame_dir.isascii() and frame_dir.isprintable():
        return None
    try:
        frame_dir.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"frame_dir is not valid UTF-8 text (lone surrogate at character {e.start})"
    for i, ch in enumerate(frame_dir):
        if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
            return f"frame_dir holds the control or format character U+{ord(ch):04X} at character {i}"
    return None


def display_name(frame_dir: str) -> str:
    """``frame_dir`` itself when it is a valid name, else a bounded, escaped rendering of it (for
    ``rejects.jsonl`` and messages: always valid UTF-8, one line)."""
    if frame_dir_problem(frame_dir) is None:
        return frame_dir
    return repr(frame_dir[:_SHOWN_CHARS])[1:-1] + ("…" if len(frame_dir) > _SHOWN_CHARS else "")

