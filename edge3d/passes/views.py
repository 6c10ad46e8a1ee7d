"""Lazy layouts: a high-rank value kept as a permuted, regrouped view of a rank-≤4 tensor.

A chain of reshapes and transposes (an einops ``rearrange``, a patchify, attention's head split)
moves no data until something reads the result. ``View`` records what the chain did to a
tensor's elements — ``base`` read row-major as ``axes``, transposed by ``order``, and the
transposed axes merged in consecutive runs (``groups``) into the value's own axes — so each
Reshape and Transpose of the chain only rewrites the record, and the data moves once, when a
consumer needs the value in frames or in row-major order: ``merged_transpose`` then makes the
whole chain's permutation in as few rank-≤4 transposes as it can. A clip held as frames is such
a view already (``axes`` (B, T, C, H, W), ``order`` (0, 2, 1, 3, 4)), so a rearrange of a clip
starts from its frames without first moving it to the time layout.

Reshapes split and merge axes of the transposed order; one whose boundaries fall between
elements of one axis in a way no split can express (12 × 2 read as 8 × 3) has no view, and the
value is made row-major as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import onnx_ir as ir

Dims = tuple[Any, ...]  # ints, with None for a symbolic batch dim
SWAP_BT = (0, 2, 1, 3, 4)  # frames hold (B, T, C, H, W) in row-major order


@dataclass(frozen=True)
class View:
    base: ir.Value  # a rank-≤4 tensor whose row-major elements are read as ``axes``
    base_shape: Dims  # ``base``'s own shape (new values get theirs only from shape inference afterwards)
    axes: tuple[int, ...]  # sizes, row-major in ``base``
    order: tuple[int, ...]  # transposed axis i is axis order[i] of ``axes``
    groups: tuple[int, ...]  # how many consecutive transposed axes make each of the value's axes

    @property
    def dims(self) -> Dims:
        sizes = [self.axes[a] for a in self.order]
        out, start = [], 0
        for count in self.groups:
            out.append(math.prod(sizes[start:start + count]))
            start += count
        return tuple(out)

    @property
    def layout(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Where the elements are, whatever tensor holds them: views of one layout combine
        elementwise on their tensors."""
        return self.axes, self.order, self.groups

    def runs(self) -> list[tuple[int, ...]]:
        """Each value axis's transposed axes (indices into ``axes``)."""
        out, start = [], 0
        for count in self.groups:
            out.append(self.order[start:start + count])
            start += count
        return out

    def is_row_major(self) -> bool:
        """The value's elements are ``base``'s in order: a reshape of it, no data to move."""
        kept = [a for a in self.order if self.axes[a] != 1]
        return kept == sorted(kept)

    def transposed(self, perm: tuple[int, ...] | list[int]) -> View:
        runs = self.runs()
        moved = [runs[p] for p in perm]
        return View(self.base, self.base_shape, self.axes, tuple(a for run in moved for a in run),
                    tuple(len(r) for r in moved))

    def reshaped(self, dims: Dims) -> View | None:
        """The view of the same elements read row-major as ``dims``; None where a boundary of
        ``dims`` would cut an axis other than by splitting it."""
        if any(d is None for d in dims):
            return None
        kept = [a for a in range(len(self.axes)) if self.axes[a] != 1]  # size-1 axes carry no order
        axes = [self.axes[a] for a in kept]
        order = [kept.index(a) for a in self.order if self.axes[a] != 1]
        groups: list[int] = []
        i = 0
        for d in dims:
            need, count = int(d), 0
            while need > 1:
                if i >= len(order):
                    return None
                size = axes[order[i]]
                if need % size == 0:
                    need //= size
                elif size % need == 0:  # split: the outer part ends this dim, the inner starts the next
                    a = order[i]
                    axes[a:a + 1] = [need, size // need]
                    order = [o + 1 if o > a else o for o in order]
                    order.insert(i + 1, a + 1)
                    need = 1
                else:
                    return None
                count += 1
                i += 1
            groups.append(count)
        if i != len(order):
            return None
        return View(self.base, self.base_shape, tuple(axes), tuple(order), tuple(groups))


def row_major_view(tensor: ir.Value, shape: Dims, dims: Dims) -> View:
    """A value of ``dims`` whose elements are those of ``tensor`` (of ``shape``) in row-major order."""
    return View(tensor, tuple(shape), tuple(dims), tuple(range(len(dims))), (1,) * len(dims))


def permuted_frames_view(frames: ir.Value, dims: Dims, p: tuple[int, ...]) -> View:
    """A rank-5 value of ``dims`` whose transpose by ``p`` is a clip held as ``frames`` (``p`` the
    identity: the value itself is the clip). Frames hold the clip's (B, T, C, H, W) row-major."""
    u = [dims[a] for a in p]
    axes = tuple(u[a] for a in SWAP_BT)
    inverse = [p.index(i) for i in range(5)]
    frames_shape = (None if u[0] is None else u[0] * u[2], u[1], u[3], u[4])  # a symbolic batch stays so
    return View(frames, frames_shape, axes, tuple(SWAP_BT[inverse[i]] for i in range(5)), (1,) * 5)
