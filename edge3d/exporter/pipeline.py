"""`edge3d export`: load, export to ONNX, check, verify, write the bundle atomically."""

from __future__ import annotations

import contextlib
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager

from .. import __version__
from ..errors import CheckFailed, InputError
from ..lint import lint_model
from ..runtimes.onnxruntime import OrtSession
from ..verify import Verification, ort_runner, torch_runner, verify
from .bundle import atomic_dir, check_destination, sha256, write_json
from .load import LoadedModel, load_model
from .to_onnx import DEFAULT_OPSET, export_to_onnx, prepare

Step = Callable[[str], ContextManager]


@dataclass
class ExportOptions:
    model: Path
    out: Path
    target: str = "onnx"
    opset: int = DEFAULT_OPSET
    opset_explicit: bool = False
    simplify: bool = True
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)
    arch: str | None = None
    arch_kwargs: str | None = None
    trust_pickle: bool = False
    verify_samples: int = 4
    seed: int = 0
    force: bool = False


@contextlib.contextmanager
def _no_progress(_label: str):
    yield


def run_export(opts: ExportOptions, step: Step = _no_progress) -> dict:
    """Run the whole export; returns the manifest. Raises Edge3dError on any failed check."""
    if opts.target != "onnx":
        raise InputError(f"unknown target {opts.target!r}; the available target is: onnx")
    check_destination(Path(opts.out), opts.force)
    with step("Loading model"):
        loaded = load_model(opts.model, arch=opts.arch, arch_kwargs=opts.arch_kwargs,
                            trust_pickle=opts.trust_pickle, input_shapes=opts.input_shapes)
    with step("Exporting to ONNX"):
        exported = export_to_onnx(loaded, opts.opset, opts.opset_explicit)
    with step("Checking and simplifying"):
        model = prepare(exported.model, simplify=opts.simplify)
    with step("Linting ranks"):
        lint = lint_model(model, max_rank=4)
    with step("Verifying against the original"):
        verification = _verify(loaded, exported.model, model, opts)
    if not verification.passed:
        raise CheckFailed("verification failed: " + "; ".join(verification.failures)
                          + " (nothing was written)")

    with step("Writing bundle"), atomic_dir(Path(opts.out), opts.force) as scratch:
        onnx_path = scratch / "model.onnx"
        _save(model, onnx_path)
        manifest = _manifest(opts, loaded, exported, model, lint, verification, onnx_path)
        write_json(scratch / "manifest.json", manifest)
    return manifest


def _save(model, path: Path) -> None:
    import onnx

    if model.ByteSize() > 1_800_000_000:  # protobuf's 2 GB limit: weights go beside the graph
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save(model, str(path))


def _input_shapes(loaded: LoadedModel, session: OrtSession) -> list[tuple[int, ...]]:
    if loaded.input_shapes and all(d > 0 for s in loaded.input_shapes for d in s):
        return loaded.input_shapes
    shapes = [spec.shape for spec in session.inputs]
    if all(isinstance(d, int) and d > 0 for s in shapes for d in s):
        return shapes
    raise InputError(f"{loaded.path} has symbolic input dims {shapes}; pass --input-shape for each input")


def _verify(loaded: LoadedModel, original, model, opts: ExportOptions) -> Verification:
    session = OrtSession(model)
    shapes = _input_shapes(loaded, session)
    if loaded.kind == "onnx":
        reference = ort_runner(OrtSession(original))
    else:
        reference = torch_runner(loaded.torch_callable)
    return verify(
        reference, ort_runner(session), shapes,
        dtypes=[spec.dtype for spec in session.inputs], names=[o.name for o in session.outputs],
        samples=opts.verify_samples, seed=opts.seed,
    )


def io_entries(values, layout: str = "plain") -> list[dict]:
    from ..graph import shape_of

    entries = []
    for v in values:
        shape, dtype = shape_of(v)
        entries.append({"name": v.name, "shape": list(shape) if shape else None, "dtype": dtype,
                        "layout": layout, "original_shape": list(shape) if shape else None})
    return entries


def tool_versions() -> dict:
    import onnx
    import onnxruntime

    versions = {"edge3d": __version__, "python": platform.python_version(),
                "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    for name in ("torch", "onnxsim"):
        with contextlib.suppress(ImportError):
            versions[name] = __import__(name).__version__
    return versions


def _manifest(opts, loaded, exported, model, lint, verification, onnx_path) -> dict:
    initializers = {i.name for i in model.graph.initializer}
    return {
        "format": "edge3d-bundle",
        "format_version": 1,
        "target": opts.target,
        "source": {"path": str(loaded.path), "kind": loaded.kind, "sha256": sha256(loaded.path)},
        "model": {
            "file": onnx_path.name,
            "sha256": sha256(onnx_path),
            "opset": exported.opset,
            "exporter": exported.exporter,
            "simplified": opts.simplify,
            "max_rank": lint.highest_rank,
            "tensors_above_rank4": len(lint.findings),
        },
        "inputs": io_entries([v for v in model.graph.input if v.name not in initializers]),
        "outputs": io_entries(model.graph.output),
        "rewrite": {"lowered": False, "nodes": []},
        "verification": {"reference": "pytorch" if loaded.kind != "onnx" else "onnxruntime (source model)",
                         **verification.to_dict()},
        "notes": exported.notes,
        "tools": tool_versions(),
    }
