"""Errors the CLI turns into one line on stderr and an exit code, never a traceback."""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (its type where it has none), cut to ``limit``
    characters: what a one-line error can quote of a library's error."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised where the program is so that cleanup (``finally``) runs as it
    does for Ctrl-C; a BaseException so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Edge3dError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""

    exit_code = 2


class InputError(Edge3dError):
    """The input (file, flag, shape) cannot be used: exit 2."""

    exit_code = 2


class CheckFailed(Edge3dError):
    """The input was read but a check on the result failed (verification, lint): exit 1."""

    exit_code = 1
