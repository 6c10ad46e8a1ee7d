"""Give a loaded TorchScript graph the tensor types its exporter needs, from one run.

A ``torch.jit.load``ed module carries no ranks or dtypes on its intermediate values (a traced
module's types are not saved), and torch's TorchScript exporter needs them on ops whose ONNX form
depends on the rank or dtype: ``aten::dim``, ``flatten``, ``F.normalize`` (``Cannot determine scalar
type``), ``self_rank must be non-None``. So while the exporter runs, its inlined graph is executed
once on the export's own example inputs and every top-level tensor value gets the dtype and rank it
had. Sizes stay open, so nothing about the example's shape is baked in (``--dynamic-batch`` keeps
working). Values inside control-flow blocks stay untyped: the exporter copes as before.

The exporter offers no hook between inlining and conversion, so three of its ``torch._C`` calls are
wrapped for the duration of one export (``typed_from_one_run``): the parameter listing (the frozen
module the graph reads attributes from), the input-shape assignment (the inputs) and the
fork/wait inlining (right after ``_jit_pass_inline``: the graph to type).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_SKIPPED = ("prim::GetAttr", "prim::CreateObject")  # module plumbing, not computed values


def _tensor_values(graph) -> list:
    import torch

    return [value for node in graph.nodes() if node.kind() not in _SKIPPED
            for value in node.outputs() if isinstance(value.type(), torch._C.TensorType)]


def type_graph(graph, inputs: tuple, module) -> int:
    """Set dtype and rank on ``graph``'s top-level tensor values by running a copy of it once on
    ``inputs`` (``module``: the object the graph's ``prim::CreateObject`` stands for). Returns how
    many values were typed; the graph itself is only retyped."""
    import torch

    C = torch._C
    copy = graph.copy()
    if len(list(copy.inputs())) != len(inputs):
        return 0
    extra = []
    for node in list(copy.nodes()):
        if node.kind() == "prim::CreateObject" and module is not None:
            obj = copy.addInput()
            obj.setType(node.output().type())
            node.output().replaceAllUsesWith(obj)
            extra.append(module)
    values, copied = _tensor_values(graph), _tensor_values(copy)
    if not values or len(values) != len(copied):
        return 0
    while list(copy.outputs()):
        copy.eraseOutput(0)
    pack = copy.create("prim::TupleConstruct", copied, 1)
    copy.appendNode(pack)
    pack.output().setType(C.TupleType([value.type() for value in copied]))
    copy.registerOutput(pack.output())
    C._jit_pass_dce(copy)
    run = C._create_function_from_graph("edge3d_typing", copy)
    with torch.no_grad():
        results = run(*inputs, *extra)
    for value, result in zip(values, results, strict=True):
        if isinstance(result, torch.Tensor):
            value.setType(C.TensorType.create_from_tensor(result).with_sizes([None] * result.dim()))
    return len(values)


@contextlib.contextmanager
def typed_from_one_run() -> Iterator[None]:
    """While active, the TorchScript exporter's graph of a ScriptModule is typed by ``type_graph``
    before conversion. A run that fails leaves the graph as it was (the export then fails or not
    exactly as it would have)."""
    import torch

    C = torch._C
    listing, assign, inline_fork_wait = (C._jit_onnx_list_model_parameters, C._propagate_and_assign_input_shapes,
                                         C._jit_pass_inline_fork_wait)
    seen: dict = {}

    def listed(module):
        result = listing(module)
        seen["module"] = result[0]
        return result

    def assigned(graph, inputs, *rest):
        graph = assign(graph, inputs, *rest)
        seen["inputs"] = tuple(inputs)
        return graph

    def inlined(graph):
        inline_fork_wait(graph)
        inputs = seen.pop("inputs", None)
        if inputs is not None:
            with contextlib.suppress(Exception):  # untyped is where the exporter starts anyway
                type_graph(graph, inputs, seen.get("module"))

    C._jit_onnx_list_model_parameters, C._propagate_and_assign_input_shapes, C._jit_pass_inline_fork_wait = (
        listed, assigned, inlined)
    try:
        yield
    finally:
        C._jit_onnx_list_model_parameters, C._propagate_and_assign_input_shapes, C._jit_pass_inline_fork_wait = (
            listing, assign, inline_fork_wait)
