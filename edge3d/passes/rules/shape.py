"""Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Identity, Dropout and Shape.

A reshape keeps the row-major element order, so it is a Reshape of the value's canonical
tensor. A transpose merges the runs of axes it keeps together (a channel shuffle
``(B, g, C/g, T, H, W)`` → perm ``(0, 2, 1, 3, 4, 5)`` becomes a rank-4 transpose of
``(B, g, C/g, T·H·W)``) and fails only if more than four runs remain.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx_ir as ir

from ..context import Dims, LowerContext, Unsupported, default_grouping, prod
from ..registry import register


def _source(ctx: LowerContext, value: ir.Value, shape: Dims) -> ir.Value:
    """``value``'s elements viewed as ``shape`` (rank ≤ 4), whether it is high-rank or not."""
    if ctx.is_high(value):
        return ctx.canonical(value, shape)
    dims = ctx.dims(value)
    return value if dims is not None and tuple(dims) == tuple(shape) else ctx.reshape(value, shape)


@register("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def lower_reshape(ctx: LowerContext, node: ir.Node) -> str:
    x, out = node.inputs[0], node.outputs[0]
    assert x is not None
    out_dims = ctx.dims(out)
    if out_dims is None or sum(d is None for d in out_dims) > 1:
        raise Unsupported("the output shape is not static (pass a static input shape)")
    if ctx.is_high(out):
        shape = default_grouping(out_dims)
    else:
        shape = out_dims
    in_dims = ctx.dims(x)
    if ctx.is_high(x) and in_dims is not None:
        before, after = prod(in_dims), prod(shape)
        if before is not None and after is not None and before != after:
            raise Unsupported(f"reshape of {in_dims} into {out_dims} changes the element count")
    ctx.emit(out, _source(ctx, x, shape), shape)
    return f"{node.op_type} of the canonical (row-major) tensor"


@register("Identity", "Dropout")
def lower_identity(ctx: LowerContext, node: ir.Node) -> str:
    if len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].uses():
        raise Unsupported("Dropout's mask output is used")
    x = node.inputs[0]
    assert x is not None
    ctx.alias(node.outputs[0], x)
    return f"{node.op_type} removed"


@register("Transpose")
def lower_transpose(ctx: LowerContext, node: ir.Node) -> str:
    x, out = node.inputs[0], node.outputs[0]
    assert x is not None
    dims = ctx.dims(x)
    if dims is None:
        raise Unsupported(f"the shape of {x.name!r} is unknown after shape inference")
    rank = len(dims)
    perm = list(node.attributes.get_ints("perm") or reversed(range(rank)))
    # Size-1 axes can go anywhere: drop them, then merge runs of consecutive axes.
    keep = [a for a in range(rank) if dims[a] != 1]
    kept_perm = [a for a in perm if a in keep]
    runs: list[list[int]] = []
    for a in kept_perm:
        if runs and keep.index(a) == keep.index(runs[-1][-1]) + 1:
            runs[-1].append(a)
        else:
            runs.append([a])
    by_input_order = sorted(runs)
    grouped = tuple(prod([dims[a] for a in run]) for run in by_input_order) or (1,)
    order = [by_input_order.index(run) for run in runs]
    if len(runs) <= 4:
        source = _source(ctx, x, grouped)
        moved = source if order == sorted(order) else ctx.transpose(source, order)
        ctx.emit(out, moved, tuple(grouped[i] for i in order) or (1,))
        return f"Transpose as a rank-{len(grouped)} transpose of merged axes"
    steps = transpose_chain(order)
    if steps is None:
        raise Unsupported(f"perm {perm} of shape {list(dims)} moves {len(runs)} separate axis groups; "
                          f"no chain of at most {MAX_CHAIN} rank-4 transposes does it")
    current, moved = list(range(len(order))), None
    for blocks, block_order in steps:
        shape = tuple(prod([grouped[g] for g in block]) for block in blocks)
        source = _source(ctx, x, shape) if moved is None else ctx.reshape(moved, shape)
        moved = ctx.transpose(source, block_order)
        current = [g for i in block_order for g in blocks[i]]
    assert current == order and moved is not None
    ctx.emit(out, moved, tuple(prod([grouped[g] for g in blocks[i]]) for i in block_order))
    return f"Transpose of {len(runs)} axis groups as a chain of {len(steps)} rank-≤4 transposes"


MAX_CHAIN = 3  # transposes in a chain: each moves every element once


def _block_moves(seq: tuple[int, ...]):
    """Every way to cut ``seq`` into 2 to 4 runs and put the runs in another order."""
    n = len(seq)
    for k in range(2, 5):
        for cuts in itertools.combinations(range(1, n), k - 1):
            bounds = (0, *cuts, n)
            blocks = [seq[bounds[i]:bounds[i + 1]] for i in range(k)]
            for block_order in itertools.permutations(range(k)):
                if list(block_order) != sorted(block_order):
                    yield blocks, block_order, tuple(g for i in block_order for g in blocks[i])


def _one_move(seq: tuple[int, ...], goal: tuple[int, ...]) -> tuple[list[tuple[int, ...]], tuple[int, ...]] | None:
    """The block move that turns ``seq`` into ``goal``, when at most 4 runs of ``seq`` do it."""
    where = {g: i for i, g in enumerate(seq)}
    runs: list[list[int]] = []  # runs of goal, each contiguous and in order in seq
    for g in goal:
        if runs and where[g] == where[runs[-1][-1]] + 1:
            runs[-1].append(g)
        else:
            runs.append([g])
    if len(runs) > 4:
        return None
    by_seq = sorted(runs, key=lambda run: where[run[0]])
    return [tuple(run) for run in by_seq], tuple(by_seq.index(run) for run in runs)


def transpose_chain(order: list[int]) -> list[tuple[list[tuple[int, ...]], tuple[int, ...]]] | None:
    """The shortest chain of block moves (each a transpose of at most 4 merged runs) that turns
    ``range(len(order))`` into ``order``: breadth first, at most ``MAX_CHAIN`` steps."""
    start, goal = tuple(range(len(order))), tuple(order)
    frontier: dict[tuple[int, ...], list] = {start: []}
    seen = {start}
    for _ in range(MAX_CHAIN):
        for seq, path in frontier.items():
            last = _one_move(seq, goal)
            if last is not None:
                return path + [last]
        next_frontier: dict[tuple[int, ...], list] = {}
        for seq, path in frontier.items():
            for blocks, block_order, result in _block_moves(seq):
                if result not in seen:
                    seen.add(result)
                    next_frontier[result] = path + [(blocks, block_order)]
        frontier = next_frontier
    return None


@register("Shape")
def lower_shape(ctx: LowerContext, node: ir.Node) -> str:
    dims = ctx.dims(node.inputs[0])
    if dims is None or any(d is None for d in dims):
        raise Unsupported("Shape of a value with symbolic dims")
    start, end = node.attributes.get_int("start", 0), node.attributes.get_int("end")
    ctx.replace(node.outputs[0], ctx.const(np.asarray(dims[start:end], dtype=np.int64)))
    return "Shape folded to a constant"
