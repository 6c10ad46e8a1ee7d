"""Atomic output: a bundle folder appears whole or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import InputError


def check_destination(out: Path, force: bool) -> None:
    """Fail before any work is done if the destination would be clobbered."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder; choose another -o")
    if out.exists() and any(out.iterdir()) and not force:
        raise InputError(f"{out} already exists and is not empty; pass --force to replace it")


@contextlib.contextmanager
def atomic_dir(out: Path, force: bool = False):
    """Yield a scratch folder beside ``out``; move it into place only if the block succeeds."""
    out = Path(out)
    check_destination(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    scratch.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make the bundle private
    try:
        yield scratch
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        scratch.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
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
