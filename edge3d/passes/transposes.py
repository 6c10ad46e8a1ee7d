"""Transposes of any rank as rank-≤4 transposes: merge the runs of axes a permutation keeps
together; when more than four runs remain, move them with the shortest chain of block moves,
each a rank-≤4 transpose of the current order cut into at most four runs."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator, Sequence

import onnx_ir as ir

from .context import Dims, LowerContext, Unsupported, prod

Step = tuple[list[tuple[int, ...]], tuple[int, ...]]  # (runs of the current order, their new order)


def _runs(dims: Dims, perm: Sequence[int]) -> tuple[list[list[int]], Dims, list[int]]:
    """The runs of axes ``perm`` keeps together (size-1 axes can go anywhere), the dims of the
    runs in input order, and the runs' new order."""
    keep = [a for a in range(len(dims)) if dims[a] != 1]
    runs: list[list[int]] = []
    for a in (a for a in perm if a in keep):
        if runs and keep.index(a) == keep.index(runs[-1][-1]) + 1:
            runs[-1].append(a)
        else:
            runs.append([a])
    by_input_order = sorted(runs)
    grouped = tuple(prod([dims[a] for a in run]) for run in by_input_order) or (1,)
    return runs, grouped, [by_input_order.index(run) for run in runs]


def transpose_count(dims: Dims, perm: Sequence[int]) -> int | None:
    """How many rank-≤4 transposes ``merged_transpose`` emits for this perm; None: it cannot."""
    runs, _, order = _runs(dims, perm)
    if order == sorted(order):
        return 0
    if len(runs) <= 4:
        return 1
    steps = transpose_chain(order)
    return None if steps is None else len(steps)


def merged_transpose(ctx: LowerContext, source: Callable[[Dims], ir.Value], dims: Dims,
                     perm: Sequence[int]) -> tuple[ir.Value, Dims, int]:
    """``x.transpose(perm)`` for an ``x`` of ``dims`` given by ``source(shape)`` (its row-major
    elements viewed as ``shape``); returns the result, the rank-≤4 shape it has, and the number
    of transposes emitted."""
    runs, grouped, order = _runs(dims, perm)
    if order == sorted(order):
        return source(grouped), grouped, 0
    if len(runs) <= 4:
        return ctx.transpose(source(grouped), order), tuple(grouped[i] for i in order), 1
    steps = transpose_chain(order)
    if steps is None:
        raise Unsupported(f"perm {list(perm)} of shape {list(dims)} moves {len(runs)} separate axis groups; "
                          f"no chain of at most {MAX_CHAIN} rank-4 transposes does it")
    moved = None
    shape: Dims = grouped
    for blocks, block_order in steps:
        shape = tuple(prod([grouped[g] for g in block]) for block in blocks)
        moved = ctx.transpose(source(shape) if moved is None else ctx.reshape(moved, shape), block_order)
        shape = tuple(shape[i] for i in block_order)
    assert moved is not None
    return moved, shape, len(steps)


MAX_CHAIN = 3  # transposes in a chain: each moves every element once


def _block_moves(seq: tuple[int, ...]) -> Iterator[tuple[list[tuple[int, ...]], tuple[int, ...], tuple[int, ...]]]:
    """Every way to cut ``seq`` into 2 to 4 runs and put the runs in another order."""
    n = len(seq)
    for k in range(2, 5):
        for cuts in itertools.combinations(range(1, n), k - 1):
            bounds = (0, *cuts, n)
            blocks = [seq[bounds[i]:bounds[i + 1]] for i in range(k)]
            for block_order in itertools.permutations(range(k)):
                if list(block_order) != sorted(block_order):
                    yield blocks, block_order, tuple(g for i in block_order for g in blocks[i])


def _one_move(seq: tuple[int, ...], goal: tuple[int, ...]) -> Step | None:
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


def transpose_chain(order: Sequence[int]) -> list[Step] | None:
    """The shortest chain of block moves (each a transpose of at most 4 merged runs) that turns
    ``range(len(order))`` into ``order``: breadth first, at most ``MAX_CHAIN`` steps."""
    return _chain(tuple(order))


@functools.lru_cache(maxsize=256)
def _chain(goal: tuple[int, ...]) -> list[Step] | None:  # lazy views ask before the lowering emits
    start = tuple(range(len(goal)))
    frontier: dict[tuple[int, ...], list[Step]] = {start: []}
    seen = {start}
    for _ in range(MAX_CHAIN):
        for seq, path in frontier.items():
            last = _one_move(seq, goal)
            if last is not None:
                return path + [last]
        next_frontier: dict[tuple[int, ...], list[Step]] = {}
        for seq, path in frontier.items():
            for blocks, block_order, result in _block_moves(seq):
                if result not in seen:
                    seen.add(result)
                    next_frontier[result] = path + [(blocks, block_order)]
        frontier = next_frontier
    return None
