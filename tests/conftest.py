"""Shared fixtures: the small example models and two tiny ones, saved once per test session.

Saving and exporting are lazy and cached, so a worker only pays for the models its tests use.

The suite runs in tiers (markers in setup.cfg): ``-m "not slow"`` is the fast tier for
development; a plain run does everything. ``tvm``, ``rknn``, ``tflite``, ``gpu`` (TensorRT) and ``cuda`` (a
CUDA device for TVM) tests are skipped at run time where the backend is missing (checked once per
worker, only when such a test is selected), and are ``slow`` as well. Collection puts the fast tests first.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from click.testing import CliRunner  # noqa: E402

from edge3d.cli import main  # noqa: E402
from examples.models import EXAMPLES, build  # noqa: E402

EXAMPLE_NAMES = sorted(EXAMPLES)
SEED = 0  # examples/save_model.py seeds the weights with this by default

BACKENDS = ("tvm", "rknn", "tflite", "gpu", "cuda", "zoo")  # markers of tests that need a backend; each implies slow


# --- tiers ----------------------------------------------------------------------------------------

@functools.cache
def missing_backend(marker: str, package: str | None = None) -> str | None:
    """Why the backend a ``marker`` test needs is missing here (None: it is there). Asked at run
    time, not at import: importing TVM or starting rknn-toolkit2's Python costs seconds a worker
    would otherwise pay while collecting, even for the fast tier."""
    if marker == "tvm":
        try:
            import tvm  # noqa: F401
        except ImportError:
            return "TVM is not installed (pip install 'edge3d[tvm]')"
    elif marker == "rknn":
        from edge3d.runtimes.rknn_runtime import RknnRuntime

        if not RknnRuntime().is_available():
            return "rknn-toolkit2 not set up (edge3d setup rknn)"
    elif marker == "tflite":
        from edge3d.runtimes.tflite_runtime import available

        if not available():
            return "LiteRT, onnx2tf and Vela not set up (edge3d setup tflite)"
    elif marker == "gpu":
        from edge3d.runtimes.tensorrt_runtime import TensorRTRuntime

        if not TensorRTRuntime().is_available():
            return "needs an NVIDIA GPU with the tensorrt package"
    elif marker == "cuda":
        try:
            import tvm
        except ImportError:
            return "TVM is not installed (pip install 'edge3d[tvm]')"
        try:
            present = tvm.cuda(0).exist
        except Exception:  # noqa: BLE001 - TVM's CUDA runtime could not load (no libcudart)
            present = False
        if not present:
            return "needs a CUDA device that TVM can run on"
    elif marker == "zoo":  # pytest.mark.zoo(package): a corpus model needs its package (tests/zoo)
        import importlib.util

        if package and importlib.util.find_spec(package) is None:
            return f"{package} is not installed (pip install 'edge3d[zoo]')"
    return None


def _tier(item) -> int:
    """0: fast; 1: slow and needs a backend (the longest: started first, so no worker waits
    alone on one at the end); 2: other slow tests."""
    if item.get_closest_marker("slow") is None:
        return 0
    return 1 if any(item.get_closest_marker(m) for m in BACKENDS) else 2


@pytest.hookimpl(tryfirst=True)  # before -m deselects: `-m "not slow"` leaves out backend tests too
def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(item.get_closest_marker(m) for m in BACKENDS):
            item.add_marker(pytest.mark.slow)
    items.sort(key=_tier)  # stable: collection order within a tier


def pytest_runtest_setup(item):
    for marker in BACKENDS:
        mark = item.get_closest_marker(marker)
        if mark is not None:
            reason = missing_backend(marker, *mark.args)
            if reason:
                pytest.skip(reason)


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite the golden op histograms under tests/golden (tests/golden.py) "
                          "instead of comparing with them")


@pytest.fixture
def update_golden(request) -> bool:
    """The value of ``--update-golden``: write golden files rather than check them."""
    return bool(request.config.getoption("--update-golden"))


def shape_arg(shape) -> str:
    return ",".join(str(d) for d in shape)


def small_shape(name: str) -> tuple[int, ...]:
    return EXAMPLES[name].small_input_shape


def reference_model(name: str):
    """The example exactly as examples/save_model.py saved it: same seed, same small config."""
    import torch

    torch.manual_seed(SEED)
    model, _ = build(name, small=True)
    return model


def invoke(*args, **kwargs):
    """Run the CLI in-process; stderr is kept apart from stdout (click >= 8.2)."""
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def rel_l2(expected, got) -> float:
    expected = np.asarray(expected, np.float64)
    got = np.asarray(got, np.float64).reshape(expected.shape)
    return float(np.linalg.norm(expected - got) / np.linalg.norm(expected))


def _shared_dir(tmp_path_factory, name: str) -> Path:
    """A folder of this test session that every xdist worker sees, so that what is saved or
    exported there is done once per session rather than once per worker."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # .../pytest-N/popen-gwK -> .../pytest-N: this session's, shared
    folder = base / f"shared-{name}"
    folder.mkdir(exist_ok=True)
    return folder


def _once(key_path: Path, make) -> None:
    """Run ``make()`` unless another worker already did; ``key_path`` names the product."""
    from filelock import FileLock

    done = key_path.with_name(key_path.name + ".done")
    with FileLock(str(key_path) + ".lock"):
        if not done.exists():
            make()
            done.touch()


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory):
    """``saved_model(name, fmt)`` -> path of the small example saved as "pt" (TorchScript),
    "pt2" (ExportedProgram) or "state-dict"; each is saved once per session."""
    from examples.save_model import save

    root = _shared_dir(tmp_path_factory, "saved")
    formats = {"pt": ("torchscript", ".pt"), "pt2": ("pt2", ".pt2"), "state-dict": ("state-dict", ".sd.pt")}

    def get(name: str, fmt: str = "pt") -> Path:
        save_format, suffix = formats[fmt]
        path = root / f"{name}{suffix}"
        _once(path, lambda: save(name, path, save_format, small=True, seed=SEED))
        return path

    return get


