"""`edge3d export` and `edge3d lower`: load, export to ONNX, lower to rank 4, check, verify, write.

Every check runs before anything is written; the bundle folder (or output file) appears whole
or not at all.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from onnx import __version__ as onnx_version
from onnx.defs import onnx_opset_version

from .atomic import (
    BUNDLE_FORMAT,
    atomic_dir,
    atomic_files,
    check_destination,
    check_files,
    scratch_dir,
    sha256,
    write_json,
)
from .errors import CheckFailed, InputError
from .frontend.load import LoadedModel, detect_kind, load_model
from .frontend.to_onnx import DEFAULT_OPSET, MIN_OPSET, export_to_onnx, prepare
from .layouts import adapt_runner
from .linting import LintResult, lint_model
from .model_store import THRESHOLD, DiskStore, MemoryStore
from .onnx_tensors import default_opset, graph_inputs
from .runtimes.base import IOSpec, SessionCache
from .runtimes.ort_runtime import OrtSession
from .verify import Runner, Verification, ort_runner, recorded_runner, seeded_inputs, torch_runner, verify
from .versions import tool_versions

Step = Callable[[str], AbstractContextManager]


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
    allow_rank5: bool = False
    dynamic_batch: bool = False
    conv_strategy: str = "auto"
    block: str | None = None  # rewrite eligible Conv3d into this block before lowering
    stride_mode: str = "aligned"
    calib: str | None = "random"
    calib_clips: int = 8
    finetune_steps: int = 0
    precision: str | None = None  # None: the target's default
    tvm_trials: int = 0  # tune the TVM library's kernels with this many timed candidates


@dataclass
class Lowered:
    model: object  # onnx.ModelProto, rank ≤ 4 unless allow_rank5 let some through
    report: object  # passes.LoweringReport
    lint: LintResult
    verification: Verification
    notes: list[str]


@contextlib.contextmanager
def _no_progress(_label: str):
    yield


def run_export(opts: ExportOptions, step: Step = _no_progress) -> tuple[dict, Lowered]:
    """Run the whole export; returns the manifest and the result (its model a skeleton whose
    weights were in the export's scratch folder). Raises Edge3dError on a failed check."""
    return _export(opts, step)


def _export(opts: ExportOptions, step: Step) -> tuple[dict, Lowered]:
    from .targets import all_targets, load_target

    target = load_target(opts.target)
    precision = opts.precision or target.default_precision
    if precision not in target.precisions:
        others = [t.name for t in all_targets() if precision in t.precisions]
        raise InputError(f"{target.name} builds {', '.join(target.precisions)}, not {precision}; pass --precision "
                         f"{target.default_precision}" + (f", or a target that builds {precision} ({', '.join(others)})"
                                                           if others else ""))
    if opts.tvm_trials:
        _check_tunable(target)
    from .bundle.artifacts import require_all

    require_all(target, precision)
    check_destination(Path(opts.out), opts.force, (Path(opts.model),))
    _check_disk_space(Path(opts.out), Path(opts.model), len(target.artifacts))
    # the models between steps keep their weights in `work` (DiskStore); sessions close before it goes.
    # They check, and only the timing session in `_artifacts` keeps ONNX Runtime's arena
    with scratch_dir(Path(opts.out)) as work, SessionCache(partial(OrtSession, arena=False)) as sessions:
        return _export_steps(opts, step, target, precision, DiskStore(work), sessions)


def _export_steps(opts: ExportOptions, step: Step, target, precision: str, store: DiskStore,
                  sessions: SessionCache) -> tuple[dict, Lowered]:
    with step("Loading model"):
        loaded = load_model(opts.model, arch=opts.arch, arch_kwargs=opts.arch_kwargs,
                            trust_pickle=opts.trust_pickle, input_shapes=opts.input_shapes)
    source_model, block_report = loaded, None
    if opts.block:
        with step(f"Rewriting Conv3d layers into {opts.block} blocks"):
            loaded, block_report = _rewrite(loaded, opts)
    with step("Exporting to ONNX"):
        exported = export_to_onnx(loaded, opts.opset, opts.opset_explicit, opts.dynamic_batch)
        exported.model = store.put(exported.model, "exported")  # from here on, the weights are on disk
        loaded.onnx_model = None
    from .bundle.artifacts import plan

    reference = None
    if loaded.kind != "onnx" and block_report is None and not plan(target, precision):
        # PyTorch is needed only as verification's reference: its outputs now, then its weights go
        with step("Running the PyTorch model"):
            reference = _recorded_reference(loaded, exported.model, opts, store)
        loaded.release_torch()
    with step("Checking and simplifying"):
        original = prepare(exported.model, simplify=opts.simplify, store=store, name="exported")
    _check_artifact_inputs(original, target, precision)
    result = lower_and_verify(loaded, original, opts, step, target, sessions, store, reference)
    if block_report is not None:
        with step("Measuring fidelity to the original model"):
            block_report["fidelity_to_original"] = _fidelity(source_model, result, opts, sessions, store)
        if not plan(target, precision):  # no artifact is checked against PyTorch either
            loaded.release_torch()
            source_model.release_torch()

    with atomic_dir(Path(opts.out), opts.force, (Path(opts.model),)) as scratch:
        onnx_path = scratch / "model.onnx"
        for written in store.outputs():  # the lowered model, written whole by lower_and_verify
            written.rename(scratch / written.name)
        artifacts = _artifacts(target, precision, scratch, loaded, original, result, opts, step, sessions, store)
        with step("Writing bundle"):
            manifest = _manifest(opts, loaded, exported, result, onnx_path)
            manifest["target"] = {"name": target.name, "description": target.description, "precision": precision,
                                  "tensorrt": dict(target.tensorrt) or None, "rknn": dict(target.rknn) or None}
            manifest["artifacts"] = artifacts
            if block_report is not None:
                manifest["block_rewrite"] = block_report
            manifest["target_lint"] = [vars(i) for i in result.lint.issues]
            write_json(scratch / "manifest.json", manifest)
            from .bundle.report_md import write_report

            write_report(scratch / "report.md", manifest)
    return manifest, result


def _artifacts(target, precision, bundle: Path, loaded, original, result, opts, step,
               sessions: SessionCache, store: MemoryStore) -> list[dict]:
    """The bundle's model.onnx (ONNX Runtime, fp32: the lowered model's session, which verified
    it) and the target's own artifacts."""
    from .bundle.artifacts import TIMING_BUDGET_S, build_all, plan
    from .clips import calibration_clips
    from .layouts import clip_to_frames
    from .runtimes.base import measure

    layouts = _layouts(result.model, result.report)
    sessions.release(store.source(result.model))  # timed as deployed, arena included: one session at a time
    session = OrtSession(store.source(result.model))
    specs = _graph_inputs(original)
    shapes = _input_shapes(loaded, specs)
    with step("Timing model.onnx (ONNX Runtime)"):
        inputs = seeded_inputs(shapes, [spec.dtype for spec in specs], opts.seed)
        feeds = {spec.name: clip_to_frames(x) if layout == "frames" else x
                 for spec, x, layout in zip(session.inputs, inputs, layouts[0])}
        del inputs  # the frames are a copy: the clip need not stay beside them while the model runs
        base = {"runtime": "ort", "precision": "fp32", "files": ["model.onnx"], "built_here": True,
                "runnable_here": True, "verification": result.verification.to_dict(),
                "latency": measure(session, feeds, warmup=2, iters=10, budget_s=TIMING_BUDGET_S)}
    session.close()
    if not plan(target, precision):
        return [base]
    # calibration clips, then held-out ones from the same source: a quantised artifact is checked
    # on clips it was not calibrated on (the calibration ones where a folder has no more)
    pool = [c.numpy() for c in calibration_clips(opts.calib or "random", tuple(shapes[0]),
                                                 opts.calib_clips + HELDOUT_CLIPS, opts.seed)]
    clips, heldout = pool[:opts.calib_clips], pool[opts.calib_clips:] or None
    reference = ort_runner(sessions(store.source(original))) if loaded.kind == "onnx" else \
        torch_runner(loaded.torch_callable)
    return [base] + build_all(target, precision, bundle, reference, clips, layouts, step, opts.verify_samples,
                              opts.seed, shapes, session.inputs[0].name,
                              {"trials": opts.tvm_trials, "original": store.source(original),
                               "original_calib": [{specs[0].name: c} for c in clips]},
                              output_names=[o.name for o in session.outputs],
                              reference_ms=base["latency"]["median_ms"], heldout=heldout)


def _check_disk_space(out: Path, model: Path, artifacts: int) -> None:
    """A bundle holds the lowered model and one file per artifact, each about the size of the
    model's weights, and the export's scratch folder four versions of the model: refuse up front
    where the disk cannot hold that, the bundle twice over."""
    import shutil

    folder = next((p for p in [out.resolve(), *out.resolve().parents] if p.exists()), None)
    if folder is None or not model.is_file():
        return
    need = (4 + 2 * (1 + artifacts)) * model.stat().st_size
    free = shutil.disk_usage(folder).free
    if free < need:
        raise InputError(f"{folder} has {free / 2**20:.0f} MiB free; the bundle of {model.name} needs about "
                         f"{need / 2**20:.0f} MiB: free some space or choose another -o")


HELDOUT_CLIPS = 16  # quantised artifacts are checked on these: one top-1 flip in 16 is 94%, interval 72–99%


def _check_tunable(target) -> None:
    from .runtimes.tvm_runtime import runnable_here

    if "tvm" not in target.artifacts:
        raise InputError(f"--tvm-trials tunes a TVM library, which the {target.name} target does not build; "
                         "use --target x86")
    if not runnable_here(dict(target.tvm["target"])):
        raise InputError(f"--tvm-trials times candidate kernels on this CPU, so it cannot tune the {target.name} "
                         "library here; use --target x86, or tune on the device")


def _rewrite(loaded: LoadedModel, opts: ExportOptions):
    """The block rewrite as an export step: the rewritten model becomes the one exported."""
    import torch

    from .blocks.rewrite import rewrite_loaded

    module, report, example = rewrite_loaded(loaded, opts.block, opts.stride_mode, opts.calib,
                                             opts.calib_clips, opts.finetune_steps)
    if not isinstance(module, torch.nn.Module):  # an ONNX graph, rewritten as a graph
        return LoadedModel(loaded.path, "onnx", onnx_model=module, input_shapes=[tuple(example.shape)]), \
            report.to_dict()
    exported = torch.export.export(module, (example,))
    return LoadedModel(loaded.path, "exported-program", exported=exported, input_shapes=[tuple(example.shape)]), \
        report.to_dict()


def _fidelity(source: LoadedModel, result: Lowered, opts: ExportOptions, sessions: SessionCache,
              store: MemoryStore) -> dict:
    """How far the lowered, rewritten model is from the original model (reported, not checked:
    the blocks are an approximation by design)."""
    session = sessions(store.source(result.model))
    candidate = adapt_runner(ort_runner(session), *_layouts(result.model, result.report))
    reference = ort_runner(sessions(source.onnx_model)) if source.kind == "onnx" else \
        torch_runner(source.torch_callable)
    shapes = source.input_shapes or [spec.shape for spec in _graph_inputs(source.onnx_model)]
    check = verify(reference, candidate, shapes, names=[o.name for o in session.outputs], samples=opts.verify_samples,
                   seed=opts.seed + 1)
    return {"samples": check.samples, "outputs": [vars(o) for o in check.outputs]}


def run_lower(source: Path, out: Path, opts: ExportOptions, step: Step = _no_progress) -> Lowered:
    """Lower an ONNX file from any framework; verified against ONNX Runtime on the source."""
    check_files([out], opts.force)
    kind = detect_kind(Path(source)) if Path(source).is_file() else "onnx"  # load_model reports a missing file
    if kind != "onnx":  # told from the first bytes: a PyTorch file is not even opened here
        raise InputError(f"{source} is a {kind} file, not ONNX; use `edge3d export` for PyTorch models")
    with scratch_dir(out) as work:
        store = DiskStore(work, out.name)
        with step("Loading model"):
            loaded = load_model(source, input_shapes=opts.input_shapes)
        with step("Checking and simplifying"):  # export_to_onnx applies --input-shape to the file
            source_model = store.put(export_to_onnx(loaded).model, "source")  # from here on, the weights are on disk
            loaded.onnx_model = None
            original = prepare(source_model, simplify=opts.simplify, store=store, name="source")
        result = lower_and_verify(loaded, original, opts, step, store=store)
        with step("Writing model"), atomic_files(out, opts.force) as scratch:
            for written in store.outputs():  # the lowered model, written whole by lower_and_verify
                written.rename(scratch / written.name)
    return result


def lower_and_verify(loaded: LoadedModel, original, opts: ExportOptions, step: Step, target=None,
                     sessions: SessionCache | None = None, store: MemoryStore | None = None,
                     reference: Runner | None = None) -> Lowered:
    """Lower, lint (rank, and the target profile's rules when one is given) and verify.
    ``sessions``: the caller's cache, whose sessions outlive this call; without one, the
    sessions built here are closed on return. ``store``: where ``original`` (and then the
    lowered model) keep their weights; without one, models stay whole in memory."""
    store = store or MemoryStore()
    if sessions is None:
        with SessionCache(partial(OrtSession, arena=False)) as own:
            return lower_and_verify(loaded, original, opts, step, target, own, store, reference)
    from .passes import LoweringError, lower_model
    from .passes.live_memory import live_memory_of

    notes: list[str] = []
    opset = default_opset(original)
    if opset < MIN_OPSET:
        raise InputError(f"the model uses opset {opset}; edge3d lowers opset {MIN_OPSET} or newer: convert it with "
                         f"onnx.version_converter or export it again with --opset {DEFAULT_OPSET}")
    if opset > onnx_opset_version():
        raise InputError(f"the model uses opset {opset}, newer than the {onnx_opset_version()} this onnx "
                         f"{onnx_version} knows; export it with --opset {DEFAULT_OPSET} or upgrade onnx")
    _check_static_clips(original)
    with step("Lowering to rank 4"):
        try:
            on_disk = isinstance(store, DiskStore)  # the new weights go straight to their file
            save_to = store.reserve("lowered") if on_disk else None
            lowered, report = lower_model(original, allow_high_rank=opts.allow_rank5,
                                          conv_strategy=opts.conv_strategy, shapes_inferred=True,
                                          allowed_ops=target.allowed_ops if target is not None else None,
                                          op_limits=target.op_limits if target is not None else None,
                                          chunk_convs=target.lowering.get("chunked_conv", True) if target else True,
                                          weights_dir=str(store.folder) if store.folder else None,
                                          save_to=save_to, size_threshold=THRESHOLD)
        except LoweringError as exc:
            raise CheckFailed(f"{exc} (nothing was written; --allow-rank5 keeps these nodes)") from None
        lowered = store.adopt(lowered, save_to) if save_to else store.put(lowered, "lowered")
        lowered = prepare(lowered, simplify=opts.simplify, store=store, name="lowered")
        if isinstance(store, DiskStore):
            store.write_output(lowered)
    with step("Linting ranks"):  # its own shape inference: the proof of rank 4 trusts no earlier step
        lint = lint_model(lowered, max_rank=4, target=target)
    report.activation_memory["lowered"] = live_memory_of(lowered).to_dict()  # prepare's shapes: no second inference
    if lint.findings and not opts.allow_rank5:
        names = ", ".join(t.name for t in lint.findings[:5])
        raise CheckFailed(f"{len(lint.findings)} tensors above rank 4 remain after lowering ({names}); "
                          "nothing was written")
    _check_no_fallback(lint, target)
    if report.unsupported:
        notes.append(f"{len(report.unsupported)} node(s) kept above rank 4 (--allow-rank5): "
                     + "; ".join(map(str, report.unsupported)))
    with step("Verifying against the original"):
        verification = _verify(loaded, original, lowered, report, opts, sessions, store, reference)
    if not verification.passed:
        raise CheckFailed("verification failed: " + "; ".join(verification.failures) + " (nothing was written)")
    return Lowered(lowered, report, lint, verification, notes)


def _check_no_fallback(lint, target) -> None:
    """On a profile whose rejected layers cannot run elsewhere (no GPU fallback), a bundle with
    such layers would not build on the device: fail now, naming them."""
    if target is None or target.fallback:
        return
    layers = [i for i in lint.issues if i.node]  # model-wide findings (the opset) are not layers
    if layers:
        named = "; ".join(f"{i.node} ({i.op}): {i.message}" for i in layers[:5])
        more = f" and {len(layers) - 5} more" if len(layers) > 5 else ""
        raise CheckFailed(f"{len(layers)} layer(s) cannot run on {target.name}, which has no fallback: {named}{more}; "
                          f"export for a profile with a fallback (e.g. --target jetson) or change those layers "
                          "(nothing was written)")


WHOLE_FILE_LIMIT = 1_800_000_000  # bytes: a larger model is written with its weights beside it (protobuf's 2 GiB)


def save_onnx(model, path: Path) -> None:
    import onnx

    from .frontend.to_onnx import message_size

    if message_size(model) > WHOLE_FILE_LIMIT:
        data = path.with_name(path.name + ".data")
        onnx.save(model, str(path), save_as_external_data=True, location=data.name)
        umask = os.umask(0)
        os.umask(umask)
        data.chmod(0o666 & ~umask)  # onnx creates it private; it belongs with model.onnx, readable alike
    else:
        onnx.save(model, str(path))


def _layouts(model, report) -> tuple[list[str], list[str], list]:
    """Input layouts, output layouts and the outputs' original shapes (``adapt_runner``'s arguments)."""
    layout = lambda name: report.layouts.get(name, {}).get("layout", "plain")  # noqa: E731
    return ([layout(v.name) for v in graph_inputs(model.graph)],
            [layout(v.name) for v in model.graph.output],
            [report.layouts.get(v.name, {}).get("original_shape") for v in model.graph.output])


def _check_artifact_inputs(original, target, precision: str) -> None:
    """The target artifacts are calibrated, verified and timed on one float32 clip; say so before
    lowering a model with other inputs rather than after."""
    from .bundle.artifacts import plan

    if not plan(target, precision):
        return
    inputs = _graph_inputs(original)
    others = [f"{spec.name!r} is {spec.dtype}" for spec in inputs if spec.dtype != np.float32]
    if others or len(inputs) > 1:
        raise InputError(f"the {target.name} target's artifacts are built and checked for one float32 clip input, "
                         f"but the model has {len(inputs)} input(s){': ' + ', '.join(others) if others else ''}; "
                         "export it with --target onnx (the bundle's model.onnx takes them as they are)")


def _check_static_clips(model) -> None:
    """The lowering folds T into the batch, so every clip input needs static C, T, H and W (a
    symbolic batch is kept); say so before lowering rather than fail inside a rule."""
    for spec in _graph_inputs(model):
        if len(spec.shape) >= 5 and any(not isinstance(d, int) or d <= 0 for d in spec.shape[1:]):
            dims = ",".join(str(d) if isinstance(d, int) and d > 0 else "?" for d in spec.shape)
            raise InputError(f"input {spec.name!r} has symbolic dims ({dims}); pass --input-shape with every "
                             "dim after the batch fixed, e.g. 1,3,16,112,112")


def _graph_inputs(model) -> list[IOSpec]:
    """The model's inputs as its graph declares them: names, shapes and dtypes need no session."""
    return [IOSpec.from_value_info(v) for v in graph_inputs(model.graph)]


def _input_shapes(loaded: LoadedModel, inputs: list[IOSpec]) -> list[tuple[int, ...]]:
    if loaded.input_shapes and all(d > 0 for s in loaded.input_shapes for d in s):
        return loaded.input_shapes
    shapes = [spec.shape for spec in inputs]
    if all(isinstance(d, int) and d > 0 for s in shapes for d in s):
        return shapes
    raise InputError(f"{loaded.path} has symbolic input dims {shapes}; pass --input-shape for each input")


def _verify(loaded: LoadedModel, original, lowered, report, opts: ExportOptions,
            sessions: SessionCache, store: MemoryStore, reference: Runner | None = None) -> Verification:
    """The lowered model against the 5D ONNX model it was lowered from (the lowering's own error)
    and, for a PyTorch source, against PyTorch (``reference``, or the loaded model), relative to
    what that 5D model achieves there. Each model runs once per sample."""
    inputs = _graph_inputs(original)
    shapes = _input_shapes(loaded, inputs)
    dtypes = [spec.dtype for spec in inputs]
    if reference is None and loaded.kind != "onnx":
        reference = torch_runner(loaded.torch_callable)
    plain = ort_runner(sessions(store.source(original)))
    if store.folder is not None:
        # each reference's outputs first, one model at a time, then the plain model's session
        # goes: the lowered model never runs beside another model's weights and activations
        plain = recorded_runner(plain, _samples(shapes, dtypes, opts), store.folder / "plain-outputs")
        sessions.release(store.source(original))
        if reference is not None and not getattr(reference, "recorded", False):
            reference = recorded_runner(reference, _samples(shapes, dtypes, opts), store.folder / "reference-outputs")
    session = sessions(store.source(lowered))
    candidate = adapt_runner(ort_runner(session), *_layouts(lowered, report))
    kwargs = dict(dtypes=dtypes, names=[o.name for o in session.outputs], samples=opts.verify_samples, seed=opts.seed)
    if reference is None:  # the source is the 5D ONNX model: one reference, both checks in one
        return verify(plain, candidate, shapes, lowering=True, **kwargs)
    return verify(reference, candidate, shapes, plain=plain, **kwargs)


def _samples(shapes, dtypes, opts: ExportOptions):
    """The verification inputs, made one at a time as they are used."""
    return (seeded_inputs(shapes, dtypes, opts.seed + i) for i in range(opts.verify_samples))


def _recorded_reference(loaded: LoadedModel, exported, opts: ExportOptions, store: DiskStore) -> Runner:
    """PyTorch's outputs on the verification inputs, recorded, so that its model can go before
    the ONNX models are simplified, lowered and run."""
    inputs = _graph_inputs(exported)
    shapes, dtypes = _input_shapes(loaded, inputs), [spec.dtype for spec in inputs]
    return recorded_runner(torch_runner(loaded.torch_callable), _samples(shapes, dtypes, opts),
                           store.root / "reference-outputs")


def io_entries(values, layouts: dict) -> list[dict]:
    from .onnx_tensors import shape_of

    entries = []
    for v in values:
        shape, dtype = shape_of(v)
        shape = [d if d is not None else "batch" for d in shape] if shape else None
        layout = layouts.get(v.name, {"layout": "plain", "original_shape": shape})
        entries.append({"name": v.name, "shape": shape, "dtype": dtype, "layout": layout["layout"],
                        "original_shape": [d if d is not None else "batch" for d in layout["original_shape"]]
                        if layout["original_shape"] else None})
    return entries


def _manifest(opts, loaded, exported, result: Lowered, onnx_path) -> dict:
    model = result.model
    return {
        "format": BUNDLE_FORMAT,
        "format_version": 1,
        "source": {"path": str(loaded.path), "kind": loaded.kind, "sha256": sha256(loaded.path)},
        "model": {
            "file": onnx_path.name,
            "sha256": sha256(onnx_path),
            "opset": exported.opset,
            "exporter": exported.exporter,
            "simplified": opts.simplify,
            "max_rank": result.lint.highest_rank,
            "tensors_above_rank4": len(result.lint.findings),
            "dynamic_batch": opts.dynamic_batch,
        },
        "inputs": io_entries(graph_inputs(model.graph), result.report.layouts),
        "outputs": io_entries(model.graph.output, result.report.layouts),
        "rewrite": {"lowered": True, "conv_strategy": opts.conv_strategy, **result.report.to_dict()},
        # outputs/tolerance: against the reference; lowering: against the 5D ONNX model;
        # plain_export: that 5D model against PyTorch (null for an ONNX source)
        "verification": {"reference": "pytorch" if loaded.kind != "onnx" else "onnxruntime (source model)",
                         **result.verification.to_dict()},
        "notes": exported.notes + result.notes,
        "tools": tool_versions(),
    }
