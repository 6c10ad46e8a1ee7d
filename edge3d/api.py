"""The Python API: the CLI's commands as functions that return what they made.

Same defaults as the CLI, same checks, same files written; errors are raised as
``edge3d.errors.InputError`` (bad input, the CLI's exit 2) or ``CheckFailed`` (a check failed,
exit 1) with the CLI's one-line message. Nothing is printed.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .choices import DEFAULT_OPSET
from .errors import InputError


@dataclass(frozen=True)
class Bundle:
    """What ``export`` wrote: the bundle folder and its manifest."""

    path: Path
    manifest: dict

    @property
    def model(self) -> Path:
        """The rank-4 ONNX model."""
        return self.path / "model.onnx"

    @property
    def report(self) -> str:
        """``report.md``: what was lowered, verified and built."""
        return (self.path / "report.md").read_text()

    @property
    def verification(self) -> dict:
        return self.manifest["verification"]

    @property
    def artifacts(self) -> list[dict]:
        return self.manifest["artifacts"]


@dataclass(frozen=True)
class LoweredFile:
    """What ``lower`` wrote: the rank-4 ONNX file, how each node was lowered, and the check."""

    path: Path
    report: dict  # the lowering's report: nodes lowered, by which rule, anything kept
    verification: dict


def _shapes(input_shape) -> list[tuple[int, ...]]:
    if input_shape is None:
        return []
    if all(isinstance(d, int) for d in input_shape):
        return [tuple(input_shape)]
    return [tuple(shape) for shape in input_shape]


def _options(cls, given: dict[str, Any]) -> dict[str, Any]:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return given


def _saved_module(module, shapes: list[tuple[int, ...]], folder: Path) -> Path:
    """An ``nn.Module`` as the ``.pt2`` the pipeline takes (torch.export on random inputs of the
    given shapes)."""
    import torch

    if not shapes:
        raise InputError("exporting a torch.nn.Module needs input_shape=(B, C, T, H, W)")
    args = tuple(torch.randn(*shape) for shape in shapes)
    path = folder / f"{type(module).__name__}.pt2"
    with torch.no_grad():
        torch.export.save(torch.export.export(module.eval(), args), str(path))
    return path


def export(model, out, *, input_shape=None, target: str = "onnx", precision: str | None = None,
           opset: int | None = None, force: bool = False, **options) -> Bundle:
    """Export, lower, verify and build ``model`` (a ``torch.nn.Module`` or any file `edge3d export`
    takes) into the bundle folder ``out``, as `edge3d export` does.

    ``input_shape``: ``(B, C, T, H, W)``, or a list of shapes for a model with several inputs.
    ``options``: the CLI's other options by their Python names (``verify_samples``, ``seed``,
    ``conv_strategy``, ``block``, ``calib``, ``calib_clips``, ``tvm_trials``, ``dynamic_batch``,
    ``allow_rank5``, ``arch``, ``arch_kwargs``, ``trust_pickle``, ``simplify``, …)."""
    from .pipeline import ExportOptions, run_export

    shapes = _shapes(input_shape)
    with tempfile.TemporaryDirectory(prefix="edge3d-api-") as scratch:
        path = Path(model) if isinstance(model, (str, Path)) else _saved_module(model, shapes, Path(scratch))
        opts = ExportOptions(model=path, out=Path(out), target=target, precision=precision,
                             opset=opset or DEFAULT_OPSET, opset_explicit=opset is not None, force=force,
                             input_shapes=shapes, **_options(ExportOptions, options))
        manifest, _ = run_export(opts)
    return Bundle(Path(out), manifest)


def lower(source, out, *, input_shape=None, force: bool = False, **options) -> LoweredFile:
    """Lower the ONNX file ``source`` to the rank-4 ONNX file ``out`` and verify it, as `edge3d
    lower` does."""
    from .pipeline import ExportOptions, run_lower

    opts = ExportOptions(model=Path(source), out=Path(out), force=force, input_shapes=_shapes(input_shape),
                         **_options(ExportOptions, options))
    result = run_lower(Path(source), Path(out), opts)
    report = result.report.to_dict()  # type: ignore[attr-defined]  # a passes.LoweringReport
    return LoweredFile(Path(out), report, result.verification.to_dict())


def lint(path, *, max_rank: int = 4, target: str | None = None):
    """Ranks (and a target profile's rules) of an ONNX file, as `edge3d lint` finds them; the
    result's ``findings`` and ``issues`` are empty for a clean model, ``exit_code`` is the CLI's."""
    from .linting import lint_file
    from .targets import load_target

    result = lint_file(Path(path), max_rank, load_target(target) if target else None)
    if result.error:
        raise InputError(result.error)
    return result


def bench(bundle, *, runtime: str = "ort", iters: int | None = 50, warmup: int = 5, **options) -> dict:
    """Time a bundle's lowered model against its 5D original, as `edge3d bench` does; returns the
    report (the CLI's ``--format json``)."""
    from .timing.run import BenchOptions, run_bench

    return run_bench(BenchOptions(Path(bundle), runtime=runtime, iters=iters, warmup=warmup,
                                  **_options(BenchOptions, options)))
