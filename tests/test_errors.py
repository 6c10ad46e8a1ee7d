"""edge3d.errors: first_line, and the exit code of each error."""

from __future__ import annotations

from edge3d.errors import CheckFailed, InputError, first_line


def test_first_line():
    assert first_line(ValueError("bad shape\n  at line 3\n  more")) == "bad shape"
    assert first_line(ValueError("  \n  padded\nsecond  ")) == "padded"
    assert first_line(RuntimeError()) == "RuntimeError"  # no message: the type
    assert first_line(KeyError("")) == "''"  # KeyError quotes its key
    assert first_line(OSError(28, "No space left on device")) == "[Errno 28] No space left on device"
    assert first_line(ValueError("x" * 500)) == "x" * 160
    assert first_line(ValueError("abcdef"), limit=3) == "abc"


def test_error_exit_codes():
    assert InputError("x").exit_code == 2 and CheckFailed("x").exit_code == 1
