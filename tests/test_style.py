"""The package's own style and typing gates, run with the suite so CI and a local run agree."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> list[str]:
    pytest.importorskip(name, reason=f"{name} is in the dev extra: pip install -e '.[dev]'")
    return [sys.executable, "-m", name]


def test_ruff_is_clean():
    done = subprocess.run([*_tool("ruff"), "check", "edge3d", "tests", "benchmarks", "examples"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:]


@pytest.mark.slow
def test_mypy_is_clean(tmp_path):
    cache = tmp_path / "mypy-cache"
    done = subprocess.run([*_tool("mypy"), "--cache-dir", str(cache)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    shutil.rmtree(cache, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-4000:]
