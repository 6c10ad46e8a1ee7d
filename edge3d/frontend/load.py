"""Load a model in any format a user brings, without running code from the file.

Without ``trust_pickle`` nothing a file carries runs: state_dicts are read with
``torch.load(weights_only=True)``; a TorchScript archive's code and pickles are checked before
``torch.jit.load`` compiles them (``trust.py``); a ``.pt2`` is loaded under guards that keep its
pickles weights-only and its graph to PyTorch operators (``trust_pt2.py``); ONNX is data. A fully
pickled ``nn.Module`` can only be rebuilt by running the pickle, so that needs ``trust_pickle=True``,
which also skips the archive checks: it is the user saying the file's source is trusted.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import re
import sys
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, first_line
from ..onnx_tensors import graph_inputs, protobuf_problem
from .trust import check_torchscript
from .trust_pt2 import load_exported_program


@dataclass
class LoadedModel:
    """A model ready for export: a torch callable, an ExportedProgram, or an ONNX graph."""

    path: Path
    kind: str  # "torchscript", "exported-program", "onnx", "state-dict" or "pickled-module"
    module: Any = None  # nn.Module or torch.jit.ScriptModule, in eval mode
    exported: Any = None  # torch.export.ExportedProgram
    onnx_model: Any = None  # onnx.ModelProto
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)

    @property
    def torch_callable(self) -> Any:
        """What the verification runs as the reference: the original PyTorch model."""
        if self.exported is not None:
            return self.exported.module()
        return self.module

    def release_torch(self) -> None:
        """Drop the PyTorch model once the export needs only its ONNX form. A module's graph
        holds reference cycles, so its weights go with the collection run here."""
        import gc

        self.module = self.exported = None
        gc.collect()


# One clip input beyond this (2 GiB as float32) is a typo, not a video model: verification would
# allocate it several times over.
MAX_INPUT_ELEMENTS = 2**29


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``B,C,T,H,W`` (commas or ``x``) into a tuple of positive ints."""
    parts = [p for p in re.split(r"[,x× ]+", text.strip()) if p]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise InputError(
            f"--input-shape {text!r} is not a shape; give positive integers such as 1,3,16,112,112"
        )
    elements = math.prod(dims)
    if elements > MAX_INPUT_ELEMENTS:
        raise InputError(f"--input-shape {text!r} is {elements:,} values ({elements * 4 / 2**30:,.0f} GiB as "
                         f"float32), more than edge3d verifies with ({MAX_INPUT_ELEMENTS:,}); check the shape")
    return dims


def detect_kind(path: Path) -> str:
    """Tell the format from the file's content (extensions lie), reading no pickle."""
    with path.open("rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK"):
        try:
            names = zipfile.ZipFile(path).namelist()
        except zipfile.BadZipFile:
            raise InputError(f"{path} is a damaged archive (truncated?); export the model again") from None
        if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("/archive_format") or n.endswith("/models/model.json") for n in names):
            return "exported-program"
        if any(n.endswith("/data.pkl") for n in names):
            return "torch-save"
        raise InputError(f"{path} is a zip archive but not a PyTorch or ONNX model")
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if head[:1] == b"\x80":  # pickle protocol 2+: a legacy (non-zip) torch.save file
        return "torch-save"
    return "onnx"  # protobuf has no magic number; parsing it will tell


def load_model(
    path: str | Path,
    *,
    arch: str | None = None,
    arch_kwargs: str | dict[str, Any] | None = None,
    trust_pickle: bool = False,
    input_shapes: list[tuple[int, ...]] | None = None,
) -> LoadedModel:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path to the model")
    if path.is_dir():
        raise InputError(f"{path} is a folder; pass the model file itself")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty; export the model again")
    kind = detect_kind(path)
    if kind == "onnx":
        loaded = _load_onnx(path)
    elif kind == "torchscript":
        loaded = _load_torchscript(path, trust_pickle)
    elif kind == "exported-program":
        loaded = _load_exported_program(path, trust_pickle)
    else:
        loaded = _load_torch_save(path, arch, arch_kwargs, trust_pickle)
    if arch is not None and loaded.kind not in ("state-dict",):
        raise InputError(f"--arch only applies to a state_dict file, but {path} is a {loaded.kind}; drop --arch")
    if input_shapes:
        loaded.input_shapes = list(input_shapes)
    return loaded


def _load_onnx(path: Path) -> LoadedModel:
    import onnx

    problem = protobuf_problem(path) if path.suffix.lower() not in (".json", ".textproto", ".onnxtxt") else None
    if problem is not None:  # told from its first bytes: a huge file that is not ONNX is not read whole
        raise InputError(f"{path} is neither an ONNX nor a PyTorch model ({problem})")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise InputError(f"{path} is neither an ONNX nor a PyTorch model ({first_line(exc)})") from None
    if not model.graph.node:
        raise InputError(f"{path} is not an ONNX model with a graph; check the file")
    shapes = []
    for value in graph_inputs(model.graph):
        dims = value.type.tensor_type.shape.dim
        shapes.append(tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims))
    return LoadedModel(path, "onnx", onnx_model=model, input_shapes=shapes)


def _load_torchscript(path: Path, trust_pickle: bool) -> LoadedModel:
    import torch

    if not trust_pickle:
        check_torchscript(path)  # before torch.jit.load compiles and runs the archive's code
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path} is a damaged TorchScript archive ({first_line(exc)}); save it again") from None
    return LoadedModel(path, "torchscript", module=module.eval())


def _load_exported_program(path: Path, trust_pickle: bool) -> LoadedModel:
    import torch

    try:
        exported = torch.export.load(str(path)) if trust_pickle else load_exported_program(path)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path} is a damaged ExportedProgram archive ({first_line(exc)}); save it again") from None
    shapes = []
    args, kwargs = exported.example_inputs or ((), {})
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, torch.Tensor):
            shapes.append(tuple(value.shape))
    return LoadedModel(path, "exported-program", exported=exported, input_shapes=shapes)


