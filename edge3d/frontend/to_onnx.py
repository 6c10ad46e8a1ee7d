"""Export a loaded PyTorch model to ONNX, then check, shape-infer and simplify it.

Which torch exporter, measured on the example models with torch 2.13:

- the TorchScript exporter (``dynamo=False``) is the only one that takes a ``torch.jit`` module
  (the dynamo exporter fails on every ScriptModule) and it emits exactly the requested opset;
- the dynamo exporter is the only one that takes an ExportedProgram (the TorchScript exporter
  cannot trace ``ExportedProgram.module()``), but it emits opset 18 at least: asked for 17 it
  tries a down-conversion that fails on ReduceMean and leaves the model at 18.

So TorchScript archives, state_dicts and pickled modules go through the TorchScript exporter and
``.pt2`` files through dynamo. Both fold eval-mode BatchNorm into the convs.

The TorchScript exporter loses a tensor's rank after a reshape or ``unflatten`` to sizes read from
``x.shape``, and then fails on the ops whose ONNX form needs it (``unflatten``, ``flatten(-2)``,
``movedim``), though the model runs. Measured on 12 archives (the 6 modules of
tests/test_torchscript_export.py, each scripted and traced, saved and loaded; ONNX Runtime output
compared with the module's):

==========================================================================  ========
route                                                                       exported
==========================================================================  ========
TorchScript exporter on the loaded module                                       6/12
``torch.jit.trace`` of the loaded module, then the TorchScript exporter         6/12
``torch._export.converter.TS2EPConverter``, then the dynamo exporter           12/12
==========================================================================  ========

(tracing a ScriptModule inlines its untyped graph, so it gives the exporter no ranks.) The example
models all pass the first route at the requested opset, so it stays first (it honours ``--opset``
and ``--dynamic-batch``, which the dynamo exporter cannot), and a model it fails on goes through
TS2EPConverter (``torch.export.export`` for a plain ``nn.Module``) and the dynamo exporter, at
opset 18 (noted). Torch 2.13's TorchScript exporter writes ``movedim(-1, 1)`` as a Transpose with
a negative perm entry, which ONNX forbids: ``fix_negative_perms`` normalises them.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass

from ..choices import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET  # noqa: F401 - edge3d.pipeline imports them from here
from ..errors import InputError, first_line
from ..log import native_output_muted
from ..onnx_tensors import default_opset, graph_inputs
from .load import LoadedModel


@dataclass
class OnnxExport:
    model: object  # onnx.ModelProto
    exporter: str  # "torchscript", "dynamo" or "none" (ONNX input)
    opset: int
    notes: list[str]


def export_to_onnx(loaded: LoadedModel, opset: int = DEFAULT_OPSET, opset_explicit: bool = False,
                   dynamic_batch: bool = False) -> OnnxExport:
    if loaded.kind == "onnx":
        model = loaded.onnx_model
        if loaded.input_shapes:
            set_input_shapes(model, loaded.input_shapes, dynamic_batch)
        return OnnxExport(model, "none", default_opset(model), [])
    if not loaded.input_shapes:
        raise InputError(
            f"the input shape of {loaded.path} cannot be derived from a {loaded.kind} file; "
            "pass --input-shape B,C,T,H,W (e.g. 1,3,16,112,112)"
        )
    import torch

    if loaded.kind == "exported-program":
        if dynamic_batch:
            raise InputError("--dynamic-batch needs a TorchScript, state_dict or ONNX model: an ExportedProgram "
                             "keeps the static shapes it was exported with")
        model = _export_dynamo(loaded, opset)
        got = default_opset(model)
        notes = []
        if got != opset:
            if opset_explicit:
                raise InputError(
                    f"an ExportedProgram exports at opset {got} here, not {opset}; pass --opset {got}, "
                    "or save the model with torch.jit.save to export at a lower opset"
                )
            notes.append(f"exported at opset {got}: the lowest the dynamo exporter emits for this model")
        return OnnxExport(model, "dynamo", got, notes)

    args = tuple(torch.randn(*shape) for shape in loaded.input_shapes)
    n_out = _run_once(loaded.module, args)
    try:
        model = fix_negative_perms(_export_torchscript(loaded.module, args, opset, n_out, dynamic_batch))
        broken = _fails_in_onnxruntime(model, args)
        if broken is not None:  # simplified, shapes become known: a Split may then be fitted to them
            fitted = _fit_splits(model)
            if fitted is not None and _fails_in_onnxruntime(fitted, args) is None:
                model, broken = fitted, None
        if broken is None:
            return OnnxExport(model, "torchscript", default_opset(model), [])
        first_error: Exception = RuntimeError(f"its ONNX model does not run in ONNX Runtime: {broken}")
    except Exception as exc:  # noqa: BLE001 - the exporter raises assorted types on ops it cannot type
        first_error = exc
    if dynamic_batch:
        raise _exporter_failed(loaded, first_error, "; --dynamic-batch needs that exporter")
    try:
        if loaded.kind == "torchscript" and loaded.path is not None:
            model = _export_converted_in_child(loaded.path, [tuple(a.shape) for a in args])
        else:
            model = _export_converted(loaded.module, args)
    except ConverterTimeout:
        raise _exporter_failed(loaded, first_error, f"; the TorchScript→ExportedProgram converter did not finish "
                                                    f"in {CONVERTER_SECONDS} s") from None
    except Exception:  # noqa: BLE001 - the first exporter's error says more about the model
        raise _exporter_failed(loaded, first_error) from None
    got = default_opset(model)
    if got != opset and opset_explicit:
        raise InputError(
            f"the TorchScript exporter failed on {loaded.path} ({_failing_op(first_error)}) and the dynamo "
            f"exporter, which exports it, writes opset {got}, not {opset}; pass --opset {got}"
        )
    notes = [f"exported at opset {got} by the dynamo exporter: the TorchScript exporter failed on this model "
             f"({_failing_op(first_error)})"]
    return OnnxExport(model, "dynamo", got, notes)


def _fails_in_onnxruntime(model, args) -> str | None:
    """Why the exported model does not run once in ONNX Runtime on ``args`` (None: it runs).
    The TorchScript exporter can write a graph that is valid ONNX but wrong for the traced
    sizes (e.g. a Split whose sizes add up to more than its input), which only a run shows."""
    import onnxruntime as ort

    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # one run: no need
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        session.run(None, {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)})
    except Exception as exc:  # noqa: BLE001 - ORT's errors are its own types
        return first_line(exc, 160)
    return None


def _fit_splits(model, rounds: int = 32):
    """Simplify and fit Split sizes until no Split changes: each fitted Split lets shape
    inference reach the next. None when no Split was fitted."""
    changed_any = False
    for _ in range(rounds):
        model, changed = fix_split_sizes(_simplified(model))
        if not changed:
            break
        changed_any = True
    return model if changed_any else None


def fix_split_sizes(model):
    """An untyped TorchScript graph gives the exporter no sizes, so ``x.split(s, dim)`` becomes a
    Split into pieces of ``s`` each, even where the dim is not a multiple of ``s`` (torch makes
    the last piece smaller, ONNX Runtime refuses the node). With the dim known from shape
    inference, the last piece gets what is left. Main graph only; returns the model and whether
    a Split changed."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    dims = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    changed = False
    consts = {t.name: t for t in model.graph.initializer}
    consts.update({n.output[0]: n.attribute[0].t for n in model.graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    for node in model.graph.node:
        if node.op_type != "Split" or len(node.input) < 2 or node.input[1] not in consts:
            continue
        shape = dims.get(node.input[0])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        sizes = numpy_helper.to_array(consts[node.input[1]]).astype(np.int64)
        size = shape[axis] if shape else None
        if size is None or sizes.sum() == size:
            continue
        rest = size - int(sizes[:-1].sum())
        if rest <= 0:
            continue
        fixed = numpy_helper.from_array(np.concatenate([sizes[:-1], [rest]]).astype(np.int64),
                                        f"{node.input[1]}__fitted_{len(model.graph.initializer)}")
        model.graph.initializer.append(fixed)
        node.input[1] = fixed.name
        changed = True
    return model, changed


def fix_negative_perms(model):
    """Torch 2.13's TorchScript exporter writes ``movedim(-1, 1)`` as Transpose perm [0, -1, 1, 2, 3];
    ONNX wants each axis in [0, rank). Normalise such entries (perm[i] % rank), in subgraphs too."""
    import onnx

    def fix(graph) -> None:
        for node in graph.node:
            for attr in node.attribute:
                if node.op_type == "Transpose" and attr.name == "perm" and any(p < 0 for p in attr.ints):
                    rank = len(attr.ints)
                    perm = [p % rank for p in attr.ints]
                    del attr.ints[:]
                    attr.ints.extend(perm)
                if attr.type == onnx.AttributeProto.GRAPH:
                    fix(attr.g)
                for sub in attr.graphs:
                    fix(sub)

    fix(model.graph)
    return model


def _run_once(module, args) -> int:
    """Run the model on the example input: an error here is the input shape's (or the model's), not
    the exporter's. Returns how many outputs it has."""
    import torch

    try:
        with _quiet(), torch.no_grad():
            out = module(*args)
    except Exception as exc:  # noqa: BLE001 - a shape mismatch raises RuntimeError, scripted code others
        raise InputError(f"the model does not run on inputs of shape {[tuple(a.shape) for a in args]} "
                         f"({first_line(exc, 200)}); check --input-shape") from None
    return len(out) if isinstance(out, (tuple, list)) else 1


def _failing_op(exc: BaseException) -> str:
    """The op an exporter error names (``aten::unflatten``, "export of operator dim"), or its first line."""
    text = str(exc)
    found = re.search(r"\baten::\w+", text) or re.search(r"export of operator (\w+)", text)
    if found:
        name = found.group(0) if found.group(0).startswith("aten::") else f"aten::{found.group(1)}"
        return f"it fails on {name}"
    return first_line(exc, 160)


def _exporter_failed(loaded: LoadedModel, exc: BaseException, why: str = "") -> InputError:
    return InputError(
        f"the model runs, but torch.onnx could not export {loaded.path.name} ({_failing_op(exc)}){why}; "
        "save it as an ExportedProgram with torch.export.save (.pt2) and export that"
    )


def set_input_shapes(model, shapes, dynamic_batch: bool = False) -> None:
    """Fix the graph's input dims (``--input-shape`` on an ONNX file); optionally a symbolic batch."""
    inputs = graph_inputs(model.graph)
    if len(shapes) != len(inputs):
        raise InputError(f"the model has {len(inputs)} inputs but {len(shapes)} --input-shape were given")
    for value, shape in zip(inputs, shapes):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise InputError(f"input {value.name!r} has rank {len(dims)}, --input-shape gives {len(shape)} dims")
        for i, (dim, size) in enumerate(zip(dims, shape)):
            if i == 0 and dynamic_batch:
                dim.Clear()
                dim.dim_param = "batch"
            elif size > 0:
                dim.Clear()
                dim.dim_value = size
    for value in model.graph.output:
        if dynamic_batch and value.type.tensor_type.shape.dim:
            value.type.tensor_type.shape.dim[0].Clear()
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]


def _input_names(module, count: int) -> list[str]:
    """Keep the forward() argument names (``x``, ``clip``) rather than ``input.1``."""
    names = []
    try:
        if hasattr(module, "forward") and hasattr(module.forward, "schema"):  # ScriptModule
            names = [a.name for a in module.forward.schema.arguments[1:]]
        else:
            names = list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError, AttributeError):
        pass
    if len(names) < count or len(set(names[:count])) < count:
        names = ["input"] if count == 1 else [f"input_{i}" for i in range(count)]
    return names[:count]


