"""Decide whether a TorchScript archive may be loaded, by reading it without running it.

``torch.jit.load`` compiles the TorchScript source under ``code/`` and runs it: each class's
``__setstate__`` while the pickles are read, ``forward`` when the model is verified. That source is
text anyone can edit, and TorchScript has operators that touch the file system or the network
(``torch.from_file(path, shared=True)`` maps a file for writing, ``torch.save`` writes one,
``rpc_sync`` calls out). So before loading, every name the code calls must be on an allowlist:
the operators this torch registers in the standard namespaces (aten, prim, quantized, ...), less
those that do I/O; TorchScript's builtins; and what the archive itself defines (its code is checked
the same way). The pickles may reference only the globals TorchScript's own unpickler accepts and
the archive's classes. Anything else is refused, naming the operator, the file in the archive and
``--trust-pickle`` (the flag that allows running code from the file).

This narrows what a model file can do to what a model needs; it is not a sandbox: the kernels
that run are native code not hardened against crafted inputs. See the README's threat model.
"""

from __future__ import annotations

import ast
import functools
import pickletools
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError

TRUST_HINT = ("pass --trust-pickle only if you trust the file's source (that runs code from the file), "
              "or export the model to ONNX where you trust it")

# Operator namespaces a model's graph may use: ATen, TorchScript's prim, the quantized and CPU
# backend kernels. Left out: c10d/_c10d_functional/symm_mem (network), profiler, debugprims,
# static_runtime, _test, inductor and anything a third-party library registers.
OP_NAMESPACES = frozenset({"aten", "prim", "prims", "quantized", "_quantized", "quantized_decomposed",
                           "mkldnn", "mkldnn_prepacked", "onednn", "mkl", "sparse"})
# Registered in those namespaces yet doing I/O (or running Python): never allowed.
IO_OPS = frozenset({"from_file", "save", "load", "load_tensor", "_load_for_lite_interpreter",
                    "rpc_async", "rpc_sync", "rpc_remote", "PythonOp", "IgnoredPythonOp", "AddStatValue",
                    "open", "system", "popen", "exec", "eval", "compile", "__import__"})
# torchbind classes (``torch.classes.NS.Name``) a model may hold: packed weights, not processes.
CLASS_NAMESPACES = frozenset({"quantized", "mkldnn", "xnnpack", "rnn", "sparse"})

# Names TorchScript's compiler resolves itself (frontend/ir_emitter.cpp, python_sugared_value.cpp).
_BUILTINS = frozenset({
    "annotate", "uninitialized", "unchecked_cast", "isinstance", "getattr", "hasattr", "range", "enumerate",
    "zip", "len", "print", "int", "float", "bool", "str", "complex", "list", "dict", "tuple", "min", "max",
    "abs", "all", "any", "sum", "round", "divmod", "chr", "ord", "hex", "oct", "bin", "hash", "id", "sorted",
    "reversed", "pow", "fork", "wait", "awaitable", "awaitable_wait", "awaitable_nowait", "isfinite",
    "Exception", "RuntimeError", "ValueError", "TypeError", "AssertionError", "IndexError", "KeyError",
    "NotImplementedError", "StopIteration", "ZeroDivisionError", "super", "NamedTuple", "Future", "Await",
})
# Dotted prefixes whose functions TorchScript maps onto ATen operators.
_TORCH_MODULES = ("torch.nn.functional.", "torch.functional.", "torch.jit.", "torch.linalg.", "torch.fft.",
                  "torch.special.", "torch.nn.init.", "torch.autograd.", "torch._C._nn.", "torch._C._fft.",
                  "torch._C._linalg.", "torch._C._special.", "torch._C._nested.")

# Globals TorchScript's C++ unpickler accepts (torch/csrc/jit/serialization/unpickler.cpp, readGlobal).
_PICKLE_GLOBALS = frozenset({
    "__main__.TensorID", "__main__.IntList", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor", "torch._tensor._rebuild_from_type_v2", "builtins.complex",
    "collections.OrderedDict", "torch.device", "torch.Tensor", "torch.nn.parameter.Parameter",
})
_PICKLE_TORCH = re.compile(r"torch\.(\w+Storage|per_tensor_affine|per_channel_affine|per_tensor_symmetric|"
                           r"per_channel_symmetric|per_channel_affine_float_qparams)")


class Refused(InputError):
    """The archive holds something edge3d will not run without --trust-pickle."""


@functools.cache
def registered_ops() -> dict[str, frozenset[str]]:
    """Operator names per namespace, as this torch registers them (the allowlist's source)."""
    import torch

    ops: dict[str, set[str]] = {}
    for schema in torch._C._jit_get_all_schemas():
        namespace, _, name = schema.name.partition("::")
        ops.setdefault(namespace, set()).add(name)
    return {ns: frozenset(names) for ns, names in ops.items()}


