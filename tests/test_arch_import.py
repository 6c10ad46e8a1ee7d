"""--arch and --trust-pickle import the user's modules from the working directory: appended to
sys.path (after site-packages, so a stray file cannot shadow an installed package) and sys.path
restored exactly afterwards."""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest
import torch

from edge3d.errors import InputError
from edge3d.frontend.load import build_arch, cwd_importable, load_model


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working directory; modules imported from it are forgotten afterwards."""
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        module = sys.modules[name]
        if str(tmp_path) in str(getattr(module, "__file__", "") or ""):
            del sys.modules[name]


def _module(folder, source: str) -> str:
    name = f"arch_{uuid.uuid4().hex[:8]}"  # unique: never already in sys.modules
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return name


FACTORY = textwrap.dedent("""
    import importlib.machinery
    import sys

    import torch

    PATH = list(sys.path)  # sys.path while the module is imported
    ONNXSIM = importlib.machinery.PathFinder.find_spec("onnxsim")  # what `import onnxsim` finds on it
    sys.path.append("/nonexistent/added-by-the-module")  # restored too

    def factory(width=2):
        return torch.nn.Linear(width, width)
""")


def test_arch_in_cwd_is_imported_and_sys_path_restored(workdir):
    name = _module(workdir, FACTORY)
    before = list(sys.path)
    module = build_arch(f"{name}:factory", '{"width": 3}')
    assert isinstance(module, torch.nn.Linear) and module.in_features == 3
    assert sys.path == before  # exactly: the cwd and what the module added are gone
    imported = sys.modules[name]
    assert imported.PATH[-1] == str(workdir)  # appended: after site-packages
    site = [i for i, p in enumerate(imported.PATH) if p.endswith("site-packages")]
    assert site and max(site) < len(imported.PATH) - 1


def test_stray_onnxsim_in_cwd_is_not_imported(workdir):
    (workdir / "onnxsim.py").write_text("raise RuntimeError('the stray onnxsim.py was imported')\n")
    name = _module(workdir, FACTORY + "\nimport onnxsim  # noqa: E402,F401\n")
    build_arch(f"{name}:factory", None)
    spec = sys.modules[name].ONNXSIM
    assert spec is not None and str(workdir) not in str(spec.origin)  # the installed onnxsim
    assert str(workdir) not in str(getattr(sys.modules["onnxsim"], "__file__", ""))


def test_sys_path_restored_when_the_import_fails(workdir):
    name = _module(workdir, FACTORY)
    before = list(sys.path)
    with pytest.raises(InputError, match="has no 'missing'"):
        build_arch(f"{name}:missing", None)
    with pytest.raises(InputError, match="cannot import 'no_such_module_here'"):
        build_arch("no_such_module_here:factory", None)
    with pytest.raises(InputError, match="rejected --arch-kwargs"):
        build_arch(f"{name}:factory", '{"depth": 2}')
    assert sys.path == before


def test_cwd_importable_does_not_add_the_cwd_twice(workdir, monkeypatch):
    monkeypatch.setattr(sys, "path", [str(workdir), *sys.path])
    before = list(sys.path)
    with cwd_importable():
        assert sys.path == before
    assert sys.path == before


def test_trusted_pickle_finds_its_classes_in_cwd_and_restores_sys_path(workdir):
    name = _module(workdir, """
        import torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(2, 2)

            def forward(self, x):
                return self.fc(x)
    """)
    with cwd_importable():
        net = __import__(name).Net()
    path = workdir / "net.pt"
    torch.save(net, path)
    del sys.modules[name]  # unpickling has to import it again, from the cwd
    before = list(sys.path)
    loaded = load_model(path, trust_pickle=True)
    assert loaded.kind == "pickled-module" and type(loaded.module).__module__ == name
    assert sys.path == before