def _export_torchscript(module, args, opset: int, n_out: int, dynamic_batch: bool = False):
    import onnx
    import torch

    from .script_types import typed_from_one_run
    from .symbolics import register

    register()
    buffer = io.BytesIO()
    typed = typed_from_one_run() if isinstance(module, torch.jit.ScriptModule) else contextlib.nullcontext()
    inputs = _input_names(module, len(args))
    outputs = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    with _quiet(), native_output_muted(), typed:
        torch.onnx.export(  # the TorchScript exporter writes to a file object too; torch types only paths
            module, args, buffer, dynamo=False, opset_version=opset,  # type: ignore[arg-type]
            input_names=inputs, output_names=outputs, do_constant_folding=True,
            dynamic_axes={name: {0: "batch"} for name in inputs + outputs} if dynamic_batch else None,
        )
    return onnx.load_from_string(buffer.getvalue())


def _converted_program(module, args):
    """A ScriptModule through ``TS2EPConverter`` (an ``nn.Module`` through ``torch.export``): an
    ExportedProgram whose sizes are the example's."""
    import torch

    with _quiet(), native_output_muted():
        if isinstance(module, torch.jit.ScriptModule):
            from torch._export.converter import TS2EPConverter

            # its program has symbolic sizes (Dim.AUTO); exported again, they are the example's
            return torch.export.export(TS2EPConverter(module, args).convert().module(), args, strict=False)
        return torch.export.export(module, args, strict=False)


