"""The general lowering: merge runs of adjacent axes an op treats alike, then run it on rank ≤ 4.

Most ops act on a known set of axes and treat every other axis uniformly: a LayerNorm over the
last axis, a softmax over one axis, a reduction, a MatMul's batch axes, a Tile, an Expand, a
Gather along one axis, an elementwise op whose operands broadcast the same way over a run of
axes. Merging each run of adjacent axes that the op treats alike is a reshape of the row-major
(canonical) form of every operand, so the op runs unchanged on at most four merged axes and its
result is again a canonical form of the output. One mechanism, whatever the rank (5 to 8).

Each op says, per output axis, how it treats that axis (its *signature*): adjacent axes with
equal signatures merge; ``None`` keeps an axis apart; an axis of size 1 everywhere merges with
anything. These rules are fallbacks (``register(..., fallback=True)``): an op's own rule, which
keeps values in frames, is tried first.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from ..context import Dims, LowerContext, Unsupported, default_grouping, prod
from ..registry import register
from .elementwise import BROADCASTING
from .reduce import COMPOSABLE, REDUCES, reduce_op

ANY = object()  # the signature of an axis of size 1 everywhere: merges with any neighbour
Groups = list[list[int]]


def group_axes(signatures: Sequence[Hashable | None]) -> Groups:
    """Runs of adjacent axes with equal signatures (``None``: an axis of its own; ``ANY``: joins
    the run before it, or the one after when it comes first)."""
    groups: Groups = []
    last: Any = None  # the signature of the current run
    for axis, sig in enumerate(signatures):
        if groups and (sig is ANY or (sig is not None and sig == last)):
            groups[-1].append(axis)
        elif groups and last is ANY and sig is not None:  # a leading ANY run takes the first signature
            groups[-1].append(axis)
            last = sig
        else:
            groups.append([axis])
            last = sig
        if sig is None:
            last = None
    return groups


def merged(dims: Dims, groups: Groups) -> Dims:
    """The dims of each group: the product of its axes (None when one is symbolic)."""
    return tuple(prod([dims[a] for a in group]) for group in groups)


def padded(dims: Dims, rank: int) -> Dims:
    """``dims`` broadcast to ``rank`` axes (size-1 axes in front)."""
    return (1,) * (rank - len(dims)) + tuple(dims)


def view(ctx: LowerContext, value: ir.Value, shape: Dims) -> ir.Value:
    """``value``'s elements in row-major order, viewed as ``shape`` (rank ≤ 4)."""
    if ctx.is_high(value):
        return ctx.canonical(value, shape)
    dims = ctx.dims(value)
    return value if dims is not None and tuple(dims) == tuple(shape) else ctx.reshape(value, shape)


def _fits(groups: Groups, what: str) -> None:
    if len(groups) > 4:
        raise Unsupported(f"{what} needs {len(groups)} separate axis groups; at most 4 fit in rank 4")


def _dims(ctx: LowerContext, value: ir.Value | None) -> Dims:
    dims = ctx.dims(value)
    if dims is None:
        raise Unsupported(f"the shape of {getattr(value, 'name', None)!r} is unknown after shape inference")
    return dims


def _symbolic_ok(dims: Dims) -> None:
    if any(d is None for d in dims[1:]):
        raise Unsupported(f"symbolic dims {dims}; only the batch dim may be symbolic")


def _data(ctx: LowerContext, node: ir.Node) -> tuple[ir.Value, ir.Value, Dims]:
    """The node's first input, its first output and the input's static dims."""
    x, out = node.inputs[0], node.outputs[0]
    assert x is not None
    dims = _dims(ctx, x)
    _symbolic_ok(dims)
    return x, out, dims


def _axis_groups(rank: int, axes: Sequence[int], dims: Dims) -> Groups:
    """Groups that keep each axis of ``axes`` apart and merge the runs between them."""
    chosen = {a % rank for a in axes}
    return group_axes([None if a in chosen else (ANY if dims[a] == 1 else "kept") for a in range(rank)])


