"""Shared fixtures: the small example models, saved once per test session (per xdist worker).

Saving and exporting are lazy and cached, so a worker only pays for the models its tests use.
"""

from __future__ import annotations

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
