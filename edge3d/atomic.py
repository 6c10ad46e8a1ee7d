"""Atomic output: what a command writes appears whole or not at all, and replaces only what the
user agreed to replace.

Everything is written into a scratch folder beside the destination first (same filesystem, so the
final step is a rename). ``atomic_dir`` then renames the folder into place (a bundle);
``atomic_files`` moves each file it holds into the destination's folder (``lower``'s ONNX file
and its external weights, ``rewrite``'s ``.pt2`` and report). A destination that appears while
the work runs is never replaced without ``--force``, and an existing folder is only swapped out
under a fresh name, so nothing else beside it is touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError


def check_destination(out: Path, force: bool) -> None:
    """Fail before any work is done if the destination folder would be clobbered."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder; choose another -o")
    if out.exists() and any(out.iterdir()) and not force:
        raise InputError(f"{out} already exists and is not empty; pass --force to replace it")


def check_files(paths: list[Path], force: bool) -> None:
    """Fail before any work is done if an output file would be clobbered."""
    for path in paths:
        if path.is_dir():
            raise InputError(f"{path} is a folder; choose another output file")
        if path.exists() and not force:
            raise InputError(f"{path} already exists; pass --force to replace it")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _scratch_beside(out: Path, suffix: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=suffix, dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    scratch.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make the output private
    return scratch


def _appeared(out: Path, seen: tuple[int, int] | None) -> bool:
    """Whether ``out`` is now something other than what was checked when the work started."""
    now = _identity(out)
    return now is not None and now != seen


@contextlib.contextmanager
def atomic_dir(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a scratch folder beside ``out``; it replaces ``out`` only if the block succeeds."""
    out = Path(out)
    check_destination(out, force)
    seen = _identity(out)
    was_empty = seen is not None and not any(out.iterdir())
    scratch = _scratch_beside(out, ".partial")
    try:
        yield scratch
        if _appeared(out, seen) and not force:
            raise InputError(f"{out} was created while this command ran; nothing was replaced "
                             "(pass --force to replace it)")
        if seen is not None and out.exists() and any(out.iterdir()) and was_empty and not force:
            raise InputError(f"{out} was filled while this command ran; nothing was replaced "
                             "(pass --force to replace it)")
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            out.rename(old)  # onto the fresh empty folder: nothing of the user's is overwritten
        scratch.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def atomic_files(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a scratch folder beside the file ``out``; on success every file written there moves
    into ``out``'s folder under its own name (``out`` itself and any companions such as external
    weights or a report)."""
    out = Path(out)
    scratch = _scratch_beside(out, ".partial")
    try:
        yield scratch
        written = sorted(p for p in scratch.iterdir() if p.is_file())
        targets = [out.parent / p.name for p in written]
        check_files(targets, force)
        for source, target in zip(written, targets):
            os.replace(source, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: Path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