def _export_converted(module, args):
    """``_converted_program``, then the dynamo exporter: the route that types what the TorchScript
    exporter cannot."""
    import torch

    program = _converted_program(module, args)
    with _quiet(), native_output_muted():
        onnx_program = torch.onnx.export(program, dynamo=True, opset_version=18, verbose=False, optimize=True)
    assert onnx_program is not None, "torch.onnx.export(dynamo=True) returns the ONNXProgram"
    model = onnx_program.model_proto
    outputs = ["output"] if len(model.graph.output) == 1 else [f"output_{i}" for i in range(len(model.graph.output))]
    _rename_io(model, _input_names(module, len(args)), outputs)
    return model


CONVERTER_SECONDS = 180  # TS2EPConverter can spend an hour in sympy on a graph of many reshapes


class ConverterTimeout(Exception):
    pass


def _export_converted_in_child(path, shapes: list[tuple[int, ...]]):
    """``_export_converted`` of the TorchScript file at ``path`` in a child process (see
    ``convert_in_child``)."""
    import tempfile
    from pathlib import Path

    import onnx

    with tempfile.TemporaryDirectory(prefix="edge3d-convert-") as scratch:
        out = Path(scratch) / "converted.onnx"
        convert_in_child(path, shapes, out, "onnx")
        return onnx.load(str(out))


