"""Atomic outputs: whole or nothing, and nothing of the user's replaced without --force."""

import pytest

from edge3d.atomic import atomic_dir, atomic_files, check_files
from edge3d.errors import InputError


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_dir_appears_whole_on_success(tmp_path):
    out = tmp_path / "bundle"
    with atomic_dir(out) as scratch:
        (scratch / "model.onnx").write_text("m")
        assert not out.exists()
    assert _listing(out) == ["model.onnx"]
    assert _listing(tmp_path) == ["bundle"]  # no scratch, no .old


def test_dir_failure_leaves_nothing(tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(RuntimeError), atomic_dir(out) as scratch:
        (scratch / "model.onnx").write_text("m")
        raise RuntimeError("boom")
    assert _listing(tmp_path) == []


def test_dir_created_during_the_work_is_not_replaced(tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(InputError, match="created while this command ran"), atomic_dir(out) as scratch:
        (scratch / "model.onnx").write_text("m")
        out.mkdir()
        (out / "precious.txt").write_text("user data")
    assert _listing(out) == ["precious.txt"]
    assert _listing(tmp_path) == ["bundle"]


def test_empty_dir_filled_during_the_work_is_not_replaced(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    with pytest.raises(InputError, match="filled while this command ran"), atomic_dir(out) as scratch:
        (scratch / "model.onnx").write_text("m")
        (out / "precious.txt").write_text("user data")
    assert _listing(out) == ["precious.txt"]


def test_force_replaces_and_leaves_neighbours_alone(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old.onnx").write_text("old")
    (out / "manifest.json").write_text('{"format": "edge3d-bundle"}')
    neighbour = tmp_path / ".bundle.old"  # the name a swap-out once used
    neighbour.mkdir()
    (neighbour / "keep.txt").write_text("keep")
    with atomic_dir(out, force=True) as scratch:
        (scratch / "model.onnx").write_text("new")
    assert _listing(out) == ["model.onnx"]
    assert _listing(tmp_path) == [".bundle.old", "bundle"]
    assert (neighbour / "keep.txt").read_text() == "keep"


def test_existing_dir_needs_force(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "x").write_text("x")
    with pytest.raises(InputError, match="--force"), atomic_dir(out):
        pytest.fail("the block must not run")
    assert _listing(out) == ["x"]


def test_files_move_together(tmp_path):
    out = tmp_path / "sub" / "model.pt2"
    with atomic_files(out) as scratch:
        (scratch / "model.pt2").write_text("model")
        (scratch / "model.json").write_text("report")
        assert not out.exists()
    assert _listing(out.parent) == ["model.json", "model.pt2"]


def test_files_failure_leaves_nothing(tmp_path):
    out = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError), atomic_files(out) as scratch:
        (scratch / "model.onnx").write_text("half")
        raise RuntimeError("boom")
    assert _listing(tmp_path) == []


def test_file_created_during_the_work_is_not_replaced(tmp_path):
    out = tmp_path / "model.onnx"
    with pytest.raises(InputError, match="already exists"), atomic_files(out) as scratch:
        (scratch / "model.onnx").write_text("new")
        out.write_text("user data")
    assert out.read_text() == "user data"
    assert _listing(tmp_path) == ["model.onnx"]


def test_files_force_replaces(tmp_path):
    out = tmp_path / "model.onnx"
    out.write_text("old")
    with atomic_files(out, force=True) as scratch:
        (scratch / "model.onnx").write_text("new")
    assert out.read_text() == "new"


def test_check_files_refuses_folders_and_existing_files(tmp_path):
    (tmp_path / "dir.onnx").mkdir()
    (tmp_path / "file.onnx").write_text("x")
    with pytest.raises(InputError, match="is a folder"):
        check_files([tmp_path / "dir.onnx"], force=True)
    with pytest.raises(InputError, match="--force"):
        check_files([tmp_path / "file.onnx"], force=False)
    check_files([tmp_path / "file.onnx", tmp_path / "new.onnx"], force=True)
