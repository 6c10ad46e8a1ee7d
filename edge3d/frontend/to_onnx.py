"""Export a loaded PyTorch model to ONNX, then check, shape-infer and simplify it.

Which torch exporter, measured on the example models with torch 2.13:

- the TorchScript exporter (``dynamo=False``) is the only one that takes a ``torch.jit`` module
  (the dynamo exporter fails on every ScriptModule) and it emits exactly the requested opset;
- the dynamo exporter is the only one that takes an ExportedProgram (the TorchScript exporter
  cannot trace ``ExportedProgram.module()``), but it emits opset 18 at least: asked for 17 it
  tries a down-conversion that fails on ReduceMean and leaves the model at 18.

So TorchScript archives, state_dicts and pickled modules go through the TorchScript exporter and
``.pt2`` files through dynamo. Both fold eval-mode BatchNorm into the convs.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import warnings
from dataclasses import dataclass

from ..choices import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET  # noqa: F401 - edge3d.pipeline imports them from here
from ..errors import InputError, first_line
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
    model = _export_torchscript(loaded.module, args, opset, dynamic_batch)
    return OnnxExport(model, "torchscript", default_opset(model), [])


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


def _export_torchscript(module, args, opset: int, dynamic_batch: bool = False):
    import onnx
    import torch

    buffer = io.BytesIO()
    with _quiet():
        try:
            with torch.no_grad():
                out = module(*args)
            n_out = len(out) if isinstance(out, (tuple, list)) else 1
            inputs = _input_names(module, len(args))
            outputs = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
            torch.onnx.export(  # the TorchScript exporter writes to a file object too; torch types only paths
                module, args, buffer, dynamo=False, opset_version=opset,  # type: ignore[arg-type]
                input_names=inputs, output_names=outputs, do_constant_folding=True,
                dynamic_axes={name: {0: "batch"} for name in inputs + outputs} if dynamic_batch else None,
            )
        except RuntimeError as exc:
            raise InputError(f"the model does not run on inputs of shape {[tuple(a.shape) for a in args]} "
                             f"({first_line(exc, 200)}); check --input-shape") from None
    return onnx.load_from_string(buffer.getvalue())


def _export_dynamo(loaded: LoadedModel, opset: int):
    import torch

    with _quiet():
        try:
            program = torch.onnx.export(loaded.exported, dynamo=True, opset_version=max(opset, 18),
                                        verbose=False, optimize=True)
        except Exception as exc:  # noqa: BLE001 - the exporter raises its own error types
            raise InputError(f"torch.onnx could not export {loaded.path} ({first_line(exc, 200)})") from None
    assert program is not None, "torch.onnx.export(dynamo=True) returns the ONNXProgram"
    return program.model_proto


def prepare(model, simplify: bool = True):
    """Check the graph, infer shapes and (unless told not to) simplify it with onnxsim."""
    import onnx

    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - ValidationError, and UnicodeDecodeError on a damaged string
        raise InputError(f"the ONNX model is invalid: {first_line(exc, 200)}") from None
    if simplify:
        import onnxsim

        try:
            with _quiet():
                simplified, ok = onnxsim.simplify(model, check_n=0)
        except Exception:  # noqa: BLE001 - simplifying is an optimisation; lower the model as it is
            ok = False
        if ok:
            model = simplified
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - InferenceError, or a shape the ops contradict
        raise InputError(f"ONNX shape inference rejects the model: {first_line(exc, 200)}") from None


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and warnings that would drown edge3d's own output."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
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