def _around(axis: int, rank: int) -> tuple[Groups, int]:
    """(the axes before ``axis``, ``axis``, the axes after) without empty groups, and where
    ``axis`` is among them."""
    groups = [g for g in (list(range(axis)), [axis], list(range(axis + 1, rank))) if g]
    return groups, 1 if axis else 0


def _const(ctx: LowerContext, value: ir.Value | None, what: str) -> np.ndarray:
    array = ctx.const_array(value)
    if array is None:
        raise Unsupported(f"the {what} are not constant")
    return array


def _check_used_outputs(node: ir.Node, count: int = 1) -> None:
    extra = [o for o in node.outputs[count:] if o is not None and (o.uses() or o.is_graph_output())]
    if extra:
        raise Unsupported(f"{node.op_type}'s extra output {extra[0].name!r} is used")


# -- elementwise -------------------------------------------------------------------------------


@register(*BROADCASTING, fallback=True)
def merged_elementwise(ctx: LowerContext, node: ir.Node) -> str:
    """Operands that broadcast alike over a run of axes: that run is one axis for all of them."""
    out = node.outputs[0]
    out_dims = _dims(ctx, out)
    _symbolic_ok(out_dims)
    rank = len(out_dims)
    operands = [None if v is None else padded(_dims(ctx, v), rank) for v in node.inputs]
    signatures: list[Hashable | None] = []
    for a in range(rank):
        if out_dims[a] == 1:
            signatures.append(ANY)
        else:
            signatures.append(tuple(d is not None and d[a] == 1 for d in operands))
    groups = group_axes(signatures)
    _fits(groups, f"{node.op_type} broadcasting {[list(d) for d in operands if d is not None]}")
    inputs: list[ir.Value | None] = []
    for value, dims in zip(node.inputs, operands):
        if value is None or dims is None:
            inputs.append(None)
        elif all(d == 1 for d in dims) and not ctx.is_high(value):
            inputs.append(value)  # a scalar broadcasts as it is
        else:
            inputs.append(view(ctx, value, merged(dims, groups)))
    shape = merged(out_dims, groups)
    ctx.emit(out, ctx.op(node.op_type, inputs, node.attributes), shape)
    return f"{node.op_type} on merged axes {_describe(groups)}"


@register("Expand", fallback=True)
def merged_expand(ctx: LowerContext, node: ir.Node) -> str:
    """An Expand is a broadcast of one operand: runs expanded alike merge."""
    x, out = node.inputs[0], node.outputs[0]
    assert x is not None
    out_dims = _dims(ctx, out)
    _symbolic_ok(out_dims)
    rank = len(out_dims)
    dims = padded(_dims(ctx, x), rank)
    groups = group_axes([ANY if out_dims[a] == 1 else dims[a] == 1 for a in range(rank)])
    _fits(groups, f"Expand of {list(dims)} to {list(out_dims)}")
    shape = merged(out_dims, groups)
    if None in shape:  # Expand's shape cannot hold -1
        raise Unsupported("Expand over a symbolic batch dim")
    ctx.emit(out, ctx.op("Expand", [view(ctx, x, merged(dims, groups)), ctx.ints(shape)]), shape)
    return f"Expand on merged axes {_describe(groups)}"


@register("Tile", fallback=True)
def merged_tile(ctx: LowerContext, node: ir.Node) -> str:
    """Tiling an axis repeats the whole block of it and the untiled axes after it: each tiled
    axis starts a group that takes in the untiled axes that follow."""
    x, out, dims = _data(ctx, node)
    repeats = [int(r) for r in _const(ctx, node.inputs[1], "Tile repeats")]
    groups: Groups = []
    for a, r in enumerate(repeats):
        if r != 1 or not groups:
            groups.append([a])
        else:
            groups[-1].append(a)
    _fits(groups, f"Tile {repeats} of {list(dims)}")
    grouped_repeats = [repeats[g[0]] for g in groups]
    y = ctx.op("Tile", [view(ctx, x, merged(dims, groups)), ctx.ints(grouped_repeats)])
    ctx.emit(out, y, merged(_dims(ctx, out), groups))
    return f"Tile on merged axes {_describe(groups)}"


