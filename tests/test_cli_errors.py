"""Bad input: one line on stderr, exit code 2, no traceback, nothing written; --debug shows it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, invoke, reference_model, shape_arg, small_shape, stderr_lines

EDGE3D = str(Path(sys.executable).parent / "edge3d")
C3D_SHAPE = shape_arg(small_shape("c3d"))
C3D_KWARGS = '{"width": 0.0625, "num_classes": 10}'


@pytest.fixture(scope="module")
def bad_files(saved_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    files = {}
    for fmt in ("pt", "pt2"):
        data = saved_model("c3d", fmt).read_bytes()
        files[f"truncated.{fmt}"] = root / f"truncated.{fmt}"
        files[f"truncated.{fmt}"].write_bytes(data[: len(data) // 2])
    files["empty.pt"] = root / "empty.pt"
    files["empty.pt"].write_bytes(b"")
    rng = np.random.default_rng(0)
    for name in ("random.pt", "random.onnx", "random.pt2"):
        files[name] = root / name
        files[name].write_bytes(b"\x17" + rng.bytes(4095))  # not PK, not a pickle opcode
    files["text.pt"] = root / "text.pt"
    files["text.pt"].write_text("this is a README, not a model\n" * 20)
    files["weights.pt"] = root / "weights.pt"
    torch.save(reference_model("c3d").state_dict(), files["weights.pt"])
    files["list.pt"] = root / "list.pt"
    torch.save([torch.zeros(3)], files["list.pt"])
    return files


def assert_one_line_error(result, *must_mention: str) -> str:
    """The error contract: exit 2, exactly one line on stderr naming the problem, no traceback,
    nothing on stdout but progress lines (outside a terminal, each step's start and time)."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    error = lines[0]
    assert error.startswith("edge3d: error: "), error
    for text in must_mention:
        assert text in error, (text, error)
    assert all(line.endswith("...") or ": done in " in line for line in result.stdout.splitlines()), result.stdout
    return error


# (file key or literal path, extra args, texts the message must contain)
CASES = {
    "missing-file": ("does-not-exist.pt", ["--input-shape", C3D_SHAPE], ["no such file"]),
    "truncated-torchscript": ("truncated.pt", ["--input-shape", C3D_SHAPE], ["truncated.pt"]),
    "truncated-exported-program": ("truncated.pt2", [], ["truncated.pt2"]),
    "empty-file": ("empty.pt", ["--input-shape", C3D_SHAPE], ["empty"]),
    "random-bytes-pt": ("random.pt", ["--input-shape", C3D_SHAPE], ["random.pt"]),
    "random-bytes-onnx": ("random.onnx", [], ["random.onnx"]),
    "random-bytes-pt2": ("random.pt2", [], ["random.pt2"]),
    "text-file": ("text.pt", ["--input-shape", C3D_SHAPE], ["text.pt"]),
    "list-not-a-model": ("list.pt", ["--input-shape", C3D_SHAPE], ["list"]),
    "state-dict-without-arch": ("weights.pt", ["--input-shape", C3D_SHAPE], ["state_dict", "--arch"]),
    "arch-module-missing": ("weights.pt", ["--arch", "examples.models.no_such_net:c3d", "--input-shape", C3D_SHAPE],
                            ["--arch", "no_such_net"]),
    "arch-package-missing": ("weights.pt", ["--arch", "nosuchpkg.models:c3d", "--input-shape", C3D_SHAPE],
                             ["--arch", "nosuchpkg"]),
    "arch-factory-missing": ("weights.pt", ["--arch", "examples.models.c3d:no_such_factory",
                                            "--input-shape", C3D_SHAPE], ["--arch", "no_such_factory"]),
    "arch-without-colon": ("weights.pt", ["--arch", "examples.models.c3d", "--input-shape", C3D_SHAPE], ["--arch"]),
    "arch-other-network": ("weights.pt", ["--arch", "examples.models.r3d:r3d18", "--arch-kwargs", C3D_KWARGS,
                                          "--input-shape", C3D_SHAPE], ["does not fit", "--arch"]),
    "arch-other-shapes": ("weights.pt", ["--arch", "examples.models.c3d:c3d", "--input-shape", C3D_SHAPE],
                          ["does not fit", "--arch"]),
    "arch-kwargs-bad-json": ("weights.pt", ["--arch", "examples.models.c3d:c3d", "--arch-kwargs", "{width: 1",
                                            "--input-shape", C3D_SHAPE], ["--arch-kwargs"]),
    "arch-kwargs-unknown-name": ("weights.pt", ["--arch", "examples.models.c3d:c3d", "--arch-kwargs", '{"depth": 3}',
                                                "--input-shape", C3D_SHAPE], ["--arch-kwargs"]),
    "arch-on-torchscript": ("c3d.pt", ["--arch", "examples.models.c3d:c3d", "--input-shape", C3D_SHAPE], ["--arch"]),
    "torchscript-without-input-shape": ("c3d.pt", [], ["--input-shape"]),
    "input-shape-not-numbers": ("c3d.pt", ["--input-shape", "1,3,sixteen,32,32"], ["--input-shape", "sixteen"]),
    "input-shape-negative": ("c3d.pt", ["--input-shape", "1,3,-16,32,32"], ["--input-shape"]),
    "input-shape-zero": ("c3d.pt", ["--input-shape", "0,3,16,32,32"], ["--input-shape"]),
    "input-shape-wrong-for-model": ("c3d.pt", ["--input-shape", "1,3,2,2,2"], ["--input-shape"]),
    "unknown-target": ("c3d.pt", ["--input-shape", C3D_SHAPE, "--target", "tpu"], ["tpu"]),
}


def _model_path(key, bad_files, saved_model, tmp_path):
    if key in bad_files:
        return bad_files[key]
    if key == "c3d.pt":
        return saved_model("c3d", "pt")
    return tmp_path / key


@pytest.mark.parametrize("quiet", [True, False], ids=["quiet", "default"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case, quiet, bad_files, saved_model, tmp_path):
    key, extra, mentions = CASES[case]
    model = _model_path(key, bad_files, saved_model, tmp_path)
    out = tmp_path / "out"
    result = invoke("export", model, "-o", out, *extra, *(["-q"] if quiet else []))
    assert_one_line_error(result, *mentions)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != key] == []  # no .partial leftovers


@pytest.mark.parametrize("quiet", [True, False], ids=["quiet", "default"])
def test_existing_output_folder_without_force(saved_model, tmp_path, quiet):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = invoke("export", saved_model("c3d", "pt2"), "-o", out, *(["-q"] if quiet else []))
    assert_one_line_error(result, "--force")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_output_is_a_file(saved_model, tmp_path):
    out = tmp_path / "out"
    out.write_text("not a folder")
    result = invoke("export", saved_model("c3d", "pt2"), "-o", out, "-q")
    assert_one_line_error(result, "not a folder")
    assert out.read_text() == "not a folder"


def test_folder_as_model(tmp_path):
    result = invoke("export", tmp_path, "-o", tmp_path / "out", "-q")
    assert_one_line_error(result, "folder")
    assert not (tmp_path / "out").exists()


def test_inspect_bad_input(bad_files):
    result = invoke("inspect", bad_files["truncated.pt2"])
    assert_one_line_error(result, "truncated.pt2")


def test_inspect_torchscript_without_input_shape(saved_model):
    result = invoke("inspect", saved_model("c3d", "pt"))
    assert_one_line_error(result, "--input-shape")


def test_debug_raises_in_process(tmp_path):
    from edge3d.errors import InputError

    result = invoke("--debug", "export", tmp_path / "missing.pt", "-o", tmp_path / "out")
    assert result.exit_code != 0
    assert isinstance(result.exception, InputError)
    assert not (tmp_path / "out").exists()


# --- the real console script -------------------------------------------------------------------

def _edge3d(*args, cwd=REPO):
    return subprocess.run([EDGE3D, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("debug_args", [["--debug", "export"], ["export", "--debug"]], ids=["group", "command"])
def test_debug_shows_traceback(tmp_path, debug_args):
    out = tmp_path / "out"
    proc = _edge3d(*debug_args, tmp_path / "missing.pt", "-o", out)
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert "no such file" in proc.stderr
    assert not out.exists()


@pytest.mark.slow
def test_console_script_error_without_debug(tmp_path):
    out = tmp_path / "out"
    proc = _edge3d("export", tmp_path / "missing.pt", "-o", out)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edge3d: error: ") and "no such file" in lines[0]
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["truncated-exported-program", "text-file", "pickle-protocol-5"])
def test_console_script_bad_input(case, bad_files, tmp_path):
    """The real process: warnings that pytest would capture in-process must not reach stderr."""
    import pickle

    if case == "pickle-protocol-5":
        model = tmp_path / "weights.pkl"
        model.write_bytes(pickle.dumps({"w": [1.0, 2.0], "f": print}, protocol=5))
        extra = ["--input-shape", C3D_SHAPE]
    else:
        model, extra, _ = CASES[case]
        model = bad_files[model]
    out = tmp_path / "out"
    proc = _edge3d("export", model, "-o", out, *extra)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("edge3d: error: ") and model.name in lines[0]
    assert not out.exists()


@pytest.mark.slow
def test_console_script_end_to_end(tmp_path):
    """examples/save_model.py --small, then the installed `edge3d export` on it, then lint."""
    model = tmp_path / "c3d.pt"
    saved = subprocess.run([sys.executable, "examples/save_model.py", "c3d", "--small", "-o", str(model)],
                           capture_output=True, text=True, cwd=REPO, timeout=300)
    assert saved.returncode == 0, saved.stderr
    assert f"input shape {C3D_SHAPE}" in saved.stdout
    out = tmp_path / "bundle"
    missing_shape = _edge3d("export", model, "-o", out)
    assert missing_shape.returncode == 2
    assert "Traceback" not in missing_shape.stderr
    assert len(missing_shape.stderr.splitlines()) == 1, missing_shape.stderr
    assert missing_shape.stderr.startswith("edge3d: error: ") and "--input-shape" in missing_shape.stderr
    assert not out.exists()
    proc = _edge3d("export", model, "-o", out, "--input-shape", C3D_SHAPE)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"wrote {out}/model.onnx" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "report.md"]
    lint = _edge3d("lint", out / "model.onnx")  # the bundle holds the rank-4 model
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_ctrl_c_while_importing_is_one_line():
    import subprocess
    import sys

    code = (
        "import builtins, sys\n"
        "real = builtins.__import__\n"
        "def interrupt(name, *a, **k):\n"
        "    if name == 'click':\n"
        "        raise KeyboardInterrupt\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = interrupt\n"
        "from edge3d.entry import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130
    assert done.stderr.strip().splitlines() == ["edge3d: interrupted"]
