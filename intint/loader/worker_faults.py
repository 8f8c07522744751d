"""A loader worker process that dies without raising: noticed, named, and turned into one clear error.

A DataLoader worker killed by a signal (the kernel's out-of-memory killer, ``kill -9``) raises nothing
itself. torch notices within seconds, in one of three ways depending on where the main process is: its
SIGCHLD handler or the 5 s status check of a waiting fetch raise a ``RuntimeError`` ("DataLoader worker
(pid X) is killed by signal" / "exited unexpectedly"), or, when the dead worker had already queued a
batch whose shared memory travels as a file descriptor, fetching that descriptor from the dead process
fails with ``ConnectionResetError`` (or ``EOFError``). :func:`received` turns each into
:class:`LoaderWorkerDied` naming the loader, the dead workers and their signal, so a training run stops
with a message that says what happened instead of a bare socket error. (The SIGCHLD handler can also
fire while the training loop runs its own code, outside the loader: then torch's own RuntimeError,
which names the worker and the signal, reaches the loop as it is.)
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["LoaderWorkerDied", "received"]

_SETTLE_S = 2.0  # how long a lost connection waits for its worker to show as dead (the socket closes first)
_HINT = ("A killed loader worker is most often the out-of-memory killer: fewer num_workers, a smaller "
         "prefetch_factor or batch_size need less memory.")


class LoaderWorkerDied(RuntimeError):
    """A loader worker process died without raising (killed by a signal, or exited)."""


def _deaths(wires: Iterator[Any], settle_s: float = 0.0) -> list[str]:
    """``pid N (SIGKILL)`` for each worker process of a DataLoader iterator that is no longer alive,
    waiting up to ``settle_s`` for one to be: a killed process closes its sockets a moment before the
    kernel reports it dead."""
    workers = list(getattr(wires, "_workers", ()))  # torch's worker processes (multiprocessing.Process)
    deadline = time.monotonic() + settle_s
    while workers and all(proc.is_alive() for proc in workers) and time.monotonic() < deadline:
        time.sleep(0.02)
    out = []
    for proc in workers:
        if proc.is_alive():
            continue
        code = proc.exitcode
        try:
            how = signal.Signals(-code).name if code is not None and code < 0 else f"exit code {code}"
        except ValueError:
            how = f"signal {-code}"
        out.append(f"pid {proc.pid} ({how})")
    return out


def received(wires: Iterator[dict[str, Any]], who: str) -> Iterator[dict[str, Any]]:
    """The wire batches of a DataLoader iterator; a worker's death becomes :class:`LoaderWorkerDied`
    naming ``who`` (the loader) and the dead workers. A worker's own exception keeps its type."""
    while True:
        try:
            wire = next(wires)
        except StopIteration:
            return
        except (RuntimeError, ConnectionError, EOFError) as exn:
            deaths = _deaths(wires, 0.0 if isinstance(exn, RuntimeError) else _SETTLE_S)
            said = str(exn).strip().rstrip(".")
            if not deaths and not (isinstance(exn, RuntimeError) and "DataLoader worker (pid" in said):
                raise
            dead = f"loader worker {', '.join(deaths)} died" if deaths else "a loader worker died"
            raise LoaderWorkerDied(f"{who}: {dead} ({type(exn).__name__}: {said}). {_HINT}") from exn
        yield wire
