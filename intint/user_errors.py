"""How every entry point ends on bad input: one line ``error: <file or sample>: <what>`` on stderr, exit 1.

The `intint` commands (`user_errors`) and the jobs/ scripts (`run_job`) share this one handler. Bad input
is the library's errors for it (annotation and pickle problems, a broken shard set, missing files, unknown
keys and splits, bad values, a run that cannot start) and object-store client errors (no credentials, no
endpoint: `intint.store.fsio.client_error_message`). Exceptions of other types are bugs and keep their
traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["fail", "input_error_message", "run_job", "user_errors"]

_MAX_MESSAGE = 500  # characters of an error line
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> SystemExit:
    """Print ``error: <message>`` on stderr; the caller raises the returned exit (code 1)."""
    print(f"error: {message}", file=sys.stderr)
    return SystemExit(1)


def _input_error_types() -> tuple[type[BaseException], ...]:
    """The library's errors for bad input: annotation and pickle problems, a broken shard set (a
    ValueError), missing files and folders (OSError), unknown keys and splits (KeyError), bad values."""
    from intint.pose.annotations import AnnotationError
    from intint.pose.safe_pickle import UnsafePickleError

    return (AnnotationError, UnsafePickleError, OSError, EOFError, ValueError, KeyError)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "…"


def input_error_message(exc: BaseException) -> str | None:
    """The one-line message for an input error or an object-store client error, None for anything else."""
    from intint.store.fsio import client_error_message

    cause = getattr(exc, "cause", None)  # a Ray task error wraps the task's own exception
    if isinstance(cause, BaseException) and (isinstance(cause, _input_error_types())
                                             or client_error_message(cause) is not None):
        exc = cause
    storage = client_error_message(exc)
    if storage is not None:
        return _one_line(storage)
    if not isinstance(exc, _input_error_types()):
        return None
    if isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror or type(exc).__name__}"
    elif isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]
    elif isinstance(exc, FileNotFoundError) and len(str(exc).split()) == 1:
        text = f"{exc}: no such file or directory"  # fsspec raises FileNotFoundError(path)
    elif isinstance(exc, EOFError):
        text = f"unexpected end of input ({exc})"
    else:
        text = str(exc) or type(exc).__name__
    return _one_line(text)


def user_errors(command: F) -> F:
    """Wrap a command: an input error becomes ``error: <message>`` and exit code 1."""
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except Exception as exc:
            message = input_error_message(exc)
            if message is None:
                raise
            raise fail(message) from None
    return run  # type: ignore[return-value]


def run_job(main: Callable[[], Any]) -> None:
    """Run a jobs/ script's ``main`` with the commands' handling (one line, exit code 1)."""
    user_errors(main)()