def convert_in_child(path, shapes: list[tuple[int, ...]], out, fmt: str) -> None:
    """Convert the TorchScript file at ``path`` in a child process stopped after
    ``CONVERTER_SECONDS`` (the converter cannot be interrupted in-process, and on some graphs, many
    rank-6+ reshapes, it runs for an hour), writing ``out``: ONNX (``fmt="onnx"``) or an
    ExportedProgram (``"pt2"``). The archive was checked before it was first loaded
    (``frontend.trust``); the child loads it again."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    code = ("import json, sys; from edge3d.frontend.to_onnx import _convert_child; "
            "_convert_child(sys.argv[1], [tuple(s) for s in json.loads(sys.argv[2])], sys.argv[3], sys.argv[4])")
    import edge3d

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(edge3d.__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")])}
    # absolute paths: the child runs in the output's folder, where a relative model path means nothing
    child = subprocess.Popen([sys.executable, "-c", code, str(Path(path).resolve()), json.dumps(shapes),
                              str(Path(out).resolve()), fmt],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=env, cwd=str(Path(out).parent))
    try:
        child.wait(CONVERTER_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        raise ConverterTimeout() from None
    if child.returncode != 0 or not Path(out).exists():
        raise RuntimeError(f"the converter's process exited with {child.returncode}")


def _convert_child(path: str, shapes: list[tuple[int, ...]], out: str, fmt: str = "onnx") -> None:
    import onnx
    import torch

    module = torch.jit.load(path, map_location="cpu").eval()
    args = tuple(torch.randn(*shape) for shape in shapes)
    if fmt == "pt2":
        torch.export.save(_converted_program(module, args), out)
        return
    model = _export_converted(module, args)
    onnx.save(model, out, save_as_external_data=model.ByteSize() > 2**31 - 2**20)


def _rename_io(model, inputs: list[str], outputs: list[str]) -> None:
    """Name the graph's inputs and outputs as the TorchScript exporter would (``x``, ``output``)."""
    graph = model.graph
    values = list(graph_inputs(graph))
    if len(values) != len(inputs):
        return
    taken = {v.name for v in graph.input} | {v.name for v in graph.output} | {i.name for i in graph.initializer}
    taken |= {name for node in graph.node for name in list(node.input) + list(node.output)}
    renames = {v.name: new for v, new in zip(values, inputs)}
    renames.update({v.name: new for v, new in zip(graph.output, outputs)})
    renames = {old: new for old, new in renames.items() if old != new}
    if any(new in taken for new in renames.values()) or len(set(renames.values())) < len(renames):
        return  # a clash: keep the exporter's names
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        value.name = renames.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]


def _export_dynamo(loaded: LoadedModel, opset: int):
    import torch

    with _quiet(), native_output_muted():
        try:
            program = torch.onnx.export(loaded.exported, dynamo=True, opset_version=max(opset, 18),
                                        verbose=False, optimize=True)
        except Exception as exc:  # noqa: BLE001 - the exporter raises its own error types
            raise InputError(f"torch.onnx could not export {loaded.path} ({first_line(exc, 200)})") from None
    assert program is not None, "torch.onnx.export(dynamo=True) returns the ONNXProgram"
    proto = program.model_proto
    del program
    _forget_rewriter_matches()
    return proto