# -- ops over some axes ----------------------------------------------------------------------------


@register(*REDUCES, fallback=True)
def merged_reduce(ctx: LowerContext, node: ir.Node) -> str:
    """A reduction over adjacent reduced axes is one reduction over their merged axis."""
    x, out = node.inputs[0], node.outputs[0]
    assert x is not None
    dims = _dims(ctx, x)
    rank = len(dims)
    axes = _reduce_axes(ctx, node, rank)
    if not axes:
        ctx.emit(out, view(ctx, x, default_grouping(dims) if len(dims) > 4 else dims),
                 default_grouping(dims) if len(dims) > 4 else dims)
        return "empty reduction → identity"
    if 0 in axes and dims[0] is None:
        raise Unsupported("a reduction over a symbolic batch axis")
    _symbolic_ok(dims)
    groups = group_axes([ANY if dims[a] == 1 else (a in axes) for a in range(rank)])
    if len(groups) > 4 and node.op_type in COMPOSABLE:
        return _reduce_in_steps(ctx, node, x, dims, groups, axes)
    _fits(groups, f"{node.op_type} over axes {sorted(axes)} of {list(dims)}")
    reduced = [i for i, g in enumerate(groups) if any(a in axes for a in g)]
    y = reduce_op(ctx, node.op_type, view(ctx, x, merged(dims, groups)), reduced)
    kept = tuple(1 if i in reduced else d for i, d in enumerate(merged(dims, groups)))
    ctx.emit(out, y, kept)
    return f"{node.op_type} on merged axes {_describe(groups)}"


def _reduce_in_steps(ctx: LowerContext, node: ir.Node, x: ir.Value, dims: Dims, groups: Groups,
                     axes: set[int]) -> str:
    """A reduction that composes (sum, mean, max, min, prod over a box), one run of reduced axes
    at a time: each step is (before, run, after)."""
    runs = [g for g in groups if any(a in axes for a in g)]
    current, tensor = tuple(dims), None
    shape: Dims = (prod(dims),)
    for run in runs:
        shape = (prod(current[:run[0]]), prod([current[a] for a in run]), prod(current[run[-1] + 1:]))
        source = view(ctx, x, shape) if tensor is None else ctx.reshape(tensor, shape)
        tensor = reduce_op(ctx, node.op_type, source, [1])
        shape = (shape[0], 1, shape[2])
        current = tuple(1 if a in run else d for a, d in enumerate(current))
    assert tensor is not None
    ctx.emit(node.outputs[0], tensor, shape)
    return f"{node.op_type} in {len(runs)} steps of merged axes"