def op_problem(namespace: str, name: str) -> str | None:
    """Why ``namespace::name`` may not run in an untrusted model (None: it may)."""
    if name in IO_OPS:
        return "reads or writes files or the network"
    if namespace not in OP_NAMESPACES:
        return f"is outside the operator namespaces a model uses ({', '.join(sorted(OP_NAMESPACES))})"
    return None


@functools.cache
def _standard_op_names() -> frozenset[str]:
    return frozenset().union(*(registered_ops().get(ns, frozenset()) for ns in OP_NAMESPACES)) - IO_OPS


# --- the archive -----------------------------------------------------------------------------------

def check_torchscript(path: Path) -> None:
    """Refuse (``Refused``) a TorchScript archive whose code or pickles reach beyond a model's needs."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path} is a damaged archive ({exc}); save the model again") from None
    with archive:
        names = archive.namelist()
        if len(set(names)) != len(names):  # two entries of one name: which one torch reads is not ours to guess
            dup = next(n for n in names if names.count(n) > 1)
            raise Refused(f"{path}: the archive holds {dup} twice; {TRUST_HINT}")
        sources = {n: archive.read(n) for n in names if "/code/" in f"/{n}" and n.endswith(".py")}
        defined = _defined_names(path, sources)
        for name, text in sources.items():
            _check_code(path, name, text, defined)
        for name in names:
            if name.endswith((".pkl", ".debug_pkl")):
                _check_pickle(path, name, archive.read(name), defined.classes)


class _Defined:
    """What the archive's own code defines: callable by name, and checked like the rest."""

    def __init__(self) -> None:
        self.functions: set[str] = set()
        self.classes: set[str] = set()  # qualified, e.g. __torch__.examples.models.c3d.C3D


def _defined_names(path: Path, sources: dict[str, bytes]) -> _Defined:
    """Module-level functions and classes and their methods: where TorchScript puts definitions."""
    defined = _Defined()
    for name, text in sources.items():
        module = _module_of(name)
        for node in _parse(path, name, text).body:
            if isinstance(node, ast.ClassDef):
                defined.classes.add(f"{module}.{node.name}")
                defined.functions.update(n.name for n in node.body if isinstance(n, ast.FunctionDef))
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                defined.functions.add(node.name)
    return defined


def _module_of(entry: str) -> str:
    """``arch/code/__torch__/a/b.py`` -> ``__torch__.a.b``: the qualified name torch gives its classes."""
    inner = entry.split("/code/", 1)[1] if "/code/" in entry else entry.removeprefix("code/")
    return inner.removesuffix(".py").replace("/", ".")


@functools.lru_cache(maxsize=1024)
def _parse_cached(text: bytes) -> ast.Module:
    return ast.parse(text)


