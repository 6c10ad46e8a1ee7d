"""edge3d's loggers: ``edge3d`` and its children, one per module (``edge3d.passes.lower_rank``,
``edge3d.passes.rules.conv``, …). They log at debug level only, so nothing reaches stderr unless
debug logging is turned on (``edge3d --debug``, or ``enable_debug()``), or an application that
imports edge3d configures logging itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator

ROOT = "edge3d"


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not when the handler was
    made: click's test runner and pytest swap it per command."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must not break the command
            self.handleError(record)


def enable_debug() -> Callable[[], None]:
    """Send edge3d's debug records to stderr, one line each with the logger's name; returns a
    function that undoes it (the CLI calls it when the command ends)."""
    logger = logging.getLogger(ROOT)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(previous)

    return undo


@contextlib.contextmanager
def native_output_muted(fds: tuple[int, ...] = (1, 2)) -> Iterator[None]:
    """Point file descriptors ``fds`` at /dev/null for the block: C++ libraries (torch's exporter
    dumping IR on an error, TVM warning about every Gather) write to them directly, past Python's
    ``sys.stdout``/``sys.stderr``. Their errors are Python exceptions and survive; with debug
    logging on nothing is muted."""
    if logging.getLogger(ROOT).isEnabledFor(logging.DEBUG):
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = []
    try:
        with open(os.devnull, "w") as null:
            for fd in fds:
                try:
                    saved.append((fd, os.dup(fd)))
                except OSError:  # no such descriptor (a daemon): nothing to mute there
                    continue
                os.dup2(null.fileno(), fd)
            yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
