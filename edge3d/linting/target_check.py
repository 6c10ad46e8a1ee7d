"""What a target profile forbids beyond rank: ops, per-op limits, dynamic dims, opset."""

from __future__ import annotations

from dataclasses import dataclass

from ..onnx_tensors import default_opset, shape_of
from ..targets import Target

RULE_OP = "E3D002"
RULE_LIMIT = "E3D003"
RULE_DYNAMIC = "E3D004"
RULE_OPSET = "E3D005"
RULE_BATCH = "E3D007"


@dataclass
class Issue:
    rule: str
    node: str
    op: str
    message: str


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _window(node, initializers) -> dict:
    kernel = _attr(node, "kernel_shape")
    if kernel is None and node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
        weight = initializers.get(node.input[1])
        kernel = list(weight.dims[2:]) if weight is not None else None
    return {"kernel": kernel or [], "stride": _attr(node, "strides", []) or [],
            "dilation": _attr(node, "dilations", []) or [], "pad": _attr(node, "pads", []) or []}


def check_target(model, target: Target, ranks: dict[str, int], io_shapes: dict | None = None) -> list[Issue]:
    """``model`` is shape-inferred; ``ranks`` maps tensor names to their rank; ``io_shapes`` maps
    the graph's inputs and outputs to their shapes (dims: int, a name or None), by default those
    ``model`` declares."""
    issues: list[Issue] = []
    opset = default_opset(model)
    if opset > target.opset:
        issues.append(Issue(RULE_OPSET, "", "", f"model opset {opset} is newer than {target.name}'s {target.opset}"))
    if target.static_shapes:
        if io_shapes is None:
            io_shapes = {v.name: shape_of(v)[0] for v in list(model.graph.input) + list(model.graph.output)}
        for value in list(model.graph.input) + list(model.graph.output):
            if any(not isinstance(d, int) for d in io_shapes.get(value.name) or ()):
                issues.append(Issue(RULE_DYNAMIC, value.name, "graph io",
                                    f"'{value.name}' has a symbolic dim; {target.name} needs static shapes"))
    if target.max_batch is not None:
        issues.extend(_batch_issues(model, target, io_shapes))
    initializers = {i.name: i for i in model.graph.initializer}
    constants = set(initializers) | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    for index, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{index}"
        if target.allowed_ops is not None and node.op_type not in target.allowed_ops:
            issues.append(Issue(RULE_OP, name, node.op_type, f"{node.op_type} is not supported by {target.name}"))
            continue
        limits = target.op_limits.get(node.op_type)
        if limits:
            issues.extend(_limit_issues(node, name, limits, initializers, constants, ranks, target.name))
    return issues


def _batch_issues(model, target: Target, io_shapes: dict | None) -> list[Issue]:
    """A graph input whose first dim exceeds the target's batch: on a lowered model that is the
    frames-in-batch layout (B·T, C, H, W), which such a device cannot take."""
    if io_shapes is None:
        io_shapes = {v.name: shape_of(v)[0] for v in model.graph.input}
    limit = target.max_batch or 1
    found = []
    for value in model.graph.input:
        shape = io_shapes.get(value.name) or ()
        if shape and isinstance(shape[0], int) and shape[0] > limit:
            found.append(Issue(RULE_BATCH, value.name, "graph io",
                               f"'{value.name}' has batch {shape[0]} (a lowered clip's frames are its batch, B·T) "
                               f"and {target.name} runs batch {limit}: a layout with time folded into "
                               "channels, (B, C·T, H, W), would fit it (each conv then carries weights per frame)"))
    return found


def _limit_issues(node, name, limits, initializers, constants, ranks, target_name) -> list[Issue]:
    found = []

    def fail(text):
        found.append(Issue(RULE_LIMIT, name, node.op_type, f"{node.op_type} {text} ({target_name})"))

    window = _window(node, initializers)
    for key, values in window.items():
        bound = limits.get(f"max_{key}")
        if bound is not None and any(v > bound for v in values):
            fail(f"{key} {list(values)} exceeds {bound}")
    if "axes" in limits and node.op_type == "Concat":
        rank = ranks.get(node.output[0])
        axis = _attr(node, "axis", 0)
        if rank is not None and axis % rank not in limits["axes"]:
            fail(f"on axis {axis} (only {list(limits['axes'])})")
    if "modes" in limits:
        mode = _attr(node, "mode", "constant" if node.op_type == "Pad" else "nearest")
        if mode not in limits["modes"]:
            fail(f"mode {mode!r} (only {list(limits['modes'])})")
    if limits.get("constant_indices") and len(node.input) > 1 and node.input[1] not in constants:
        fail("with runtime indices (only constant indices)")
    return found
