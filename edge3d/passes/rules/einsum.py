"""Einsum as transposes and one batched MatMul, each on merged axes.

An Einsum of two operands sorts its letters into batch (in both operands and the output), left
(first operand and output), right (second operand and output) and contracted (both operands, not
the output). Each operand is moved to (batch, left, contracted) or (batch, contracted, right) and
viewed as three merged axes, one MatMul makes (batch, left, right), and a last transpose puts
the output's letters in order. One operand: a transpose, then a sum over the letters the output
drops. The transposes go through ``merged_transpose``, so any rank works that its chains allow.
"""

from __future__ import annotations

import math

import onnx_ir as ir

from ..context import Dims, LowerContext, Unsupported, prod
from ..registry import register
from ..transposes import merged_transpose
from .shape import _source


def _terms(equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """The letters of each operand and of the output, with ``...`` spelled out as fresh letters."""
    equation = equation.replace(" ", "")
    inputs, arrow, output = equation.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(ranks):
        raise Unsupported(f"Einsum equation {equation!r} names {len(terms)} operands, not {len(ranks)}")
    fresh = "".join(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in equation)
    dots = max((rank - len(term.replace("...", "")) for term, rank in zip(terms, ranks, strict=True)
                if "..." in term), default=0)
    spelled = [term.replace("...", fresh[dots - (rank - len(term.replace("...", ""))):dots])
               for term, rank in zip(terms, ranks, strict=True)]
    if not arrow:  # implicit output: the letters seen once, in alphabetical order, after the dots
        counts = {c: "".join(spelled).count(c) for c in "".join(spelled)}
        output = fresh[:dots] + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in fresh))
    else:
        output = output.replace("...", fresh[:dots])
    for term in [*spelled, output]:
        if len(set(term)) != len(term):
            raise Unsupported(f"Einsum {equation!r} repeats a letter in one term (a diagonal)")
    return spelled, output


def _moved(ctx: LowerContext, value: ir.Value, letters: str, dims: Dims, order: str) -> tuple[ir.Value, Dims]:
    """``value`` (axes ``letters``) transposed to ``order``: the result and its rank-≤4 shape."""
    perm = [letters.index(c) for c in order]
    moved, shape, _ = merged_transpose(ctx, lambda grouped: _source(ctx, value, grouped), dims, perm)
    return moved, shape


def _as(ctx: LowerContext, value: ir.Value, shape: Dims, want: Dims) -> ir.Value:
    return value if tuple(shape) == tuple(want) else ctx.reshape(value, want)


@register("Einsum", fallback=True)
def merged_einsum(ctx: LowerContext, node: ir.Node) -> str:
    operands = [v for v in node.inputs if v is not None]
    all_dims = []
    for value in operands:
        dims = ctx.dims(value)
        if dims is None or any(d is None for d in dims):
            raise Unsupported("Einsum operands need static shapes")
        all_dims.append(dims)
    equation = node.attributes.get_string("equation")
    if equation is None or len(operands) > 2:
        raise Unsupported("Einsum of more than two operands")
    terms, output = _terms(equation, [len(d) for d in all_dims])
    size: dict[str, int] = {}
    for term, dims in zip(terms, all_dims, strict=True):
        for c, d in zip(term, dims, strict=True):
            if size.setdefault(c, d) != d:
                raise Unsupported(f"Einsum {equation!r} broadcasts letter {c!r} ({size[c]} against {d})")
    out = node.outputs[0]
    if len(operands) == 1:
        (term,), (dims,) = terms, all_dims
        summed = "".join(c for c in term if c not in output)
        moved, shape = _moved(ctx, operands[0], term, dims, output + summed)
        kept = prod([size[c] for c in output])
        if summed:
            flat = _as(ctx, moved, shape, (kept, prod([size[c] for c in summed])))
            moved, shape = ctx.op("ReduceSum", [flat, ctx.ints([1])], {"keepdims": 0}), (kept,)
        ctx.emit(out, moved, shape)
        return f"Einsum {equation!r} as a transpose of merged axes" + (" and a sum" if summed else "")
    a, b = terms
    if any(c not in b and c not in output for c in a) or any(c not in a and c not in output for c in b):
        raise Unsupported(f"Einsum {equation!r} sums a letter of one operand only")
    batch = "".join(c for c in output if c in a and c in b)
    left = "".join(c for c in output if c in a and c not in b)
    right = "".join(c for c in output if c in b and c not in a)
    inner = "".join(c for c in a if c in b and c not in output)

    def n(letters: str) -> int:
        return math.prod(size[c] for c in letters)

    x, x_shape = _moved(ctx, operands[0], a, all_dims[0], batch + left + inner)
    y, y_shape = _moved(ctx, operands[1], b, all_dims[1], batch + inner + right)
    product = ctx.op("MatMul", [_as(ctx, x, x_shape, (n(batch), n(left), n(inner))),
                                _as(ctx, y, y_shape, (n(batch), n(inner), n(right)))])
    got = batch + left + right
    moved, shape = merged_transpose(ctx, lambda grouped: _as(ctx, product, (n(batch), n(left), n(right)), grouped),
                                    tuple(size[c] for c in got), [got.index(c) for c in output])[:2]
    ctx.emit(out, moved, shape)
    return f"Einsum {equation!r} as one MatMul of (batch, left, contracted) by (batch, contracted, right)"
