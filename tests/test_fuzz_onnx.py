"""Damaged ONNX files: whatever the bytes, `lint` and `lower` answer 0, 1 or 2 with at most one
error line, never a traceback or an internal error, and in bounded time."""

import random
import time

import pytest
import torch
from conftest import invoke, stderr_lines


@pytest.fixture(scope="module")
def seed_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "conv3d.onnx"
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3, padding=1), torch.nn.ReLU())
    torch.onnx.export(model, (torch.randn(1, 3, 4, 8, 8),), str(path), dynamo=False, opset_version=17)
    return path.read_bytes()


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Byte flips, truncation, insertion or deletion: the damage a file meets on disk or in transit."""
    b = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 1:
        b = b[: rng.randrange(len(b))]
    elif kind == 2:
        i = rng.randrange(len(b))
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    else:
        i = rng.randrange(len(b))
        del b[i:min(len(b), i + rng.randint(1, 64))]
    return bytes(b)


def _fuzz(seed_model, tmp_path, command, cases):
    codes = {}
    for seed in range(cases):
        path = tmp_path / f"m{seed}.onnx"
        path.write_bytes(mutate(seed_model, random.Random(seed)))
        args = [command, path] + (["-o", tmp_path / f"out{seed}.onnx", "--verify-samples", "1"]
                                  if command == "lower" else [])
        start = time.perf_counter()
        result = invoke(*args)
        took = time.perf_counter() - start
        codes[result.exit_code] = codes.get(result.exit_code, 0) + 1
        where = f"seed {seed}: exit {result.exit_code}: {result.stderr.strip()[:300]}"
        assert result.exit_code in (0, 1, 2), where
        assert "Traceback" not in result.output and "internal error" not in result.stderr, where
        assert len(stderr_lines(result)) <= 1, where
        assert took < 30, where
    return codes


def test_damaged_files_lint(seed_model, tmp_path):
    codes = _fuzz(seed_model, tmp_path, "lint", 300)
    assert codes.get(2, 0) > 0 and codes.get(1, 0) > 0  # both damaged and intact-but-rank-5 files were met


def test_damaged_files_lower(seed_model, tmp_path):
    codes = _fuzz(seed_model, tmp_path, "lower", 300)
    assert codes.get(2, 0) > 0 and codes.get(0, 0) > 0
