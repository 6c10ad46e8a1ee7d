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
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError

BUNDLE_FORMAT = "edge3d-bundle"  # manifest.json's "format": the folders --force may replace


def is_bundle(folder: Path) -> bool:
    """Whether ``folder`` is a bundle edge3d wrote (its manifest says so)."""
    try:
        return json.loads((folder / "manifest.json").read_text()).get("format") == BUNDLE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_writable(out: Path) -> None:
    """Fail before any work if ``out`` cannot be created: its nearest existing ancestor must be a
    writable folder (not a file, not a dangling link)."""
    if out.is_symlink() and not out.exists():
        raise InputError(f"{out} is a dangling symbolic link; remove it or choose another output")
    parent = out.parent
    while not parent.exists():
        if parent.is_symlink():
            raise InputError(f"{parent} is a dangling symbolic link; choose another output")
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{parent} is a file, so {out} cannot be created under it; choose another output")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{parent} is not writable; choose another output")


def check_destination(out: Path, force: bool, inputs: tuple[Path, ...] = ()) -> None:
    """Fail before any work if the bundle folder ``out`` would clobber anything: an existing
    folder is replaced only with ``force`` and only if it is itself a bundle, and never when it
    holds one of ``inputs`` (the model being exported) or the working folder."""
    out = Path(out)
    check_writable(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder; choose another -o")
    if not out.exists() or not any(out.iterdir()):
        return
    if not force:
        raise InputError(f"{out} already exists and is not empty; pass --force to replace it")
    where = out.resolve()
    for held in (Path.cwd(), *inputs):
        if where == held.resolve() or where in held.resolve().parents:
            what = "the working folder" if held == Path.cwd() else held
            raise InputError(f"{out} holds {what}; --force would delete it: choose another -o")
    if not is_bundle(out):
        shown = ", ".join(sorted(p.name for p in out.iterdir())[:3])
        raise InputError(f"{out} is not an edge3d bundle (it holds {shown}, ...); --force only replaces a "
                         "bundle: choose another -o or empty it yourself")


def check_files(paths: list[Path], force: bool) -> None:
    """Fail before any work is done if an output file would be clobbered or cannot be written."""
    for path in paths:
        check_writable(path)
        if path.is_dir():
            raise InputError(f"{path} is a folder; choose another output file")
        if path.exists() and not force:
            raise InputError(f"{path} already exists; pass --force to replace it")


def write_report(path: Path, text: str) -> None:
    """A report file (lint, bench): replaced whole, never half-written; a folder or an unwritable
    place is bad input."""
    path = Path(path)
    check_files([path], force=True)
    with atomic_files(path, force=True) as scratch:
        (scratch / path.name).write_text(text)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP while a scratch folder is created and recorded: delivered
    in between, they would leave a folder nobody removes. Blocking them in this thread is not
    enough: the kernel hands a signal to any thread that does not block it (ONNX Runtime's and
    OpenMP's workers), and Python then runs the handler here at the next bytecode. So the Python
    handlers are swapped for a recorder too, and what arrived is raised again on the way out."""
    held = {signal.SIGINT, signal.SIGTERM} | ({signal.SIGHUP} if hasattr(signal, "SIGHUP") else set())
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    handlers = {s: signal.signal(s, lambda signum, _frame: arrived.append(signum)) for s in held}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        for s, handler in handlers.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)  # None: set outside Python
        for signum in dict.fromkeys(arrived):  # each once, to the handler that was in place
            signal.raise_signal(signum)


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
def atomic_dir(out: Path, force: bool = False, inputs: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Yield a scratch folder beside ``out``; it replaces ``out`` only if the block succeeds."""
    out = Path(out)
    check_destination(out, force, inputs)
    seen = _identity(out)
    was_empty = seen is not None and not any(out.iterdir())
    scratch: Path | None = None
    try:
        with _signals_held():  # a stop signal lands after `scratch` is set, so finally removes it
            scratch = _scratch_beside(out, ".partial")
        yield scratch
        if _appeared(out, seen) and not force:
            raise InputError(f"{out} was created while this command ran; nothing was replaced "
                             "(pass --force to replace it)")
        filled = out.exists() and any(out.iterdir())
        if filled and was_empty and not force:
            raise InputError(f"{out} was filled while this command ran; nothing was replaced "
                             "(pass --force to replace it)")
        if filled and not was_empty and not is_bundle(out):
            raise InputError(f"{out} is no longer an edge3d bundle; nothing was replaced")
        old = None
        with _signals_held():  # the swap is two renames: a stop between them would leave no bundle
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
                out.rename(old)  # onto the fresh empty folder: nothing of the user's is overwritten
            scratch.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if scratch is not None:
            with _signals_held():  # a second stop signal must not cut the cleanup short
                shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir(out: Path) -> Iterator[Path]:
    """A working folder beside ``out`` (on the disk the output goes to, which was checked for
    space), removed when the block ends however it ends."""
    out = Path(out).absolute()
    created = [p for p in out.parents if not p.exists()]  # the folders -o needs that this makes, deepest first
    scratch: Path | None = None
    try:
        with _signals_held():
            scratch = _scratch_beside(out, ".work")
        yield scratch
    finally:
        if scratch is not None:
            with _signals_held():
                shutil.rmtree(scratch, ignore_errors=True)
                for folder in created:  # kept where the output went in; gone after a failure
                    with contextlib.suppress(OSError):
                        folder.rmdir()


@contextlib.contextmanager
def atomic_files(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a scratch folder beside the file ``out``; on success every file written there moves
    into ``out``'s folder under its own name (``out`` itself and any companions such as external
    weights or a report)."""
    out = Path(out)
    scratch: Path | None = None
    try:
        with _signals_held():
            scratch = _scratch_beside(out, ".partial")
        yield scratch
        written = sorted(p for p in scratch.iterdir() if p.is_file())
        targets = [out.parent / p.name for p in written]
        check_files(targets, force)
        for source, target in zip(written, targets):
            os.replace(source, target)
    finally:
        if scratch is not None:
            with _signals_held():  # a second stop signal must not cut the cleanup short
                shutil.rmtree(scratch, ignore_errors=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: Path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
