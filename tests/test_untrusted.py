"""Tampered model files: nothing they carry runs without --trust-pickle.

Each archive is a real one, saved by torch, with one entry rewritten the way an attacker would:
TorchScript code that maps a file for writing (``torch.from_file(path, True, n)``) in
``__setstate__`` or ``forward``; a ``.pt2`` whose pickled entries, shape expressions, guards or
graph run Python. Every command that loads a model must refuse it in one line naming the problem and
--trust-pickle, and the marker the payload would touch must be left alone. The controls load the
same files with --trust-pickle and see the payload run: proof the refusals are not vacuous.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import pickle
import re
import zipfile
from collections.abc import Callable

import pytest
import torch
from conftest import invoke, shape_arg, stderr_lines
from torch import nn

from edge3d.frontend.load import load_model
from edge3d.frontend.trust import Refused, check_torchscript, pickle_globals
from edge3d.frontend.trust_pt2 import guard_problem, sympy_problem, target_problem

SHAPE = (1, 3, 4, 8, 8)
ORIGINAL = b"original-content"  # 16 bytes: the 4 float32 torch.from_file(marker, True, 4) maps


# --- building tampered archives ---------------------------------------------------------------------

class Scale(nn.Module):
    """A leaf with its own __getstate__/__setstate__, so the archive holds TorchScript that
    torch.jit.load runs while it reads the pickle."""

    def __init__(self):
        super().__init__()
        self.scale = 1.0

    @torch.jit.export
    def __getstate__(self) -> tuple[float, bool]:
        return (self.scale, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[float, bool]) -> None:
        self.scale = state[0]
        self.training = state[1]

    def forward(self, x):
        return x * self.scale


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm3d(4)
        self.body = Scale()

    def forward(self, x):
        return self.body(torch.relu(self.bn(self.conv(x))))


def rewrite_zip(src: pathlib.Path, dst: pathlib.Path, edit: Callable[[str, bytes], bytes],
                add: dict[str, bytes] | None = None) -> pathlib.Path:
    """A copy of the archive ``src`` with each entry passed through ``edit(name, data)``, plus ``add``
    (names relative to the archive's folder)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        prefix = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            zout.writestr(info, edit(info.filename, zin.read(info.filename)))
        for name, data in (add or {}).items():
            zout.writestr(f"{prefix}/{name}", data)
    return dst


def from_file_payload(marker: pathlib.Path, method: str) -> str:
    """TorchScript that overwrites ``marker`` with zeros, its result used so that it is no dead code."""
    zeros = f'torch.sum(torch.fill_(torch.from_file("{marker}", True, 4), 0.0))'
    return f"x = torch.add(x, {zeros})" if method == "forward" else f"self.scale = float({zeros})"


@pytest.fixture(scope="module")
def scripted(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("scripted") / "net.pt"
    torch.manual_seed(0)
    torch.jit.script(Net().eval()).save(str(path))
    return path


def tampered_torchscript(scripted: pathlib.Path, tmp: pathlib.Path, method: str, line: str) -> pathlib.Path:
    """The scripted Net with ``line`` inserted at the top of Scale.``method``."""
    header = re.compile(rf"  def {method}\(self: __torch__[\w.]*\.Scale,?\n(?:.*\n)*?.*:\n")
    edited = []

    def edit(name: str, data: bytes) -> bytes:
        text = data.decode() if name.endswith(".py") else ""
        found = header.search(text)
        if not found:
            return data
        edited.append(name)
        return (text[:found.end()] + f"    {line}\n" + text[found.end():]).encode()

    model = rewrite_zip(scripted, tmp / f"evil-{method.strip('_')}.pt", edit)
    assert len(edited) == 1, f"Scale.{method} found in {edited}"
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> pathlib.Path:
    """A .pt2 of Net saved by torch.export.save: weights, BatchNorm buffers, sample inputs."""
    path = tmp_path_factory.mktemp("exported") / "net.pt2"
    torch.manual_seed(0)
    torch.export.save(torch.export.export(Net().eval(), (torch.randn(*SHAPE),)), str(path))
    return path


def _edit_model_json(change: Callable[[dict], None]) -> Callable[[str, bytes], bytes]:
    def edit(name: str, data: bytes) -> bytes:
        if not name.endswith("/models/model.json"):
            return data
        program = json.loads(data)
        change(program)
        return json.dumps(program).encode()

    return edit


def _touch(marker: pathlib.Path) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).touch()"


def tampered_pt2(exported: pathlib.Path, tmp: pathlib.Path, how: str, marker: pathlib.Path) -> pathlib.Path:
    dst = tmp / f"evil-{how}.pt2"
    if how == "sample-inputs":  # torch falls back to weights_only=False when the weights-only load fails
        payload = io.BytesIO()
        torch.save(_Payload(marker), payload)
        edit = lambda n, d: payload.getvalue() if n.endswith("sample_inputs/model.pt") else d
        return rewrite_zip(exported, dst, edit)
    if how == "opaque-constant":  # loaded with pickle.loads
        from torch.export.pt2_archive.constants import OPAQUE_OBJ_FILENAME_PREFIX as prefix

        config = {"config": {"evil": {"path_name": f"{prefix}0", "is_param": False, "use_pickle": True,
                                      "tensor_meta": None}}}
        edit = lambda n, d: json.dumps(config).encode() if n.endswith("model_constants_config.json") else d
        return rewrite_zip(exported, dst, edit, {f"data/constants/{prefix}0": pickle.dumps(_Payload(marker))})
    if how == "shape-expression":  # parsed with sympy.sympify: eval
        def change(program: dict) -> None:
            values = program["graph_module"]["graph"]["tensor_values"]
            size = next(iter(values.values()))["sizes"]
            size[0] = {"as_expr": {"expr_str": _touch(marker), "hint": size[0]}}
        return rewrite_zip(exported, dst, _edit_model_json(change))
    if how == "guards":  # pasted into source and exec-ed by ExportedProgram.module()
        return rewrite_zip(exported, dst, _edit_model_json(
            lambda program: program.__setitem__("guards_code", [f"{_touch(marker)} is None"])))
    if how == "graph-op":  # aten::from_file(path, shared=True, size=n) creates or extends the file when run
        def change(program: dict) -> None:
            graph = program["graph_module"]["graph"]
            meta = json.loads(json.dumps(graph["tensor_values"]["x"]))
            meta["sizes"], meta["strides"] = [{"as_int": 4}], [{"as_int": 1}]
            graph["tensor_values"]["mapped"] = meta
            args = {"filename": {"as_string": str(marker)}, "shared": {"as_bool": True}, "size": {"as_int": 4}}
            graph["nodes"].insert(0, {"target": "torch.ops.aten.from_file.default", "metadata": {},
                                      "inputs": [{"name": k, "arg": v, "kind": 1} for k, v in args.items()],
                                      "outputs": [{"as_tensor": {"name": "mapped"}}]})
        return rewrite_zip(exported, dst, _edit_model_json(change))
    raise ValueError(how)


class _Payload:
    """Unpickling this creates the marker file: a stand-in for arbitrary code."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


# --- every command refuses, in one line ------------------------------------------------------------

COMMANDS = {
    "export": lambda model, tmp: ("export", model, "-o", tmp / "out", "--input-shape", shape_arg(SHAPE)),
    "inspect": lambda model, tmp: ("inspect", model, "--input-shape", shape_arg(SHAPE)),
    "rewrite": lambda model, tmp: ("rewrite", model, "--block", "st-add", "-o", tmp / "rewritten.pt2",
                                   "--input-shape", shape_arg(SHAPE)),
}


def assert_refused(result, marker: pathlib.Path, before: bytes | None, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("edge3d: error:") and "--trust-pickle" in lines[0], lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    if before is None:
        assert not marker.exists(), "the payload ran without --trust-pickle"
    else:
        assert marker.read_bytes() == before, "the payload overwrote the file without --trust-pickle"


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("method", ["__setstate__", "forward"])
def test_torchscript_from_file_is_refused(scripted, tmp_path, command, method):
    marker = tmp_path / "victim"
    marker.write_bytes(ORIGINAL)
    model = tampered_torchscript(scripted, tmp_path, method, from_file_payload(marker, method))
    result = invoke(*COMMANDS[command](model, tmp_path))
    assert_refused(result, marker, ORIGINAL, "torch.from_file", "code/__torch__/test_untrusted.py")
    assert not (tmp_path / "out").exists() and not (tmp_path / "rewritten.pt2").exists()


@pytest.mark.parametrize("method", ["__setstate__", "forward"])
def test_torchscript_payload_is_real(scripted, tmp_path, method):
    """The control: with --trust-pickle the same archive overwrites the file."""
    marker = tmp_path / "victim"
    marker.write_bytes(ORIGINAL)
    model = tampered_torchscript(scripted, tmp_path, method, from_file_payload(marker, method))
    invoke(*COMMANDS["export"](model, tmp_path), "--trust-pickle")
    assert marker.read_bytes() == bytes(16), "the payload did not run: the refusal test proves nothing"


PT2_ATTACKS = {"sample-inputs": "sample_inputs/model.pt", "opaque-constant": "data/constants/",
               "shape-expression": "shape expression", "guards": "guard", "graph-op": "aten::from_file"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("how", sorted(PT2_ATTACKS))
def test_pt2_payload_is_refused(exported, tmp_path, command, how):
    marker = tmp_path / "pwned"
    model = tampered_pt2(exported, tmp_path, how, marker)
    result = invoke(*COMMANDS[command](model, tmp_path))
    assert_refused(result, marker, None, PT2_ATTACKS[how])


@pytest.mark.parametrize("how", sorted(PT2_ATTACKS))
def test_pt2_payload_is_real(exported, tmp_path, how):
    """The control: torch's own loader, as --trust-pickle uses it, runs each payload (the graph's when
    the model runs: torch.onnx gives up on from_file before `export` runs it)."""
    marker = tmp_path / "pwned"
    model = tampered_pt2(exported, tmp_path, how, marker)
    if how == "graph-op":
        load_model(model, trust_pickle=True).torch_callable(torch.randn(*SHAPE))
    else:
        invoke(*COMMANDS["export"](model, tmp_path), "--trust-pickle")
    assert marker.exists(), "the payload did not run: the refusal test proves nothing"


def test_bench_refuses_a_bundle_whose_source_is_tampered(scripted, tmp_path):
    marker = tmp_path / "victim"
    marker.write_bytes(ORIGINAL)
    source = tampered_torchscript(scripted, tmp_path, "__setstate__", from_file_payload(marker, "__setstate__"))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(json.dumps({
        "format": "edge3d-bundle", "source": {"path": str(source), "kind": "torchscript"}, "model": {"opset": 17},
        "inputs": [{"name": "clip", "original_shape": list(SHAPE), "layout": "clip"}]}))
    result = invoke("bench", bundle, "--iters", "1", "--warmup", "0")
    assert_refused(result, marker, ORIGINAL, "torch.from_file", "--baseline none")


# --- the checks themselves ---------------------------------------------------------------------------

def test_untampered_archives_load_without_the_flag(scripted, exported):
    assert load_model(scripted).kind == "torchscript"
    loaded = load_model(exported)  # weights, BatchNorm buffers and sample inputs: weights-only pickles
    assert loaded.kind == "exported-program" and loaded.input_shapes == [SHAPE]
    x = torch.randn(*SHAPE)
    torch.manual_seed(0)
    expected = Net().eval()(x)
    assert torch.allclose(loaded.torch_callable(x), expected, atol=1e-5)


@pytest.mark.parametrize("line, named", [
    ('_e3 = torch.save(torch.zeros(1), "/tmp/x")', "torch.save"),
    ('_e3 = ops.c10d.allreduce_([torch.zeros(1)])', "ops.c10d.allreduce_"),
    ('_e3 = torch.ops.profiler._record_function_enter("x")', "torch.ops.profiler"),
    ('_e3 = torch.not_an_operator(1)', "torch.not_an_operator"),
    ('_0 = torch.from_file', "torch.from_file"),
    ('_e3 = rpc_sync("w", torch.add, (1, 2))', "rpc_sync"),
])
def test_torchscript_names_outside_the_allowlist(scripted, tmp_path, line, named):
    model = tampered_torchscript(scripted, tmp_path, "forward", line)
    with pytest.raises(Refused, match="--trust-pickle") as refused:
        check_torchscript(model)
    assert named in str(refused.value)


def test_torchscript_pickle_global_outside_the_allowlist(scripted, tmp_path):
    evil = pickle.dumps(_Payload(tmp_path / "pwned"), protocol=2)
    model = rewrite_zip(scripted, tmp_path / "evil.pt", lambda n, d: evil if n.endswith("/constants.pkl") else d)
    with pytest.raises(Refused, match="constants.pkl references"):
        check_torchscript(model)
    assert "pathlib.Path.touch" in set(pickle_globals(pickle.dumps(_Payload(tmp_path), protocol=4)))


@pytest.mark.parametrize("expr, ok", [
    ("Symbol('s77', positive=True, integer=True)", True),
    ("Mul(Integer(32), Symbol('s0', positive=True, integer=True))", True),
    ("FloorDiv(s0 + 1, 2)", True),
    ("__import__('os').system('id')", False),
    ("Symbol.__init__", False),
    ("eval(chr(49))", False),
])
def test_shape_expression_allowlist(expr, ok):
    assert (sympy_problem(expr) is None) is ok


@pytest.mark.parametrize("guard, ok", [
    ("L['x'].size()[0] <= 64", True),
    ("2 <= L['x'].size()[0] and L['x'].size()[0] % 2 == 0", True),
    ("__import__('os').system('id') is None", False),
    ("L['x\"); import os; (\"'].size()[0] == 1", False),
])
def test_guard_allowlist(guard, ok):
    assert (guard_problem(guard) is None) is ok


def test_graph_target_allowlist():
    assert target_problem(torch.ops.aten.conv3d.default)[1] is None
    assert target_problem(torch.ops.aten.from_file.default)[1] == "reads or writes files or the network"
    assert target_problem(torch.ops.profiler._record_function_enter.default)[1]
    assert target_problem(os.system)[1] == "is not a PyTorch operator"