def _reduce_axes(ctx: LowerContext, node: ir.Node, rank: int) -> set[int]:
    axes: Sequence[int] | None = node.attributes.get_ints("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = _const(ctx, node.inputs[1], "reduction axes").tolist()
    if axes is None or len(axes) == 0:
        return set() if node.attributes.get_int("noop_with_empty_axes", 0) else set(range(rank))
    return {int(a) % rank for a in axes}


@register("ArgMax", "ArgMin", "CumSum", "Softmax", "LogSoftmax", "Hardmax", "LpNormalization", fallback=True)
def merged_one_axis(ctx: LowerContext, node: ir.Node) -> str:
    """Ops along one axis: the axes before it and those after it each merge into one."""
    x, out, dims = _data(ctx, node)
    rank = len(dims)
    op = node.op_type
    if op == "CumSum":
        axis = int(_const(ctx, node.inputs[1], "CumSum axis").reshape(-1)[0]) % rank
    else:
        default = 1 if op == "LpNormalization" else (-1 if ctx.opset >= 13 else 1)
        axis = node.attributes.get_int("axis", default) % rank
    if op in ("Softmax", "LogSoftmax", "Hardmax") and ctx.opset < 13:
        groups = [list(range(axis)), list(range(axis, rank))] if axis else [list(range(rank))]
        new_axis = len(groups) - 1  # before opset 13 the op normalises over axis..end, flattened
    else:
        groups = _axis_groups(rank, [axis], dims)
        new_axis = next(i for i, g in enumerate(groups) if axis in g)
    _fits(groups, f"{op} over axis {axis} of {list(dims)}")
    shape = merged(dims, groups)
    source = view(ctx, x, shape)
    if op == "CumSum":
        y = ctx.op(op, [source, ctx.ints([new_axis])], node.attributes)
    else:
        attrs: dict[str, Any] = {**node.attributes, "axis": new_axis}
        if op in ("ArgMax", "ArgMin"):  # kept on the merged form; the output's own form may drop it
            attrs["keepdims"] = 1
            shape = tuple(1 if i == new_axis else d for i, d in enumerate(shape))
        y = ctx.op(op, [source], attrs)
    ctx.emit(out, y, shape)
    return f"{op} on merged axes {_describe(groups)}"


@register("LayerNormalization", since=17, fallback=True)
def merged_layer_norm(ctx: LowerContext, node: ir.Node) -> str:
    """Normalised over ``axis``..end: the axes before merge into rows, those after into one."""
    _check_used_outputs(node)
    x, out, dims = _data(ctx, node)
    rank = len(dims)
    axis = node.attributes.get_int("axis", -1) % rank
    rows, width = prod(dims[:axis]), prod(dims[axis:])
    params: list[ir.Value | None] = []
    for value in node.inputs[1:]:
        if value is None:
            params.append(None)
            continue
        pdims = _dims(ctx, value)
        if prod(pdims) != width:
            raise Unsupported(f"LayerNormalization's scale/bias {list(pdims)} broadcast over the normalised axes")
        params.append(view(ctx, value, (width,)))
    shape = (rows, width)
    y = ctx.op("LayerNormalization", [view(ctx, x, shape), *params], {**node.attributes, "axis": 1})
    ctx.emit(out, y, shape)
    return "LayerNormalization on (rows, normalised) merged axes"


@register("BatchNormalization", "InstanceNormalization", "GroupNormalization", fallback=True)
def merged_channel_norm(ctx: LowerContext, node: ir.Node) -> str:
    """Norms over (N, C, spatial…): the spatial axes merge into one."""
    _check_used_outputs(node)
    x, out, dims = _data(ctx, node)
    shape = (dims[0], dims[1], prod(dims[2:]))
    y = ctx.op(node.op_type, [view(ctx, x, shape), *node.inputs[1:]], node.attributes)
    ctx.emit(out, y, shape)
    return f"{node.op_type} on (N, C, spatial) merged axes"


# -- indexing ------------------------------------------------------------------------------------


@register("Gather", fallback=True)
def merged_gather(ctx: LowerContext, node: ir.Node) -> str:
    """Gather along one axis with indices of any rank: (before, axis, after) with the indices
    flattened; the output (before, indices…, after) is that result in row-major order."""
    data, indices, out = node.inputs[0], node.inputs[1], node.outputs[0]
    assert data is not None and indices is not None
    dims = _dims(ctx, data)
    _symbolic_ok(dims)
    rank = len(dims)
    axis = node.attributes.get_int("axis", 0) % rank
    groups, new_axis = _around(axis, rank)
    count = prod(_dims(ctx, indices))
    flat = view(ctx, indices, (count,))
    y = ctx.op("Gather", [view(ctx, data, merged(dims, groups)), flat], {"axis": new_axis})
    shape = tuple(count if i == new_axis else d for i, d in enumerate(merged(dims, groups)))
    ctx.emit(out, y, shape)
    return f"Gather on merged axes {_describe(groups)}, indices flattened"


@register("GatherElements", "ScatterElements", fallback=True)
def merged_gather_elements(ctx: LowerContext, node: ir.Node) -> str:
    """Element-wise indexing along one axis, where data and indices agree on every other axis."""
    data, out = node.inputs[0], node.outputs[0]
    assert data is not None and node.inputs[1] is not None
    dims = _dims(ctx, data)
    _symbolic_ok(dims)
    rank = len(dims)
    axis = node.attributes.get_int("axis", 0) % rank
    others = [v for v in node.inputs[1:] if v is not None]
    for value in others:
        vdims = _dims(ctx, value)
        if any(vdims[a] != dims[a] for a in range(rank) if a != axis):
            raise Unsupported(f"{node.op_type}: indices {list(vdims)} differ from data {list(dims)} "
                              "off the indexed axis")
    groups, new_axis = _around(axis, rank)
    inputs = [view(ctx, v, merged(_dims(ctx, v), groups)) for v in [data, *others]]
    y = ctx.op(node.op_type, inputs, {**node.attributes, "axis": new_axis})
    out_dims = _dims(ctx, out)
    ctx.emit(out, y, merged(out_dims, groups))
    return f"{node.op_type} on merged axes {_describe(groups)}"


@register("GatherND", "ScatterND", fallback=True)
def merged_nd_indexing(ctx: LowerContext, node: ir.Node) -> str:
    """Indexing by tuples of ``k`` coordinates: the data's first ``k`` axes merge into one, each
    tuple becomes one row number of it (its coordinates times the row-major strides, in numpy
    for constant indices), so the op runs on (rows, rest) with indices (tuples, 1)."""
    data, indices, out = node.inputs[0], node.inputs[1], node.outputs[0]
    assert data is not None and indices is not None
    dims = _dims(ctx, data)
    _symbolic_ok(dims)
    if node.attributes.get_int("batch_dims", 0):
        raise Unsupported("GatherND with batch_dims is not lowered")
    index_dims = _dims(ctx, indices)
    if any(d is None for d in (*dims, *index_dims)):
        raise Unsupported(f"{node.op_type} needs static shapes, not {list(dims)} and {list(index_dims)}")
    k = index_dims[-1]
    assert k is not None
    tuples, rows, rest = (int(math.prod(d)) for d in (index_dims[:-1], dims[:k], dims[k:]))  # all static
    sizes = np.asarray(dims[:k], dtype=np.int64)
    strides = np.asarray([prod(dims[j + 1:k]) for j in range(k)], dtype=np.int64)
    array = ctx.const_array(indices)
    if array is not None:
        numbers = ctx.const(((array.reshape(tuples, k).astype(np.int64) % sizes) @ strides).reshape(tuples, 1))
    else:  # Mod by each axis size maps a negative coordinate to its positive one, as the op does
        wrapped = ctx.op("Mod", [view(ctx, indices, (tuples, k)), ctx.ints(sizes)])
        numbers = ctx.op("ReduceSum", [ctx.op("Mul", [wrapped, ctx.ints(strides)]), ctx.ints([1])],
                         {"keepdims": 1})
    table = view(ctx, data, (rows, rest))
    if node.op_type == "GatherND":
        y = ctx.op("GatherND", [table, numbers])
        ctx.emit(out, y, (tuples, rest))
    else:
        updates = node.inputs[2]
        assert updates is not None
        y = ctx.op("ScatterND", [table, numbers, view(ctx, updates, (tuples, rest))], dict(node.attributes))
        ctx.emit(out, y, (rows, rest))
    return f"{node.op_type} on ({rows}, {rest}): each index tuple as one row number"


@register("Concat", fallback=True)
def merged_concat(ctx: LowerContext, node: ir.Node) -> str:
    out = node.outputs[0]
    dims = _dims(ctx, out)
    _symbolic_ok(dims)
    rank = len(dims)
    axis = node.attributes["axis"].as_int() % rank
    groups, new_axis = _around(axis, rank)
    parts = [view(ctx, v, merged(_dims(ctx, v), groups)) for v in node.inputs if v is not None]
    ctx.emit(out, ctx.op("Concat", parts, {"axis": new_axis}), merged(dims, groups))
    return f"Concat on merged axes {_describe(groups)}"


@register("Split", fallback=True)
def merged_split(ctx: LowerContext, node: ir.Node) -> str:
    x = node.inputs[0]
    assert x is not None
    dims = _dims(ctx, x)
    _symbolic_ok(dims)
    rank = len(dims)
    axis = node.attributes.get_int("axis", 0) % rank
    groups, new_axis = _around(axis, rank)
    sizes = [_dims(ctx, o)[axis] for o in node.outputs]
    parts = ctx.multi_op("Split", [view(ctx, x, merged(dims, groups)), ctx.ints(sizes)], {"axis": new_axis},
                         num_outputs=len(node.outputs))
    for out, part in zip(node.outputs, parts):
        ctx.emit(out, part, merged(_dims(ctx, out), groups))
    return f"Split on merged axes {_describe(groups)}"


@register("Slice", fallback=True)
def merged_slice(ctx: LowerContext, node: ir.Node) -> str:
    """Each sliced axis stays apart; the runs between merge."""
    x, out, dims = _data(ctx, node)
    rank = len(dims)
    starts = _const(ctx, node.inputs[1], "slice starts")
    ends = _const(ctx, node.inputs[2], "slice ends")
    axes_in = node.inputs[3] if len(node.inputs) > 3 else None
    steps_in = node.inputs[4] if len(node.inputs) > 4 else None
    axes = np.arange(len(starts)) if axes_in is None else _const(ctx, axes_in, "slice axes")
    steps = np.ones(len(starts), np.int64) if steps_in is None else _const(ctx, steps_in, "slice steps")
    parts = {int(a) % rank: (int(s), int(e), int(st)) for a, s, e, st in zip(axes, starts, ends, steps)}
    groups = _axis_groups(rank, list(parts), dims)
    rounds = [sorted(parts)] if len(groups) <= 4 else [[a] for a in sorted(parts)]  # else one axis at a time
    current, tensor = tuple(dims), None
    for sliced in rounds:
        groups = _axis_groups(rank, sliced, current)
        where = {a: i for i, g in enumerate(groups) for a in g if a in sliced}
        source = view(ctx, x, merged(current, groups)) if tensor is None else ctx.reshape(
            tensor, merged(current, groups))
        tensor = ctx.op("Slice", [source, ctx.ints([parts[a][0] for a in sliced]),
                                  ctx.ints([parts[a][1] for a in sliced]), ctx.ints([where[a] for a in sliced]),
                                  ctx.ints([parts[a][2] for a in sliced])])
        current = tuple(_sliced(d, *parts[a]) if a in sliced else d for a, d in enumerate(current))
    assert tensor is not None
    ctx.emit(out, tensor, merged(current, groups))  # the last step's groups, now sliced
    return f"Slice on merged axes in {len(rounds)} step(s)"


def _sliced(size: int, start: int, end: int, step: int) -> int:
    return len(range(*slice(start, end, step).indices(size)))


@register("Pad", fallback=True)
def merged_pad(ctx: LowerContext, node: ir.Node) -> str:
    """Each padded axis stays apart; the runs between merge."""
    x, out, dims = _data(ctx, node)
    rank = len(dims)
    pads = [int(p) for p in _const(ctx, node.inputs[1], "pads")]
    if len(node.inputs) > 3 and node.inputs[3] is not None:
        given = [int(a) % rank for a in _const(ctx, node.inputs[3], "pad axes")]
        full = [0] * (2 * rank)
        for i, a in enumerate(given):
            full[a], full[a + rank] = pads[i], pads[i + len(given)]
        pads = full
    padded_axes = [a for a in range(rank) if pads[a] or pads[a + rank]]
    steps = [padded_axes] if len(_axis_groups(rank, padded_axes, dims)) <= 4 else [[a] for a in padded_axes]
    value = [node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2] is not None else []
    mode = node.attributes.get_string("mode", "constant")
    current, tensor = tuple(dims), None
    shape: Dims = (prod(dims),)
    for axes in steps:  # padding one axis after another is the same pad, whatever the mode
        groups = _axis_groups(rank, axes, current)
        begin = [pads[g[0]] if g[0] in axes else 0 for g in groups]
        end = [pads[g[0] + rank] if g[0] in axes else 0 for g in groups]
        shape = merged(current, groups)
        source = view(ctx, x, shape) if tensor is None else ctx.reshape(tensor, shape)
        tensor = ctx.op("Pad", [source, ctx.ints(begin + end), *value], {"mode": mode})
        current = tuple(d + pads[a] + pads[a + rank] if a in axes else d for a, d in enumerate(current))
        shape = merged(current, groups)
    if tensor is None:
        tensor = view(ctx, x, shape)
    ctx.emit(out, tensor, shape)
    return f"Pad ({mode}) on merged axes in {len(steps)} step(s)"


# -- MatMul ----------------------------------------------------------------------------------


@register("MatMul", fallback=True)
def merged_matmul(ctx: LowerContext, node: ir.Node) -> str:
    """(…, M, K) @ (…, K, N): batch axes broadcast alike merge; with a rank-2 right operand, the
    batch axes and M merge into the rows of one 2D product."""
    a, b, out = node.inputs[0], node.inputs[1], node.outputs[0]
    assert a is not None and b is not None
    adims, bdims, out_dims = _dims(ctx, a), _dims(ctx, b), _dims(ctx, out)
    _symbolic_ok(out_dims)
    if len(adims) < 2 or len(bdims) < 2:
        raise Unsupported("MatMul with a rank-1 operand of a high-rank one")
    k, n = bdims[-2], bdims[-1]
    if len(bdims) == 2 or all(d == 1 for d in bdims[:-2]):
        rows = prod(adims[:-1])
        y = ctx.op("MatMul", [view(ctx, a, (rows, adims[-1])), view(ctx, b, (k, n))])
        ctx.emit(out, y, (rows, n))
        return "MatMul with batch and rows merged into one 2D product"
    rank = len(out_dims)
    batch = rank - 2
    pa, pb = padded(adims, rank), padded(bdims, rank)
    groups = group_axes([ANY if out_dims[i] == 1 else (pa[i] == 1, pb[i] == 1) for i in range(batch)])
    if len(groups) > 2:
        raise Unsupported(f"MatMul of {list(adims)} and {list(bdims)} needs {len(groups)} batch groups; "
                          "at most 2 fit in rank 4")
    shape_a = merged(pa, groups) + tuple(pa[-2:])
    shape_b = merged(pb, groups) + tuple(pb[-2:])
    y = ctx.op("MatMul", [view(ctx, a, shape_a), view(ctx, b, shape_b)])
    ctx.emit(out, y, merged(out_dims, groups) + tuple(out_dims[-2:]))
    return f"MatMul with batch axes merged {_describe(groups)}"


# -- constants -------------------------------------------------------------------------------


@register("Constant", "ConstantOfShape")
def lower_constant(ctx: LowerContext, node: ir.Node) -> str:
    """A high-rank constant is stored in its canonical rank-≤4 form."""
    out = node.outputs[0]
    dims = _dims(ctx, out)
    _symbolic_ok(dims)
    shape = default_grouping(dims) if len(dims) > 4 else dims
    if node.op_type == "Constant":
        attr = node.attributes.get("value")
        if attr is None:
            raise Unsupported("a Constant without a tensor value")
        array = attr.as_tensor().numpy()
        ctx.emit(out, ctx.const(np.ascontiguousarray(array).reshape(shape)), shape)
        return "Constant stored in its canonical rank-4 form"
    y = ctx.op("ConstantOfShape", [ctx.ints(shape)], node.attributes)
    ctx.emit(out, y, shape)
    return "ConstantOfShape of the canonical rank-4 shape"


def _describe(groups: Groups) -> str:
    return "(" + ", ".join("·".join(str(a) for a in g) for g in groups) + ")"

