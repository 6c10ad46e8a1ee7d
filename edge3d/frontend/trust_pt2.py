"""Load a ``.pt2`` (ExportedProgram) without running anything from the file.

``torch.export.load`` is not safe on an untrusted archive. Reading torch 2.13's loader
(``torch/export/pt2_archive/_package.py``, ``torch/_export/serde/serialize.py``,
``torch/export/_unlift.py``) shows five ways a tampered file runs code:

- pickled weights/constants are read with ``torch.load(weights_only=False)``, opaque constants with
  ``pickle.loads`` and torchbind ones with ``torch._C._pickle_load_obj``; the sample inputs fall back
  from ``weights_only=True`` to ``False`` when the first attempt fails;
- every symbolic shape is parsed with ``sympy.sympify``, which is ``eval``;
- ``data/aotinductor/`` libraries are loaded (``dlopen``) with the program;
- a node's target is any ``torch.*`` attribute path (``torch.os.system`` resolves), run with the graph;
- ``guards_code`` strings are pasted into Python source and ``exec``-ed by ``ExportedProgram.module()``.

The first three happen inside ``torch.export.load``, so while it runs they are routed through
guards: ``torch.load`` is forced to ``weights_only=True`` (torch's own restricted unpickler),
``pickle.loads``/``_pickle_load_obj`` as the loader calls them and the AOTInductor loader refuse,
and ``sympy.sympify`` accepts only the printed form of a shape expression. This follows every
unpickling the loader does, wherever the archive layout puts the entry, which a pre-scan of the zip
would have to re-derive (and keep in step with torch) entry by entry. The last two are checked on
the loaded program before anything runs it: an allowlist of operators and of guard syntax. If a
hooked name is missing (another torch), loading is refused rather than done unguarded. The hooks
are process-wide for the duration of the load: edge3d loads one model at a time, in one thread.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import io
import operator
import pickle
import re
import tokenize
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .trust import TRUST_HINT, Refused, op_problem


class _Stop(BaseException):
    """Raised inside torch's loader; a BaseException so that no ``except Exception`` there
    (the sample inputs' fallback, ``torch.export.load``'s legacy retry) swallows it."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def load_exported_program(path: Path) -> Any:
    """``torch.export.load(path)`` under the guards, then the program checked; ``Refused`` if not safe."""
    import torch

    with _guarded(path) as refusals:
        try:
            exported = torch.export.load(str(path))
        except _Stop as stop:
            raise Refused(stop.message) from None
    if refusals:  # swallowed somewhere after all: still refuse
        raise Refused(refusals[0])
    check_program(path, exported)
    return exported


