"""`edge3d bench BUNDLE`: the bundle's model and its original 5D model, timed in one run."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import BUNDLE_FORMAT
from ..errors import InputError, first_line
from ..layouts import clip_to_frames
from .env import environment, peak_rss_mb, tvm_artifact, tvm_tuning_budget
from .measure import Candidate, ratio_interval, run_alternating, streaming, summary

SCHEMA_VERSION = 1


@dataclass
class BenchOptions:
    bundle: Path
    runtime: str = "ort"
    baseline: str = "original"  # "original", "none" or a path to a 5D ONNX model
    warmup: int = 5
    iters: int | None = 50
    duration: float | None = None
    threads: int | None = None
    stream: tuple[int, int, float] | None = None  # window, hop, camera fps
    seed: int = 0
    rpc: tuple[str, int] | None = None  # TVM RPC tracker; the board is chosen by rpc_key
    rpc_key: str | None = None
    trust_pickle: bool = False  # load the bundle's source model even where that runs code from it


def stream_spec(bundle: Path, window: int | None, hop: int | None, camera_fps: float) -> tuple[int, int, float]:
    """Streaming settings: ``window`` frames per clip (default: the bundle's T), a clip every
    ``hop`` new frames (default: the window), from a camera at ``camera_fps``."""
    window = window or read_manifest(bundle)["inputs"][0]["original_shape"][2]
    return window, hop or window, camera_fps


def rpc_target(address: str | None, key: str | None) -> tuple[str, int] | None:
    """The TVM RPC tracker ``--rpc HOST:PORT``; a board is chosen by its tracker ``--key``."""
    if not address:
        return None
    from .rpc import parse_address

    tracker = parse_address(address)
    if not key:
        raise InputError("--rpc needs --key NAME: the tracker key of the board to use")
    return tracker


def read_manifest(bundle: Path) -> dict:
    path = Path(bundle) / "manifest.json"
    if not path.is_file():
        raise InputError(f"{bundle} is not an edge3d bundle (no manifest.json); give the folder `edge3d export` wrote")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({first_line(exc)}); export the bundle again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise InputError(f"{path} is not an edge3d bundle manifest; give the folder `edge3d export` wrote")
    return manifest


def _original_onnx(manifest: dict, baseline: str, work: Path, trust_pickle: bool = False) -> Path | None:
    """The bundle's source model as 5D ONNX. The manifest names the source, so a tampered bundle
    can point anywhere: it is loaded under the same checks as `edge3d export` (``load_model``)."""
    if baseline == "none":
        return None
    if baseline != "original":
        path = Path(baseline)
        if not path.is_file():
            raise InputError(f"--baseline {baseline}: no such file; give 'original', 'none' or a 5D ONNX model")
        return path
    import onnx

    from ..frontend.load import load_model
    from ..frontend.to_onnx import export_to_onnx, prepare
    from ..frontend.trust import Refused

    source = Path(manifest["source"]["path"])
    if not source.is_file():
        raise InputError(f"the bundle's source model {source} is gone; pass --baseline PATH (its 5D ONNX) or none")
    shapes = [tuple(i["original_shape"]) for i in manifest["inputs"]]
    try:
        loaded = load_model(source, trust_pickle=trust_pickle,
                            input_shapes=shapes if all(isinstance(d, int) for s in shapes for d in s) else None)
    except Refused as exc:
        raise Refused(f"the bundle's source model: {exc}; or time the bundle alone with --baseline none") from None
    out = work / "original" / "model.onnx"  # the TVM session reads input names from model.onnx beside it
    out.parent.mkdir()
    onnx.save(prepare(export_to_onnx(loaded, opset=manifest["model"]["opset"]).model), str(out))
    return out


def _remote(model: Path, bundle: Path, manifest: dict, opts: BenchOptions, lowered: bool):
    """A loader for the bundle's TVM library (or the original compiled for the same target) on a board."""
    from ..runtimes.base import onnx_io
    from ..runtimes.tvm_runtime import TvmRuntime
    from ..targets import load_target
    from .rpc import RemoteTvmSession

    art = tvm_artifact(manifest)
    if art is None:
        raise InputError("the bundle has no TVM library; export it with --target x86, arm64 or jetson")
    if lowered:
        library = bundle / art["files"][0]
    else:
        target = load_target(manifest["target"]["name"])
        library = model.parent / TvmRuntime().build(model, target, model.parent, "fp32").files[0]
    inputs, outputs = onnx_io(model)
    tag = "lowered" if lowered else "original"
    return lambda: RemoteTvmSession(library, inputs, outputs, opts.rpc, opts.rpc_key, tag)


def _session(runtime: str, model: Path, bundle: Path, manifest: dict, threads: int | None, lowered: bool):
    """A loader for ``model`` in ``runtime``; TVM compiles the original for this CPU on the fly."""
    from ..runtimes.ort_runtime import OrtSession

    if runtime == "ort":
        return lambda: OrtSession(str(model), threads=threads)
    if runtime == "tvm":
        from ..runtimes.tvm_runtime import TvmRuntime, TvmSession

        if lowered:
            art = tvm_artifact(manifest)
            if art is None or not art["runnable_here"]:
                raise InputError("the bundle has no TVM library for this CPU; export it with --target x86")
            return lambda: TvmSession(bundle / art["files"][0], None)
        if model.name != "model.onnx":
            raise InputError("--runtime tvm compares with the original model only (--baseline original or none)")
        # the original gets the tuning budget the bundle's library had, so like is compared with like
        host = type("HostCPU", (), {"tvm": {"target": {"kind": "llvm"}}})()
        built = TvmRuntime().build(model, host, model.parent, "fp32", trials=tvm_tuning_budget(manifest))
        return lambda: TvmSession(model.parent / built.files[0], None)
    raise InputError(f"--runtime {runtime} cannot run here; available here: ort, tvm")


def _breakdown(candidates: list[Candidate], paths: list, manifest: dict, opts: BenchOptions) -> dict:
    """Per-op time of each candidate: ONNX Runtime's profiler (a session of its own), or the
    TVM VM's instrumentation of the session that was timed."""
    from .breakdown import ort_profile, tvm_profile

    lowered_nodes = [n["node"] for n in manifest.get("rewrite", {}).get("nodes", [])]
    breakdown = {}
    for c, path in zip(candidates, paths):
        if opts.runtime == "ort":
            breakdown[c.name] = ort_profile(path, c.feeds, lowered_nodes, threads=opts.threads)
        else:
            breakdown[c.name] = tvm_profile(c.session, c.feeds)
    return breakdown


def run_bench(opts: BenchOptions, tick=None) -> dict:
    from ..inspect_model import model_stats
    from ..onnx_tensors import load_onnx

    bundle = Path(opts.bundle)
    manifest = read_manifest(bundle)
    if len(manifest["inputs"]) != 1:
        raise InputError("edge3d bench times single-input models")
    entry = manifest["inputs"][0]
    shape = tuple(entry["original_shape"])
    if not all(isinstance(d, int) for d in shape):
        shape = (1,) + tuple(shape[1:])  # a symbolic batch is timed at batch 1
    clip = np.random.default_rng(opts.seed).standard_normal(shape).astype(np.float32)
    frames_layout = entry["layout"] == "frames"
    batch = shape[0]
    frames = shape[2] if frames_layout else 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        original = _original_onnx(manifest, opts.baseline, work, opts.trust_pickle)
        def loader(model, lowered):
            if opts.rpc:
                return _remote(model, bundle, manifest, opts, lowered)
            return _session(opts.runtime, model, bundle, manifest, opts.threads, lowered)

        candidates = [Candidate("lowered", loader(bundle / "model.onnx", True),
                                {entry["name"]: clip_to_frames(clip) if frames_layout else clip}, frames, batch)]
        if original is not None:
            name = load_onnx(original).graph.input[0].name
            candidates.append(Candidate("original", loader(original, False), {name: clip}, frames, batch))
        paths = [bundle / "model.onnx", original]
        try:
            complete = run_alternating(candidates, opts.warmup, opts.iters, opts.duration, tick)
            breakdown = _breakdown(candidates, paths, manifest, opts) if not opts.rpc and complete else {}
        finally:
            for c in candidates:
                if c.session is not None:
                    c.session.close()
        models = {}
        for c, path in zip(candidates, paths):
            stats = model_stats(load_onnx(path))
            models[c.name] = {"file": str(path) if c.name == "lowered" else "original (5D)", "load_s": c.load_s,
                              "cold_ms": c.cold_ms, "latency": summary(c.times_ms, frames, batch),
                              "times_ms": c.times_ms, "params": stats.params, "macs": stats.macs,
                              "max_rank": stats.max_rank}
    report = {
        "schema_version": SCHEMA_VERSION, "bundle": str(bundle), "complete": complete,
        "runtime": "tvm-rpc" if opts.rpc else opts.runtime,
        **({"rpc": {"tracker": f"{opts.rpc[0]}:{opts.rpc[1]}", "key": opts.rpc_key}} if opts.rpc else {}),
        "input": {"name": entry["name"], "clip_shape": list(shape), "layout": entry["layout"]},
        "environment": environment(opts.runtime, opts.threads, manifest),
        "peak_rss_mb": peak_rss_mb(), "models": models, "breakdown": breakdown,
    }
    from ..runtimes.rknn_perf import estimates_of

    estimates = estimates_of(manifest.get("artifacts", []))
    if estimates:  # the vendor compiler's offline estimate, made at export: no board times these here
        report["npu_estimates"] = estimates
    if "original" in models and models["original"]["times_ms"] and models["lowered"]["times_ms"]:
        report["ratio"] = ratio_interval(models["lowered"]["times_ms"], models["original"]["times_ms"])
    if opts.stream:
        window, hop, fps = opts.stream
        report["streaming"] = {name: streaming(m["times_ms"], window, hop, fps) for name, m in models.items()
                               if m["times_ms"]}
    return report
