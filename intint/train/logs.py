"""Console logging of intint: one handler on the "intint" logger, set up by each entry point.

Library modules log through `logging.getLogger(__name__)` (all below "intint") and never print; the
processes that show those records to a person call `configure_logging` once: the `intint` command, the
jobs/ scripts and every Ray Train worker (a fresh process, whose stdout Ray forwards to the driver and
into `ray job logs`). Records go to stdout as `[intint] message`, the form the run logs have always had.
"""

from __future__ import annotations

import logging
import sys

LOGGER = "intint"
FORMAT = "[intint] %(message)s"


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever `sys.stdout` is at the time of the record (pytest and typer's test runner swap
    it per test; a handler holding the first one would write to a closed stream)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(level: int = logging.INFO, *, propagate: bool = True) -> logging.Logger:
    """Send intint's records at `level` and above to stdout; calling it again only changes the settings.

    `propagate=False` keeps the records from also reaching the root logger's handlers: a Ray worker's
    root logger already writes to stderr, which would show every line twice.
    """
    logger = logging.getLogger(LOGGER)
    logger.setLevel(level)
    logger.propagate = propagate
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
    return logger