class Export:
    """The outcome of one `edge3d export` run: ``result`` has exit_code, stdout, stderr, output."""

    def __init__(self, result, out: Path):
        self.result = result
        self.out = out

    @property
    def onnx_path(self) -> Path:
        return self.out / "model.onnx"

    @property
    def manifest(self) -> dict:
        return json.loads((self.out / "manifest.json").read_text())


@pytest.fixture(scope="session")
def exported(saved_model, tmp_path_factory):
    """``exported(name, fmt)`` -> Export of `edge3d export` run once per session on a saved
    example; each export gets a parent folder of its own so leftovers beside it can be checked."""
    root = _shared_dir(tmp_path_factory, "bundles")

    def get(name: str, fmt: str = "pt") -> Export:
        key = root / f"{name}-{fmt}"
        out = key / "bundle"
        record = root / f"{name}-{fmt}.result.json"

        def run():
            key.mkdir()
            args = ["export", saved_model(name, fmt), "-o", out]
            if fmt == "pt":
                args += ["--input-shape", shape_arg(small_shape(name))]
            result = invoke(*args)
            record.write_text(json.dumps({"exit_code": result.exit_code, "stdout": result.stdout,
                                          "stderr": result.stderr, "output": result.output}))

        _once(key, run)
        return Export(SimpleNamespace(**json.loads(record.read_text())), out)

    return get


# --- tiny models: what a test of one behaviour needs, at a fraction of an example's cost ----------

TINY_SHAPES = {"conv3d": (1, 3, 4, 8, 8), "net": (1, 3, 2, 9, 9)}


def tiny_module(kind: str):
    """``conv3d``: one dense 3x3x3 Conv3d and a ReLU (three temporal taps; one Conv2d kernel once
    lowered). ``net``: every kind of layer of the examples in a few kilobytes (``_TinyNet``)."""
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    if kind == "conv3d":
        return nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ReLU()).eval()
    assert kind == "net", kind
    return _tiny_net()


def _tiny_net():
    import torch
    from torch import nn

    class TinyNet(nn.Module):
        """On 2 frames of 9x9: a 3x3x3 Conv3d with BatchNorm; a stride-2 one on the odd 9x9 frame
        (the paper's (s, s²) stride cannot line up there, so --stride-mode paper keeps it); a max
        pool; a 3x3x3 one on the single frame left (taps that only read padding), with a residual
        add; a 1x1x1 one; a mean over (T, H, W) and a classifier."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU())
            self.down = nn.Conv3d(8, 8, 3, stride=2, padding=1)
            self.pool = nn.MaxPool3d((1, 3, 3), stride=1, padding=(0, 1, 1))
            self.frame = nn.Conv3d(8, 8, 3, padding=1)
            self.point = nn.Conv3d(8, 8, 1)
            self.head = nn.Linear(8, 10)

        def forward(self, x):
            x = self.pool(torch.relu(self.down(self.stem(x))))
            x = x + torch.relu(self.frame(x))
            return self.head(torch.relu(self.point(x)).mean((2, 3, 4)))

    return TinyNet().eval()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """``tiny_model(kind, fmt)`` -> (path, input shape) of a tiny model saved as "pt" (TorchScript)
    or "pt2" (ExportedProgram), once per session."""
    root = _shared_dir(tmp_path_factory, "tiny")

    def get(kind: str, fmt: str = "pt") -> tuple[Path, tuple[int, ...]]:
        import torch

        shape = TINY_SHAPES[kind]
        path = root / f"{kind}.{fmt}"

        def make():
            model, x = tiny_module(kind), torch.randn(*shape)
            if fmt == "pt":
                torch.jit.save(torch.jit.trace(model, (x,)), str(path))
            else:
                torch.export.save(torch.export.export(model, (x,)), str(path))

        _once(path, make)
        return path, shape

    return get


@pytest.fixture(scope="session")
def onnx_5d(tmp_path_factory):
    """``onnx_5d(name)`` -> path of a plain ONNX export of an example: its Conv3d, pools and
    activations on rank-5 tensors, as torch.onnx writes them (nothing lowered)."""
    import torch

    root = _shared_dir(tmp_path_factory, "onnx5d")

    def get(name: str) -> Path:
        path = root / f"{name}.onnx"

        def run():
            x = torch.randn(*small_shape(name))
            torch.onnx.export(reference_model(name), (x,), str(path), dynamo=False, opset_version=17,
                              input_names=["clip"], output_names=["logits"])

        _once(path, run)
        return path

    return get


def independent_high_rank(model, max_rank: int = 4) -> dict[str, int]:
    """Tensors above ``max_rank`` by a walk of its own (not edge3d.onnx_tensors): name -> rank, over
    everything shape inference types in the main graph."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    graph = inferred.graph
    ranks: dict[str, int] = {}
    for init in graph.initializer:
        ranks[init.name] = len(init.dims)
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        tensor_type = value.type.tensor_type
        if value.type.HasField("tensor_type") and tensor_type.HasField("shape"):
            ranks.setdefault(value.name, len(tensor_type.shape.dim))
    for node in graph.node:
        for name in node.output:
            assert not name or name in ranks, f"shape inference left {name!r} ({node.op_type}) untyped"
    return {name: rank for name, rank in ranks.items() if rank > max_rank}