def _forget_rewriter_matches() -> None:
    """onnxscript's pattern rewriter (0.7), which the dynamo exporter runs, keeps in its
    module-level rules the graph and the match of the last node each rule tried, and with them
    the exported weights (the PyTorch parameters and those BatchNorm was folded into: 260 MB on
    R3D-18) for the life of the process. Each match starts by setting these again, so they are
    dropped here; a later onnxscript that keeps no such state has nothing to drop."""
    for name, module in list(sys.modules.items()):
        if not name.startswith("onnxscript.rewriter") or module is None:
            continue
        for obj in list(vars(module).values()):
            rules = vars(obj).get("rules") if hasattr(obj, "__dict__") else None  # a rule set's list
            for rule in rules if isinstance(rules, (list, tuple)) else [obj]:
                matcher = vars(rule).get("_matcher") if hasattr(rule, "__dict__") else None
                for state in ("_graph", "_current_node", "_match", "_tracer"):
                    if hasattr(matcher, "__dict__") and state in vars(matcher):
                        setattr(matcher, state, None)


def _simplified(model, output_path: str | None = None):
    """``model`` (a ModelProto, or a file with ``output_path`` for onnxsim to write) simplified
    by onnxsim, or as it is where onnxsim fails."""
    import onnxsim

    try:
        with _quiet(), native_output_muted():  # onnxsim prints a line per op it cannot fold
            simplified, ok = onnxsim.simplify(model, check_n=0, output_path=output_path)
    except Exception:  # noqa: BLE001 - simplifying is an optimisation; lower the model as it is
        return model
    if not ok:
        return model
    kept = [p for p in simplified.metadata_props if not p.key.startswith("onnxsim.")]  # its run log, not ours
    del simplified.metadata_props[:]
    simplified.metadata_props.extend(kept)
    return simplified


PROTOBUF_LIMIT = 2**31  # bytes in one serialised protobuf message


def message_size(model) -> int:
    """The model's serialised size with its weights, wherever they are: protobuf measures the
    message (above the limit it will not even do that), the initializers' dims measure weights
    kept on disk."""
    import numpy as np
    from onnx import helper

    weights = sum(int(np.prod(t.dims)) * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
                  for t in model.graph.initializer)
    try:
        return max(model.ByteSize(), weights)
    except Exception:  # noqa: BLE001 - EncodeError (upb) or ValueError, depending on the protobuf build
        return max(PROTOBUF_LIMIT, weights)


def prepare(model, simplify: bool = True, store=None, name: str = "model"):
    """Check the graph, infer shapes and (unless told not to) simplify it with onnxsim.

    With a ``DiskStore`` the model is stored first and its skeleton comes back: no step then
    serialises the weights, so a model above protobuf's 2 GiB limit is checked, inferred and
    lowered like any other; only onnxsim, which takes the whole message, is skipped for it.
    Without one (``MemoryStore``), such a model is refused."""
    import onnx

    from ..model_store import MemoryStore

    store = store or MemoryStore()
    size = message_size(model)
    if size >= PROTOBUF_LIMIT and store.folder is None:  # the checker, onnxsim and ORT serialise it whole
        raise InputError(f"the exported model is {size / 2**30:.2f} GiB, above protobuf's 2 GiB limit for one "
                         "message; lower it through `edge3d export` or `edge3d lower`, which keep the weights "
                         "on disk")
    model = store.put(model, name)
    try:
        path = store.path(model)
        onnx.checker.check_model(str(path) if path else model)
    except Exception as exc:  # noqa: BLE001 - ValidationError, and UnicodeDecodeError on a damaged string
        raise InputError(f"the ONNX model is invalid: {first_line(exc, 200)}") from None
    if simplify and size < PROTOBUF_LIMIT:
        path = store.path(model)
        given = str(path) if path else model  # from a file, onnxsim maps the weights rather than copying them
        simplified = _simplified(given, str(store.folder / f"{name}-onnxsim.onnx") if path else None)
        if simplified is not given:  # onnxsim gives back what it was given where it fails
            model = store.put(simplified, f"{name}-simplified")
        del simplified
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - InferenceError, or a shape the ops contradict
        raise InputError(f"ONNX shape inference rejects the model: {first_line(exc, 200)}") from None
    from .run_shapes import fill_open_shapes

    return store.put(fill_open_shapes(inferred, store), f"{name}-inferred")


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and warnings that would drown edge3d's own output."""
    names = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "onnxscript")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
