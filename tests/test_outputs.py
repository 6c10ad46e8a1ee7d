"""Outputs: edge3d replaces only what it wrote, checks where it writes before working, and
cleans up when it is stopped."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import invoke, stderr_lines

from edge3d.atomic import check_destination, check_files
from edge3d.errors import InputError


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _one_line(result, code, text):
    assert result.exit_code == code, result.output
    lines = stderr_lines(result)
    assert len(lines) == 1 and text in lines[0], lines
    assert "Traceback" not in result.output


def test_force_refuses_a_folder_that_is_not_a_bundle(tiny_model, tmp_path):
    model, shape = tiny_model("conv3d", "pt2")
    out = tmp_path / "work"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = _tree(out)
    result = invoke("export", model, "-o", out, "--force")
    _one_line(result, 2, "not an edge3d bundle")
    assert _tree(out) == before


def test_force_never_deletes_the_folder_holding_the_model(tiny_model, tmp_path):
    model, shape = tiny_model("conv3d", "pt2")
    out = tmp_path / "bundle"
    assert invoke("export", model, "-o", out, "-q").exit_code == 0
    inside = out / "model.pt2"
    shutil.copy(model, inside)
    before = _tree(out)
    result = invoke("export", inside, "-o", out, "--force")
    _one_line(result, 2, "holds")
    assert _tree(out) == before


def test_force_replaces_a_bundle(tiny_model, tmp_path):
    model, _ = tiny_model("conv3d", "pt2")
    out = tmp_path / "bundle"
    assert invoke("export", model, "-o", out, "-q").exit_code == 0
    (out / "stale.txt").write_text("x")
    assert invoke("export", model, "-o", out, "-q", "--force").exit_code == 0
    assert not (out / "stale.txt").exists() and (out / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_force_refuses_the_working_folder(tmp_path, monkeypatch):
    (tmp_path / "manifest.json").write_text('{"format": "edge3d-bundle"}')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="holds the working folder"):
        check_destination(tmp_path, force=True)


@pytest.mark.parametrize("case", ["under-a-file", "dangling-link", "unwritable"])
def test_unusable_output_is_refused_before_any_work(tiny_model, tmp_path, monkeypatch, case):
    model, _ = tiny_model("conv3d", "pt2")
    if case == "under-a-file":
        (tmp_path / "file").write_text("x")
        out, text = tmp_path / "file" / "bundle", "is a file"
    elif case == "dangling-link":
        out, text = tmp_path / "link", "dangling symbolic link"
        out.symlink_to(tmp_path / "nowhere")
    else:  # root may write anywhere, so the permission answer is simulated
        real = os.access
        denied = os.fspath(tmp_path)
        monkeypatch.setattr(os, "access", lambda p, mode: False if os.fspath(p) == denied else real(p, mode))
        out, text = tmp_path / "bundle", "not writable"
    loaded = []
    import edge3d.pipeline as pipeline

    monkeypatch.setattr(pipeline, "load_model", lambda *a, **k: loaded.append(1))
    result = invoke("export", model, "-o", out)
    _one_line(result, 2, text)
    assert not loaded  # refused before the model was even read


@pytest.mark.parametrize("command", ["lint", "bench"])
def test_report_output_that_is_a_folder_is_bad_input(onnx_5d, tmp_path, command):
    folder = tmp_path / "reports"
    folder.mkdir()
    args = [onnx_5d("c3d")] if command == "lint" else [tmp_path / "no-bundle"]
    result = invoke(command, *args, "-o", folder)
    _one_line(result, 2, "is a folder")


def test_check_files_refuses_existing_output_without_force(tmp_path):
    (tmp_path / "m.onnx").write_text("x")
    with pytest.raises(InputError, match="--force"):
        check_files([tmp_path / "m.onnx"], force=False)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_terminated_export_leaves_no_scratch(tiny_model, tmp_path, signum):
    model, _ = tiny_model("net", "pt2")
    out = tmp_path / "bundle"
    code = "import sys; from edge3d.cli import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", code, "export", str(model), "-o", str(out), "--target", "npu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.endswith(".partial") for p in tmp_path.iterdir()):
            break
        time.sleep(0.01)
    else:
        proc.kill()
        pytest.fail("the export never created its scratch folder")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert [line for line in err.splitlines() if line.strip()] == [
        f"edge3d: terminated by {signal.Signals(signum).name}; nothing was written"]
    assert list(tmp_path.iterdir()) == []


def test_a_signal_that_another_thread_receives_waits_for_the_held_block():
    """A stop signal the kernel hands to a worker thread (ONNX Runtime's, OpenMP's) while a
    scratch folder is being created reaches the main thread's handler only after the block."""
    import threading

    from edge3d.atomic import _signals_held

    seen: list[str] = []
    previous = signal.signal(signal.SIGTERM, lambda *_: seen.append("handler"))
    try:
        with _signals_held():
            worker = threading.Thread(target=lambda: os.kill(os.getpid(), signal.SIGTERM))
            worker.start()
            worker.join()
            time.sleep(0.05)  # bytecodes run: an unheld Python handler would run here
            seen.append("block ends")
        time.sleep(0.05)
        assert seen == ["block ends", "handler"]
    finally:
        signal.signal(signal.SIGTERM, previous)