def _load_torch_save(path: Path, arch: str | None, arch_kwargs: str | dict[str, Any] | None,
                     trust_pickle: bool) -> LoadedModel:
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": one line on stderr, not three
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" (it references {found.group(1)})" if found else ""
        if not trust_pickle:
            raise InputError(
                f"{path} is a pickled Python object{what}; loading it would run code from the file. "
                "Pass --trust-pickle only if you trust its source, or save the model with "
                "torch.jit.save, torch.export.save or as a state_dict with --arch"
            ) from None
        obj = _load_trusted_pickle(path)
    except Exception as exc:  # noqa: BLE001 - zip/stream errors of a damaged file
        raise InputError(f"{path} is a damaged PyTorch file ({first_line(exc)}); save it again") from None

    if isinstance(obj, torch.nn.Module):
        if arch is not None:
            raise InputError(f"--arch only applies to a state_dict file, but {path} holds a whole module")
        return LoadedModel(path, "pickled-module", module=obj.eval())
    state = _unwrap_state_dict(obj)
    if state is None:
        raise InputError(
            f"{path} holds a {type(obj).__name__}, neither a module nor a state_dict of tensors; "
            "save the model with torch.jit.save or torch.export.save"
        )
    if arch is None:
        raise InputError(
            f"{path} is a state_dict: weights without the network; pass --arch package.module:factory "
            "(and --arch-kwargs JSON) to build the network it belongs to"
        )
    module = build_arch(arch, arch_kwargs)
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same keys, other shapes: strict=False still raises
        mismatched = re.findall(r"size mismatch for ([\w.]+)", str(exc))
        raise InputError(
            f"the state_dict in {path} does not fit --arch {arch}: {len(mismatched)} tensors of another "
            f"shape {_few(mismatched)}; check --arch and --arch-kwargs"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise InputError(
            f"the state_dict in {path} does not fit --arch {arch}: "
            f"{len(result.missing_keys)} missing keys {_few(result.missing_keys)}, "
            f"{len(result.unexpected_keys)} unexpected keys {_few(result.unexpected_keys)}; "
            "check --arch and --arch-kwargs"
        )
    return LoadedModel(path, "state-dict", module=module.eval())


@contextlib.contextmanager
def cwd_importable() -> Iterator[None]:
    """Modules in the working directory importable inside the block, as ``python`` run there
    would allow: its folder is appended to ``sys.path``, after site-packages, so a stray
    ``onnxsim.py`` or ``torch.py`` there cannot shadow the installed package. ``sys.path`` is
    restored exactly on the way out, whatever the imports did to it."""
    saved = list(sys.path)
    cwd = str(Path.cwd())
    if "" not in sys.path and cwd not in sys.path:
        sys.path.append(cwd)
    try:
        yield
    finally:
        sys.path[:] = saved


def _load_trusted_pickle(path: Path) -> Any:
    import torch

    try:
        with cwd_importable():  # unpickling imports the classes the file names
            return torch.load(str(path), map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as exc:
        raise InputError(
            f"{path} needs the Python code of its classes ({first_line(exc)}); run from the project "
            "that defines them or add it to PYTHONPATH"
        ) from None


def _unwrap_state_dict(obj: object) -> dict[str, Any] | None:
    """Accept a plain state_dict or a training checkpoint that nests one."""
    import torch

    if not isinstance(obj, dict):
        return None
    state: dict[str, Any] = obj
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    if state and all(isinstance(v, torch.Tensor) for v in state.values()):
        prefix = "module."  # DataParallel / DDP checkpoints
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
        return state
    return None


def build_arch(arch: str, arch_kwargs: str | dict[str, Any] | None) -> Any:
    """Import ``package.module:factory`` and call it; modules in the working directory are
    importable while it does (see ``cwd_importable``)."""
    import torch

    if ":" not in arch:
        raise InputError(f"--arch {arch!r} must look like package.module:factory")
    module_name, _, attr = arch.partition(":")
    if isinstance(arch_kwargs, str):
        try:
            arch_kwargs = json.loads(arch_kwargs)
        except json.JSONDecodeError as exc:
            raise InputError(f"--arch-kwargs is not valid JSON ({exc.msg}); "
                             "give an object such as '{\"width\": 0.5}'") from None
    kwargs = arch_kwargs or {}
    if not isinstance(kwargs, dict):
        raise InputError("--arch-kwargs must be a JSON object such as '{\"width\": 0.5}'")
    with cwd_importable():  # the factory may import more of the user's modules when called
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except ModuleNotFoundError as exc:
            raise InputError(f"--arch {arch}: cannot import {exc.name!r}; "
                             "check the module path and PYTHONPATH") from None
        except AttributeError:
            raise InputError(f"--arch {arch}: module {module_name!r} has no {attr!r}") from None
        try:
            module = factory(**kwargs)
        except TypeError as exc:
            raise InputError(f"--arch {arch} rejected --arch-kwargs ({exc}); check the argument names") from None
        except (ValueError, RuntimeError, AssertionError, ArithmeticError) as exc:  # e.g. a negative size
            raise InputError(f"--arch {arch} failed with these --arch-kwargs ({type(exc).__name__}: "
                             f"{first_line(exc)}); check their values") from None
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"--arch {arch} returned a {type(module).__name__}, not an nn.Module")
    return module


def _few(keys: Iterable[str], n: int = 3) -> str:
    keys = list(keys)
    return "[" + ", ".join(keys[:n]) + (", ..." if len(keys) > n else "") + "]"
