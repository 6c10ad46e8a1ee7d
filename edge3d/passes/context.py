"""Rank-4 representations of rank-5 (and higher) values, and the conversions between them.

Every value of rank ≥ 5 in the source graph is carried by one or two rank-≤4 tensors:

- ``frames``: ``(B·T, C, H, W)``, batch-major, for a rank-5 ``(B, C, T, H, W)`` value. Spatial
  convs, pools, norms and elementwise ops run here.
- ``canonical``: any reshape of the value that keeps its row-major element order, e.g. the time
  layout ``(B, C, T, H·W)``. Temporal convs run here, and every reshape, flatten or transpose
  of a high-rank value is a reshape or a rank-≤4 transpose of a canonical tensor.

frames → time is ``Reshape(B, T, C, H·W)`` + ``Transpose(0, 2, 1, 3)``; time → frames the reverse.
A value keeps every representation made for it, so a conversion is emitted at most once.

A rule runs inside ``LowerContext.transaction``: when it refuses (``Unsupported``) or fails, every
change it made — representations recorded or cached, replacements, initializers, nodes — is
rolled back, so a conversion it asked for before refusing is not left cached without the nodes
that compute it. Rules change representations only through the context's methods, which
journal what they overwrite.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx_ir as ir

from .live_memory import LiveMemory
from .views import SWAP_BT, View, permuted_frames_view, row_major_view
from .views import Dims as Dims  # the rules take it from here


class Unsupported(Exception):
    """Raised by a rule that cannot lower a node; collected and reported together."""


Perm = tuple[int, ...]


@dataclass
class Rep:
    dims: Dims  # the original (rank ≥ 5) shape
    frames: ir.Value | None = None
    canonical: dict[Dims, ir.Value] = field(default_factory=dict)  # 4D shape → tensor
    # (p, frames of value.transpose(p)): a rank-5 value that is a permutation of a clip, e.g. a
    # channel-last (B, T, H, W, C) view, carried by the clip's frames with no transpose emitted
    permuted: tuple[Perm, ir.Value] | None = None
    # a reshape/transpose chain not yet made (``views``): the data moves when a consumer reads it
    view: View | None = None

    def clip_frames(self) -> tuple[Perm, ir.Value] | None:
        """(p, frames of value.transpose(p)), with p the identity when the value has frames."""
        if self.frames is not None:
            return tuple(range(len(self.dims))), self.frames
        return self.permuted


@dataclass
class Savepoint:
    """What a transaction restores: the sizes of what only grows (nodes, initializers, names),
    a copy of the small replacements map, and the first state of each rep entry and cache the
    transaction changed."""

    nodes: int
    absorbed: int
    initializers: int
    counter: int
    replacements: dict[ir.Value, ir.Value]
    reps: dict[ir.Value, Rep | None] = field(default_factory=dict)  # value → its rep before (None: had none)
    caches: dict[int, tuple[Rep, ir.Value | None, dict[Dims, ir.Value]]] = field(default_factory=dict)


def prod(dims: Sequence[Any]) -> int | None:
    return None if any(d is None for d in dims) else math.prod(dims)


def time_dims(dims: Dims) -> Dims:
    """The canonical time layout of a rank-5 value: (B, C, T, H·W)."""
    b, c, t, h, w = dims
    return (b, c, t, prod([h, w]))


def frames_dims(dims: Dims) -> Dims:
    b, c, t, h, w = dims
    return (None if b is None else b * t, c, h, w)


def default_grouping(dims: Dims) -> Dims:
    """A rank-≤4 canonical shape for any high-rank value: time layout, or trailing dims merged."""
    if len(dims) == 5:
        return time_dims(dims)
    return tuple(dims[:3]) + (prod(dims[3:]),)


class LowerContext:
    """What a lowering rule works with: the representations and a builder for new nodes."""

    def __init__(self, graph: ir.Graph, opset: int, conv_strategy: str = "auto",
                 allowed_ops: frozenset[str] | None = None, op_limits: Mapping[str, Any] | None = None,
                 chunk_convs: bool = True):
        self.graph = graph
        self.chunk_convs = chunk_convs  # whether auto may chunk a Conv3d to bound memory (not on a GPU)
        self.opset = opset
        self.conv_strategy = conv_strategy  # how the Conv rule lowers a Conv3d with temporal taps
        self.allowed_ops = allowed_ops  # the target profile's ops (None: any); rules choose among forms by it
        self.op_limits = op_limits or {}  # and its per-op limits ({"Concat": {"axes": [1]}})
        self.live: LiveMemory | None = None  # the 5D graph's activation memory, for rules that trade memory
        self.reps: dict[ir.Value, Rep] = {}
        self.replacements: dict[ir.Value, ir.Value] = {}  # rank-≤4 outputs of lowered nodes
        self.new_nodes: list[ir.Node] = []
        self.absorbed: list[ir.Node] = []  # later nodes a rule lowered together with its own
        self._counter = 0
        self.prefix = "lowered"
        self._savepoints: list[Savepoint] = []  # open transactions, innermost last

    def allows(self, op_type: str, axis: int | None = None) -> bool:
        """Whether the target profile takes ``op_type`` (rules with a choice of forms ask), on
        ``axis`` where given and the profile limits the op's axes."""
        if self.allowed_ops is not None and op_type not in self.allowed_ops:
            return False
        axes = (self.op_limits.get(op_type) or {}).get("axes")
        return axis is None or axes is None or axis in axes

    # -- transactions ---------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Savepoint]:
        """Run a rule's changes as one unit: on any exception (``Unsupported`` above all) they are
        undone before it propagates. Transactions nest."""
        savepoint = Savepoint(len(self.new_nodes), len(self.absorbed), len(self.graph.initializers), self._counter,
                              dict(self.replacements))
        self._savepoints.append(savepoint)
        try:
            yield savepoint
        except BaseException:
            self._savepoints.pop()
            self.rollback(savepoint)
            raise
        self._savepoints.pop()
        for outer in self._savepoints[-1:]:  # the outer transaction keeps the earliest states
            for value, rep in savepoint.reps.items():
                outer.reps.setdefault(value, rep)
            for key, state in savepoint.caches.items():
                outer.caches.setdefault(key, state)

    def rollback(self, savepoint: Savepoint) -> None:
        discarded = self.new_nodes[savepoint.nodes:]
        del self.new_nodes[savepoint.nodes:]
        del self.absorbed[savepoint.absorbed:]
        for node in reversed(discarded):  # detach: the inputs lose these uses
            for index in range(len(node.inputs)):
                node.replace_input_with(index, None)
        for name in list(self.graph.initializers)[savepoint.initializers:]:
            self.graph.initializers.pop(name)
        for rep, frames, canonical in savepoint.caches.values():
            rep.frames = frames
            rep.canonical.clear()
            rep.canonical.update(canonical)
        for value, before in savepoint.reps.items():
            if before is None:
                self.reps.pop(value, None)
            else:
                self.reps[value] = before
        self.replacements.clear()
        self.replacements.update(savepoint.replacements)
        self._counter = savepoint.counter

    def _set_rep(self, value: ir.Value, rep: Rep) -> None:
        for savepoint in self._savepoints[-1:]:
            savepoint.reps.setdefault(value, self.reps.get(value))
        self.reps[value] = rep

    def _touch(self, rep: Rep) -> Rep:
        """Journal a rep's caches before they change."""
        for savepoint in self._savepoints[-1:]:
            savepoint.caches.setdefault(id(rep), (rep, rep.frames, dict(rep.canonical)))
        return rep

    # -- shapes -----------------------------------------------------------------------------
    @staticmethod
    def dims(value: ir.Value | None) -> Dims | None:
        """Static dims of a value; a symbolic dim is None. None when the rank is unknown."""
        if value is None or value.shape is None:
            return None
        return tuple(d if isinstance(d, int) else None for d in value.shape.dims)

    @staticmethod
    def is_high(value: ir.Value | None, max_rank: int = 4) -> bool:
        return value is not None and value.shape is not None and len(value.shape) > max_rank

    def high_dims(self, value: ir.Value) -> Dims:
        dims = self.dims(value)
        if dims is None:
            raise Unsupported(f"the shape of {value.name!r} is unknown after shape inference")
        if any(d is None for d in dims[1:]):
            raise Unsupported(f"{value.name!r} has symbolic dims {dims}; only the batch dim may be symbolic")
        return dims

    def clip_dims(self, value: ir.Value) -> Dims:
        """The (B, C, T, H, W) dims of a rank-5 value; other ranks have no rule here."""
        dims = self.high_dims(value)
        if len(dims) != 5:
            raise Unsupported(f"{value.name!r} has rank {len(dims)}; this rule lowers rank-5 clips only")
        return dims

    def rep(self, value: ir.Value) -> Rep:
        rep = self.reps.get(value)
        if rep is None:
            array = self.const_array(value) if self.is_high(value) else None
            if array is None:
                raise Unsupported(f"no rank-4 form of {value.name!r} (its producer was not lowered)")
            rep = self.constant_rep(value, array)
        if any(d is None for d in rep.dims[1:]):  # a kept node's output that shape inference left open
            raise Unsupported(f"{value.name!r} has symbolic dims {rep.dims}; only the batch dim may be symbolic")
        return rep

    def constant_rep(self, value: ir.Value, array: np.ndarray) -> Rep:
        """A high-rank constant (initializer or Constant) stored in its canonical rank-≤4 form."""
        shape = default_grouping(tuple(array.shape))
        rep = Rep(tuple(array.shape), canonical={shape: self.const(np.ascontiguousarray(array).reshape(shape))})
        self._set_rep(value, rep)
        return rep

    # -- building -----------------------------------------------------------------------------
    def op(self, op_type: str, inputs: Sequence[ir.Value | None],
           attributes: Mapping[str, Any] | None = None) -> ir.Value:
        """Add a node with one output; types and shapes of new values come from shape inference
        afterwards. An attribute is a Python value or an ``ir.Attr`` (re-emitted as it is); None
        leaves it out."""
        return self.multi_op(op_type, inputs, attributes, num_outputs=1)[0]

    def multi_op(self, op_type: str, inputs: Sequence[ir.Value | None],
                 attributes: Mapping[str, Any] | None = None, num_outputs: int = 1) -> list[ir.Value]:
        """Add a node with ``num_outputs`` outputs, like ``op``."""
        attrs = [ir.convenience.convert_attribute(k, v) for k, v in (attributes or {}).items() if v is not None]
        node = ir.Node("", op_type, inputs, attrs, num_outputs=num_outputs, name=self._name(op_type))
        for out in node.outputs:
            out.name = self._name(op_type.lower())
        self.new_nodes.append(node)
        return list(node.outputs)

    def const(self, array: npt.ArrayLike, dtype: npt.DTypeLike | None = None, name: str | None = None) -> ir.Value:
        array = np.asarray(array, dtype=dtype)
        tensor = ir.tensor(array, name=name or self._name("const"))
        value = ir.Value(name=tensor.name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype),
                         const_value=tensor)
        self.graph.register_initializer(value)
        return value

    def ints(self, values: Iterable[int]) -> ir.Value:
        return self.const(np.asarray(list(values), dtype=np.int64))

    def _name(self, what: str) -> str:
        self._counter += 1
        return f"{self.prefix}/{what}_{self._counter}"

    @staticmethod
    def const_array(value: ir.Value | None) -> np.ndarray | None:
        if value is None:
            return None
        tensor = ir.convenience.get_const_tensor(value)
        return None if tensor is None else tensor.numpy()

    def reshape(self, x: ir.Value, dims: Dims) -> ir.Value:
        unknown = [i for i, d in enumerate(dims) if d is None]
        if len(unknown) > 1:
            raise Unsupported(f"cannot reshape to {dims} with more than one symbolic dim")
        target = [-1 if d is None else int(d) for d in dims]
        if 0 not in target:
            return self.op("Reshape", [x, self.ints(target)])
        # an empty tensor (a zero-length slice a model concatenates): a 0 in Reshape's shape means
        # "copy this dim" unless allowzero, which needs opset 14 and no -1 beside it
        if unknown or self.opset < 14:
            raise Unsupported(f"cannot reshape an empty tensor to {dims} at opset {self.opset}")
        return self.op("Reshape", [x, self.ints(target)], {"allowzero": 1})

    def transpose(self, x: ir.Value, perm: Iterable[int]) -> ir.Value:
        return self.op("Transpose", [x], {"perm": list(perm)})

    # -- representations ---------------------------------------------------------------------
    def set_frames(self, value: ir.Value, frames: ir.Value) -> None:
        self._set_rep(value, Rep(self.high_dims(value), frames=frames))

    def set_canonical(self, value: ir.Value, tensor: ir.Value, shape: Dims) -> None:
        dims = self.high_dims(value)
        if prod(shape) is not None and prod(dims) is not None and prod(shape) != prod(dims):
            raise AssertionError(f"canonical shape {shape} does not hold {dims}")
        self._set_rep(value, Rep(dims, canonical={tuple(shape): tensor}))

    def alias(self, value: ir.Value, source: ir.Value) -> None:
        self._set_rep(value, self.rep(source))

    def frames(self, value: ir.Value) -> ir.Value:
        rep = self.rep(value)
        if len(rep.dims) != 5:
            raise Unsupported(f"{value.name!r} has rank {len(rep.dims)}; only rank-5 values have a frames layout")
        lazy = self._lazy(rep) if rep.frames is None and not rep.canonical else None
        if lazy is not None:  # a permuted clip or a reshape/transpose chain: moved once, into frames
            self._touch(rep)
            moved, _ = self.materialize(lazy.transposed(SWAP_BT))
            rep.frames = self.reshape(moved, frames_dims(rep.dims))
        if rep.frames is None:
            self._touch(rep)
            b, c, t, h, w = rep.dims
            if t == 1:  # one frame: frames and time layouts hold the same element order
                rep.frames = self.reshape(self._any_canonical(rep), frames_dims(rep.dims))
            else:
                tl = self.canonical(value, time_dims(rep.dims))
                moved = self.transpose(tl, (0, 2, 1, 3))
                rep.frames = self.reshape(moved, frames_dims(rep.dims))
        return rep.frames

    def canonical(self, value: ir.Value, shape: Dims) -> ir.Value:
        """The value's elements in row-major order, viewed with ``shape`` (rank ≤ 4)."""
        rep = self.rep(value)
        shape = tuple(shape)
        if shape not in rep.canonical:
            self._touch(rep)
            rep.canonical[shape] = self.reshape(self._any_canonical(rep), shape)
        return rep.canonical[shape]

    def time(self, value: ir.Value) -> ir.Value:
        return self.canonical(value, time_dims(self.rep(value).dims))

    def _any_canonical(self, rep: Rep) -> ir.Value:
        if rep.canonical:
            return next(iter(rep.canonical.values()))
        self._touch(rep)
        lazy = self._lazy(rep) if rep.frames is None else None
        if lazy is not None:
            tensor, shape = self.materialize(lazy)
            rep.canonical[shape] = tensor
            return tensor
        b, c, t, h, w = rep.dims
        key = time_dims(rep.dims)
        assert rep.frames is not None, "a Rep has frames or a canonical tensor"
        if t == 1:
            tensor = self.reshape(rep.frames, key)
        else:
            split = self.reshape(rep.frames, (b, t, c, h * w))
            tensor = self.transpose(split, (0, 2, 1, 3))
        rep.canonical[key] = tensor
        return tensor

    def _lazy(self, rep: Rep) -> View | None:
        """The view a rep without frames is held as: its chain, or the frames of the clip it permutes."""
        if rep.view is not None:
            return rep.view
        if rep.permuted is not None:
            p, frames = rep.permuted
            return permuted_frames_view(frames, rep.dims, p)
        return None

    def set_permuted(self, value: ir.Value, p: Perm, frames: ir.Value) -> None:
        """``value.transpose(p)`` is a clip whose frames are ``frames``."""
        if tuple(p) == tuple(range(len(p))):
            self.set_frames(value, frames)
        else:
            self._set_rep(value, Rep(self.high_dims(value), permuted=(tuple(p), frames)))

    def move_layout(self, x: ir.Value, out: ir.Value, perm: Sequence[int]) -> bool:
        """Give ``out = x.transpose(perm)`` the frames ``x`` already has, as a permuted view:
        no node is emitted. False when ``x`` has no frames or the batch would move."""
        rep = self.reps.get(x)
        known = rep.clip_frames() if rep is not None else None
        if known is None or len(perm) != 5:
            return False
        q, frames = known  # u = x.transpose(q); x = out.transpose(perm⁻¹)
        inverse = [list(perm).index(i) for i in range(5)]
        p = tuple(inverse[a] for a in q)  # u = out.transpose(p)
        if p[0] != 0:
            return False
        self.set_permuted(out, p, frames)
        return True

    def row_major_only(self, value: ir.Value) -> bool:
        """The value is held only in row-major order (say the time layout, after a temporal
        conv): its frames would cost a transpose, its time layout none."""
        rep = self.reps.get(value)
        return rep is not None and rep.frames is None and rep.permuted is None and rep.view is None

    # -- lazy views (``views``) ------------------------------------------------------------
    def view_of(self, value: ir.Value) -> View | None:
        """``value`` as a ``View`` of a tensor it already has (row-major, frames, or a permuted
        clip's frames); None where a dim is symbolic or zero."""
        rep = self.rep(value) if self.is_high(value) else None
        dims = rep.dims if rep is not None else self.dims(value)
        if dims is None or any(d is None or d == 0 for d in dims):
            return None
        if rep is None:
            return row_major_view(value, dims, dims)
        if rep.canonical:
            shape, tensor = next(iter(rep.canonical.items()))
            return row_major_view(tensor, shape, dims)
        if rep.frames is not None:
            return permuted_frames_view(rep.frames, dims, tuple(range(5)))
        return self._lazy(rep)

    def set_view(self, value: ir.Value, view: View) -> None:
        """``value`` is ``view``: no node now. A view that keeps its base's element order is
        simply a canonical form of the value."""
        if view.is_row_major():
            self.set_canonical(value, view.base, view.base_shape)
        else:
            self._set_rep(value, Rep(self.high_dims(value), view=view))

    def materialize(self, view: View) -> tuple[ir.Value, Dims]:
        """The view's elements in row-major order, and the rank-≤4 shape they come in."""
        from .transposes import merged_transpose

        def source(shape: Dims) -> ir.Value:
            return view.base if tuple(shape) == tuple(view.base_shape) else self.reshape(view.base, shape)

        moved, shape, _ = merged_transpose(self, source, view.axes, view.order)
        return moved, shape

    def bt_view(self, value: ir.Value) -> ir.Value:
        """The (B, T, C·H·W) view of a rank-5 value: batch and time on their own axes."""
        b, c, t, h, w = self.rep(value).dims
        return self.reshape(self.frames(value), (b, t, c * h * w))

    def time_from_frames(self, rep: Rep) -> ir.Value:
        """The time layout of an intermediate known only by its frames."""
        return self._any_canonical(rep)

    def emit(self, value: ir.Value, tensor: ir.Value, shape: Dims) -> None:
        """Give ``value`` the elements of ``tensor`` (row-major, viewed as ``shape``)."""
        if self.is_high(value):
            self.set_canonical(value, tensor, shape)
            return
        dims = self.dims(value)
        if dims is None:
            raise Unsupported(f"the shape of {value.name!r} is unknown after shape inference")
        self.replace(value, tensor if tuple(dims) == tuple(shape) else self.reshape(tensor, dims))

    def absorb(self, node: ir.Node) -> None:
        """``node``, later in the graph, is lowered with the current one (a pattern such as
        Reshape → InstanceNormalization → Reshape): the pass removes it and does not visit it.
        The rule gives every used output of the last absorbed node a representation."""
        self.absorbed.append(node)

    def replace(self, value: ir.Value, new: ir.Value) -> None:
        """A rank-≤4 output of a lowered node: ``new`` takes its place in the graph."""
        self.replacements[value] = new
