"""What users install: the wheel built from this repository, run from outside the source tree."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel, unpacked into a folder that goes first on PYTHONPATH (dependencies come from
    this environment, so nothing is downloaded but the build backend)."""
    work = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work / "dist"),
                            str(ROOT)], capture_output=True, text=True, timeout=600)
    if build.returncode != 0:
        pytest.fail(f"building the wheel failed: {build.stderr[-2000:]}")
    wheel = next((work / "dist").glob("edge3d-*.whl"))
    site = work / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return wheel, site


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    code = "import sys; from edge3d.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=600)


def test_wheel_holds_every_subpackage_and_data_file(installed):
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "edge3d").rglob("*")
              if p.suffix in (".py", ".toml", ".json") and "__pycache__" not in p.parts}
    missing = sorted(source - set(names))
    assert not missing, f"the wheel lacks {missing}"


def test_installed_wheel_exports_a_model(installed, tmp_path):
    import torch

    _, site = installed
    model = tmp_path / "conv3d.onnx"
    torch.onnx.export(torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3, padding=1), torch.nn.ReLU()),
                      (torch.randn(1, 3, 4, 8, 8),), str(model), dynamo=False, opset_version=17)
    where = _run(site, tmp_path, "--version")
    assert where.returncode == 0, where.stderr
    located = subprocess.run([sys.executable, "-c", "import edge3d; print(edge3d.__file__)"], cwd=tmp_path,
                             capture_output=True, text=True, env={"PYTHONPATH": str(site)}, timeout=120)
    assert located.stdout.strip().startswith(str(site)), located.stdout  # the wheel, not the source tree
    done = _run(site, tmp_path, "export", str(model), "-o", str(tmp_path / "bundle"), "-q")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["model"]["max_rank"] == 4
    assert manifest["inputs"][0]["layout"] == "frames"
    targets = _run(site, tmp_path, "targets", "--format", "json")
    assert targets.returncode == 0 and {t["name"] for t in json.loads(targets.stdout)} >= {"onnx", "jetson", "rknn"}