@contextlib.contextmanager
def _guarded(path: Path) -> Iterator[list[str]]:
    import sympy
    import torch
    from torch.export.pt2_archive import _package

    hooks: list[tuple[Any, str]] = [(torch, "load"), (torch._C, "_pickle_load_obj"), (_package, "pickle"),
                                    (_package, "_load_aoti"), (_package.PT2ArchiveReader, "read_bytes"),
                                    (sympy, "sympify")]
    missing = [f"{getattr(o, '__name__', o)}.{a}" for o, a in hooks if not hasattr(o, a)]
    if missing:
        raise Refused(f"{path}: this torch's ExportedProgram loader is not one edge3d can guard "
                      f"({', '.join(missing)} moved); {TRUST_HINT}")
    refusals: list[str] = []
    entries: dict[int, str] = {}  # hash of an entry's bytes -> its name, to name what is refused

    def stop(what: str, why: str) -> _Stop:
        refusals.append(f"{path}: {what} {why}; edge3d did not load it: {TRUST_HINT}")
        return _Stop(refusals[-1])

    def entry(data: object) -> str:
        raw = data.getvalue() if isinstance(data, io.BytesIO) else data
        name = entries.get(hash(raw)) if isinstance(raw, bytes) else None
        return f"the entry {name}" if name else "a pickled entry"

    original_read, original_load, original_sympify = _package.PT2ArchiveReader.read_bytes, torch.load, sympy.sympify

    def read_bytes(self: Any, name: str) -> bytes:
        data = original_read(self, name)
        entries[hash(data)] = name
        return data

    def weights_only_load(f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        try:
            return original_load(f, *args, **kwargs)
        except pickle.UnpicklingError as exc:  # what the weights-only unpickler refuses (other errors: damage)
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            what = f" (it references {found.group(1)})" if found else ""
            raise stop(entry(f), f"is a pickle that is not plain weights{what}") from None

    def refuse_pickle(data: bytes, *args: Any, **kwargs: Any) -> Any:
        raise stop(entry(data), "is a pickled Python object")

    def refuse_aoti(file: Any, model_name: str, *args: Any, **kwargs: Any) -> Any:
        raise stop(f"data/aotinductor/{model_name}", "is a compiled library (native code)")

    def safe_sympify(expr: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(expr, str):
            problem = sympy_problem(expr)
            if problem:
                raise stop(f"the shape expression {expr[:60]!r}", problem)
        return original_sympify(expr, *args, **kwargs)

    refusing = staticmethod(refuse_pickle)
    pickle_shim = type("RefusingPickle", (), {"loads": refusing, "load": refusing})  # as _package calls pickle
    replacements = [weights_only_load, refuse_pickle, pickle_shim, refuse_aoti, read_bytes, safe_sympify]
    saved = [(o, a, getattr(o, a)) for o, a in hooks]
    try:
        for (obj, attr), value in zip(hooks, replacements):
            setattr(obj, attr, value)
        yield refusals
    finally:
        for obj, attr, value in saved:
            setattr(obj, attr, value)


# --- shape expressions -----------------------------------------------------------------------------

_SYMBOL = re.compile(r"[a-z]+\d+(_\d+)?")  # s0, u3, ps1, zuf0: the names ShapeEnv gives its symbols
_SYMPY_NAMES = frozenset({
    "Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs", "Eq", "Ne", "Lt",
    "Le", "Gt", "Ge", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan", "Equality",
    "Unequality", "And", "Or", "Not", "Piecewise", "ExprCondPair", "floor", "ceiling", "sqrt", "oo", "zoo",
    "nan", "true", "false", "True", "False", "None", "Half", "One", "Zero", "NegativeOne", "Infinity",
    "NegativeInfinity", "ITE", "BooleanTrue", "BooleanFalse",
    # keyword arguments of the printed form: Symbol('s0', positive=True, integer=True), Float('1.5', precision=53)
    "positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite", "zero", "nonzero", "even",
    "odd", "rational", "prime", "commutative", "precision", "evaluate",
})
_SYMPY_OPS = frozenset({"+", "-", "*", "/", "//", "%", "**", "(", ")", ",", "<", ">", "<=", ">=", "==", "!=",
                        "=", "&", "|", "~"})


@functools.cache
def _torch_sympy_names() -> frozenset[str]:
    import sympy
    import torch.utils._sympy.functions as fns

    return frozenset(n for n, v in vars(fns).items() if isinstance(v, type) and issubclass(v, sympy.Basic))


def sympy_problem(expr: str) -> str | None:
    """Why ``expr`` is not a shape expression as torch prints one (None: it is), by its tokens:
    no attribute access, subscripts, lambdas or names beyond sympy's and torch's shape functions,
    so ``sympify``'s ``eval`` cannot reach anything else."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(expr).readline))
    except (tokenize.TokenError, SyntaxError) as exc:
        return f"does not parse ({exc})"
    for tok in tokens:
        if tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.NUMBER):
            continue
        if tok.type == tokenize.NAME:
            if tok.string in _SYMPY_NAMES or tok.string in _torch_sympy_names() or _SYMBOL.fullmatch(tok.string):
                continue
            return f"uses {tok.string!r}, which is not part of a shape expression"
        if tok.type == tokenize.STRING:
            if re.fullmatch(r"""(['"])[\w.+\-]*\1""", tok.string):
                continue
            return "holds a string that is not a symbol name or a number"
        if tok.type == tokenize.OP and tok.string in _SYMPY_OPS:
            continue
        return f"uses {tok.string!r}, which is not part of a shape expression"
    return None


# --- the loaded program ----------------------------------------------------------------------------

def _python_targets() -> set[Callable[..., Any]]:
    import math

    import torch

    ops = {getattr(operator, n) for n in ("getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow",
                                          "neg", "pos", "abs", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_",
                                          "xor", "not_", "invert", "lshift", "rshift")}
    maths = {v for v in vars(math).values() if callable(v)}
    syms = {getattr(torch, n) for n in ("sym_int", "sym_float", "sym_max", "sym_min", "sym_not", "sym_ite",
                                        "sym_sqrt", "sym_sum", "_sym_sqrt", "sym_fresh_size") if hasattr(torch, n)}
    return ops | maths | syms


_HIGHER_ORDER = frozenset({"cond", "while_loop", "map_impl", "scan", "associative_scan",
                           "wrap_with_set_grad_enabled", "wrap_with_autocast"})


def target_problem(target: Any) -> tuple[str, str | None]:
    """(name, why not) of a graph node's target; why is None where it may run."""
    import torch

    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        namespace, _, rest = target.name().partition("::")
        name = rest.split(".")[0]
        return f"{namespace}::{name}", op_problem(namespace, name)
    if isinstance(target, torch._ops.HigherOrderOperator):
        name = getattr(target, "name", lambda: str(target))()
        ok = name in _HIGHER_ORDER
        return f"higher_order::{name}", None if ok else "is a higher-order operator edge3d does not run"
    name = getattr(target, "__module__", None) or ""
    name = f"{name}.{getattr(target, '__qualname__', target)}" if name else str(target)
    return name, None if callable(target) and target in _python_targets() else "is not a PyTorch operator"


def check_program(path: Path, exported: Any) -> None:
    """Refuse a loaded ExportedProgram whose graph calls anything but operators, or whose guards are
    not plain shape comparisons (they become code when the program is called)."""
    import torch

    for module in exported.graph_module.modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.nodes:
            if node.op == "call_function":
                name, problem = target_problem(node.target)
            elif node.op in ("call_method", "call_module"):
                name, problem = str(node.target), f"is a {node.op} node, which exported programs do not hold"
            else:
                continue
            if problem:
                raise Refused(f"{path}: the graph calls {name}, which {problem}; edge3d did not load it: {TRUST_HINT}")
    for guard in getattr(exported, "_guards_code", None) or []:
        problem = guard_problem(str(guard))
        if problem:
            raise Refused(f"{path}: the guard {str(guard)[:60]!r} {problem}; edge3d did not load it: {TRUST_HINT}")


_GUARD_NODES = (ast.Expression, ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Subscript, ast.Load, ast.cmpop,
                ast.boolop, ast.operator, ast.unaryop, ast.Tuple, ast.Slice)
_GUARD_CALLS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})


def guard_problem(code: str) -> str | None:
    """Why a guard is not a comparison of input sizes, as ``L['x'].size()[0] <= 64`` (None: it is)."""
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError:
        return "does not parse"
    for node in ast.walk(tree):
        if isinstance(node, _GUARD_NODES):
            continue
        if isinstance(node, ast.Constant):  # strings only as input names: the guard is pasted into a "..." literal
            if not isinstance(node.value, str) or re.fullmatch(r"\w+", node.value):
                continue
            return "holds a string that is not an input name"
        if isinstance(node, ast.Name) and (node.id in ("L", "math", "inf") or node.id in _torch_sympy_names()
                                           or node.id in _SYMPY_NAMES):
            continue
        if isinstance(node, ast.Attribute) and (node.attr in _GUARD_CALLS or (
                isinstance(node.value, ast.Name) and node.value.id == "math" and not node.attr.startswith("_"))):
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name)) and not node.keywords:
            continue  # what it calls is an Attribute or Name, checked above
        what = node.id if isinstance(node, ast.Name) else f".{node.attr}" if isinstance(node, ast.Attribute) else (
            type(node).__name__)
        return f"uses {what}, which a size check does not"
    return None