def _parse(path: Path, name: str, text: bytes) -> ast.Module:
    try:
        return _parse_cached(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:  # MemoryError: too deeply nested
        raise Refused(f"{path}: {name} is not TorchScript edge3d can check ({exc.__class__.__name__}); "
                      f"{TRUST_HINT}") from None


def _dotted(node: ast.expr) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _check_code(path: Path, entry: str, text: bytes, defined: _Defined) -> None:
    """One walk in source order (an explicit stack: no recursion limit to hit), so that the aliases
    serialized code binds (``_0 = __torch__.f`` ... ``_0(x)``) are known, per function, where used."""
    stack: list[tuple[ast.AST, dict[str, set[str]]]] = [(_parse(path, entry, text), {})]
    while stack:
        node, aliases = stack.pop()
        if isinstance(node, ast.FunctionDef):
            aliases = {}
        elif isinstance(node, ast.Assign) and (dotted := _dotted(node.value)) and "." in dotted:
            for target in node.targets:
                if isinstance(target, ast.Name):
                    aliases.setdefault(target.id, set()).add(dotted)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if not all(m.split(".")[0] in ("torch", "__torch__") for m in modules):
                _refuse(path, entry, f"import {', '.join(modules)}", "is not TorchScript")
        elif isinstance(node, ast.Attribute):  # every dotted name, called or not (each prefix too: cheap)
            dotted = _dotted(node)
            problem = _reference_problem(dotted) if dotted else None
            if problem:
                _refuse(path, entry, dotted or "", problem)
        elif isinstance(node, ast.Call):
            for called in _callees(node, aliases):
                problem = _call_problem(called, defined)
                if problem:
                    _refuse(path, entry, called, problem)
            args = node.args
            if _dotted(node.func) == "getattr" and len(args) > 1 and isinstance(args[1], ast.Constant):
                if str(args[1].value) in IO_OPS:
                    _refuse(path, entry, f"getattr(..., {args[1].value!r})", "reads or writes files or the network")
        stack.extend((child, aliases) for child in reversed(list(ast.iter_child_nodes(node))))


def _callees(node: ast.Call, aliases: dict[str, set[str]]) -> set[str]:
    """What a call may call: a dotted name, what a local alias was bound to, or a method's name."""
    dotted = _dotted(node.func)
    if dotted is None:  # a method of an expression, e.g. (self.conv).forward(x)
        return {"." + node.func.attr if isinstance(node.func, ast.Attribute) else "<expression>"}
    return aliases.get(dotted, {dotted})


def _reference_problem(dotted: str) -> str | None:
    """A dotted name read anywhere in the code (called or not)."""
    parts = dotted.split(".")
    if any(p in IO_OPS for p in parts) and parts[0] in ("torch", "ops", "__torch__"):
        return "reads or writes files or the network"
    if parts[0] == "ops" and len(parts) >= 3:
        return op_problem(parts[1], parts[2])
    if parts[:2] == ["torch", "ops"] and len(parts) >= 4:
        return op_problem(parts[2], parts[3])
    classes = 2 if parts[:2] == ["torch", "classes"] else 4 if parts[:4] == ["__torch__", "torch", "classes"] else 0
    if classes and len(parts) > classes and parts[classes] not in CLASS_NAMESPACES:
        return f"is a native class outside those a model holds ({', '.join(sorted(CLASS_NAMESPACES))})"
    return None


def _call_problem(dotted: str, defined: _Defined) -> str | None:
    """Why calling ``dotted`` is not allowed (None: it is on the allowlist)."""
    parts = dotted.split(".")
    if parts[0] == "":  # .method of an expression
        return _method_problem(parts[-1], defined)
    if len(parts) == 1:
        if parts[0] in IO_OPS:
            return "reads or writes files or the network"
        known = parts[0] in _BUILTINS or parts[0] in defined.functions or parts[0] in _standard_op_names()
        return None if known else "is not a TorchScript builtin nor defined in the archive"
    problem = _reference_problem(dotted)
    if problem:
        return problem
    root = parts[0]
    if root in ("__torch__", "math", "ops") or dotted == "warnings.warn" or parts[:2] in (["torch", "ops"],
                                                                                         ["torch", "classes"]):
        return None
    if root == "torch":
        if len(parts) == 2:
            return None if parts[1] in _standard_op_names() else "is not a PyTorch operator"
        if dotted.startswith(_TORCH_MODULES):
            return None
        return "is not a PyTorch operator TorchScript models call"
    return _method_problem(parts[-1], defined)  # self.x.forward(...), x.size(...)


def _method_problem(name: str, defined: _Defined) -> str | None:
    if name in IO_OPS:
        return "reads or writes files or the network"
    if name in defined.functions or name in _standard_op_names() or name.startswith("__"):
        return None
    return "is neither a PyTorch operator nor defined in the archive"


def _refuse(path: Path, entry: str, what: str, problem: str) -> None:
    raise Refused(f"{path}: {entry} uses {what}, which {problem}; edge3d did not load it: {TRUST_HINT}")


# --- the pickles -----------------------------------------------------------------------------------

def pickle_globals(data: bytes) -> Iterator[str]:
    """``module.name`` of every global a pickle references, read from its opcodes without running it;
    raises ValueError where a reference cannot be read statically."""
    memo: dict[int, object] = {}
    recent: list[object] = []  # values pushed, enough to resolve STACK_GLOBAL's two strings
    for op, arg, _pos in pickletools.genops(data):
        name = op.name
        if name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            yield f"{module}.{attr}"
        elif name == "STACK_GLOBAL":
            if len(recent) < 2 or not all(isinstance(v, str) for v in recent[-2:]):
                raise ValueError("a STACK_GLOBAL whose name is computed")
            yield f"{recent[-2]}.{recent[-1]}"
        elif name.startswith("EXT"):
            raise ValueError("an extension-registry reference")
        if name in ("MEMOIZE",):
            memo[len(memo)] = recent[-1] if recent else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = recent[-1] if recent else None  # type: ignore[arg-type]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            recent.append(memo.get(int(arg)))  # type: ignore[arg-type]
        elif "UNICODE" in name or "STRING" in name:
            recent.append(arg)
        elif name not in ("FRAME", "PROTO"):
            recent.append(None)
        del recent[:-2]


def _check_pickle(path: Path, entry: str, data: bytes, classes: set[str]) -> None:
    try:
        for ref in pickle_globals(data):
            if ref in _PICKLE_GLOBALS or _PICKLE_TORCH.fullmatch(ref) or ref.startswith("torch.jit._pickle."):
                continue
            if ref.startswith("__torch__.torch.classes."):
                if ref.split(".")[3] in CLASS_NAMESPACES:
                    continue
            elif ref in classes:
                continue
            raise Refused(f"{path}: {entry} references {ref}, which TorchScript models do not hold; "
                          f"edge3d did not load it: {TRUST_HINT}")
    except (ValueError, EOFError, IndexError, KeyError) as exc:  # pickletools on a malformed pickle
        raise Refused(f"{path}: {entry} is a pickle edge3d cannot check ({exc}); {TRUST_HINT}") from None
