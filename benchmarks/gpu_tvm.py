"""TVM on a CUDA GPU: the plain 5D ONNX export vs edge3d's lowered rank-4 ONNX, same model, same input.

For each example model: the plain 5D ONNX export (exported and simplified exactly as the export
pipeline does before lowering) and edge3d's lowered rank-4 model (``lower_and_verify``, so the
lowered model has passed edge3d's own verification), both compiled with TVM the way
``TvmRuntime.build`` compiles them (Relax ``from_onnx`` + ``tvm.compile``), for
``{"kind": "cuda", "arch": "sm_XY", "host": {"kind": "llvm"}}`` with XY read from the GPU. Each
library runs on ``tvm.cuda(0)``; its outputs are compared (relative L2) with ONNX Runtime (CPU)
running the 5D model on the same random clip; the lowered library is fed that clip as frames
(``clip_to_frames``) and its frame-layout outputs are turned back into clips before the
comparison. Latency: warm-up, then the 5D and lowered libraries alternate run by run (so that
clock and thermal drift hit both alike), each run timed from the call to the end of
``Device.sync()``; the inputs are already on the GPU. Reported: median and p90 per library and
the ratio lowered/5D of the medians.

    python benchmarks/gpu_tvm.py                         # r3d18 x3d c3d shufflenet3d, small configs
    python benchmarks/gpu_tvm.py --full --models r3d18   # full-size configuration
    python benchmarks/gpu_tvm.py --json out.json --iters 100
    python benchmarks/gpu_tvm.py --export-only DIR       # only write the ONNX pairs (no GPU needed) ...
    python benchmarks/gpu_tvm.py --onnx-dir DIR          # ... and compile and time those elsewhere

Without a CUDA device (or without TVM) it prints "no CUDA device" and exits 0. ``--device cpu``
runs the same comparison with an ``llvm`` target, to check the script on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_MODELS = ("r3d18", "x3d", "c3d", "shufflenet3d")
KINDS = ("5d", "lowered")


# --- the ONNX pair ---------------------------------------------------------------------------------

def export_pair(name: str, small: bool, dest: Path, conv_strategy: str = "auto") -> dict:
    """Write ``dest/STEM-5d.onnx`` and ``dest/STEM-lowered.onnx`` (STEM: ``NAME-small`` or
    ``NAME-full``) with edge3d's own functions, and ``dest/STEM.json``: the input shape and the
    lowered model's input and output layouts."""
    import onnx

    from edge3d.frontend.load import load_model
    from edge3d.frontend.to_onnx import export_to_onnx, prepare
    from edge3d.pipeline import ExportOptions, _layouts, _no_progress, lower_and_verify, save_onnx
    from examples.save_model import save

    dest.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / f"{name}.pt"
        shape = save(name, model_path, "torchscript", small=small)
        loaded = load_model(model_path, input_shapes=[shape])
        original = prepare(export_to_onnx(loaded).model)
        opts = ExportOptions(model=model_path, out=Path(tmp) / "unused", input_shapes=[shape], verify_samples=2,
                             conv_strategy=conv_strategy)
        result = lower_and_verify(loaded, original, opts, _no_progress)
    paths = pair_paths(dest, name, small)
    onnx.save(original, str(paths["5d"]))
    save_onnx(result.model, paths["lowered"])
    inputs, outputs, _ = _layouts(result.model, result.report)
    meta = {"model": name, "small": small, "conv_strategy": conv_strategy, "input_shape": list(shape),
            "input_layouts": inputs, "output_layouts": outputs, "export_s": time.perf_counter() - start,
            "edge3d_max_rel_l2": max(o.rel_l2 for o in result.verification.outputs)}
    meta_path(dest, name, small).write_text(json.dumps(meta, indent=2))
    return meta


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def stem(name: str, small: bool) -> str:
    return f"{name}-{'small' if small else 'full'}"


def meta_path(folder: Path, name: str, small: bool) -> Path:
    return folder / f"{stem(name, small)}.json"


def pair_paths(folder: Path, name: str, small: bool) -> dict[str, Path]:
    return {kind: folder / f"{stem(name, small)}-{kind}.onnx" for kind in KINDS}


# --- TVM -------------------------------------------------------------------------------------------

def cuda_device():
    """(tvm.cuda(0), "sm_XY", description) or None where there is no usable CUDA device."""
    try:
        import tvm
    except ImportError:
        return None
    try:
        dev = tvm.cuda(0)
        if not dev.exist:
            return None
        arch = "sm_" + dev.compute_version.replace(".", "")
        return dev, arch, f"{dev.device_name} ({arch})"
    except Exception:  # noqa: BLE001 - a CUDA runtime that cannot load is no device either
        return None


def torch_arch() -> str | None:
    """The arch as torch reads it (a cross-check of TVM's reading), where torch sees a GPU."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return f"sm_{major}{minor}"
    except Exception:  # noqa: BLE001
        pass
    return None


def compile_library(onnx_path: str, spec: dict, so_path: str, quiet: bool = True) -> float:
    """Compile one ONNX file as ``TvmRuntime.build`` does and export the library; returns seconds.
    Runs in a worker process, so that the libraries of several models compile side by side."""
    import onnx
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from edge3d.log import native_output_muted

    start = time.perf_counter()
    muted = native_output_muted((2,)) if quiet else _null()
    with muted:  # TVM's C++ log warns about every Gather it compiles
        module = from_onnx(onnx.load(onnx_path), keep_params_in_input=False)
        executable = tvm.compile(module, target=tvm.target.Target(spec))
        executable.export_library(so_path)
    return time.perf_counter() - start


def _described(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"


def _compile_job(job):
    """(key, seconds, error, CUDA compiler). Where NVRTC (TVM's default) fails and no compiler
    was chosen, the library is compiled once more with nvcc, and the note says why."""
    key, onnx_path, spec, so_path, quiet = job
    compiler = os.environ.get("TVM_CUDA_COMPILE_MODE", "nvrtc") if spec["kind"] == "cuda" else "-"
    try:
        return key, compile_library(onnx_path, spec, so_path, quiet), None, compiler
    except Exception as exc:  # noqa: BLE001 - reported per library, the others go on
        first = f"{_described(exc)}\n{traceback.format_exc(limit=3)}"
        if spec["kind"] != "cuda" or "TVM_CUDA_COMPILE_MODE" in os.environ:
            return key, None, first, compiler
    os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"
    try:
        return key, compile_library(onnx_path, spec, so_path, quiet), None, f"nvcc (nvrtc failed: {first})"
    except Exception as exc:  # noqa: BLE001
        return key, None, f"nvrtc: {first}\nnvcc: {_described(exc)}", "nvcc"
    finally:
        del os.environ["TVM_CUDA_COMPILE_MODE"]


def compile_all(jobs: list[tuple], workers: int) -> dict:
    """key -> (seconds, error, CUDA compiler); with workers > 1 in spawned processes."""
    if workers <= 1:
        return {key: rest for key, *rest in map(_compile_job, jobs)}
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        return {key: rest for key, *rest in pool.map(_compile_job, jobs)}


class Library:
    """A compiled library loaded on a device, with its inputs already there."""

    def __init__(self, so_path: Path, dev, feeds: list[np.ndarray]):
        import tvm
        from tvm import relax

        self.dev = dev
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(so_path)), dev)
        self.main = self.vm["main"]
        self.args = [tvm.runtime.tensor(np.ascontiguousarray(x), device=dev) for x in feeds]

    def outputs(self) -> list[np.ndarray]:
        out = self.main(*self.args)
        outs = list(out) if isinstance(out, (list, tuple)) or type(out).__name__ == "Array" else [out]
        return [o.numpy() for o in outs]

    def timed_run(self) -> float:
        start = time.perf_counter()
        self.main(*self.args)
        self.dev.sync()
        return time.perf_counter() - start


# --- comparison ------------------------------------------------------------------------------------

def rel_l2(expected, got) -> float:
    expected = np.asarray(expected, np.float64)
    got = np.asarray(got, np.float64).reshape(expected.shape)
    return float(np.linalg.norm(expected - got) / max(np.linalg.norm(expected), 1e-30))


def ort_outputs(path: Path, feeds: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), feeds)})


def inputs_for(meta: dict, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The random clip (one per model input) and the lowered model's feeds made from it."""
    from edge3d.layouts import clip_to_frames

    clip = np.random.default_rng(seed).standard_normal(meta["input_shape"]).astype(np.float32)
    clips = [clip]
    if len(meta["input_layouts"]) != len(clips):
        raise ValueError(f"{meta['model']} has {len(meta['input_layouts'])} inputs; this benchmark feeds one clip")
    feeds = [clip_to_frames(x) if layout == "frames" else x for x, layout in zip(clips, meta["input_layouts"])]
    return clips, feeds


def as_clips(outputs: list[np.ndarray], layouts: list[str], batch: int) -> list[np.ndarray]:
    from edge3d.layouts import frames_to_clip

    return [frames_to_clip(y, batch) if layout == "frames" else y for y, layout in zip(outputs, layouts)]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def bench_model(name: str, meta: dict, paths: dict[str, Path], libs: dict[str, Path], dev, warmup: int,
                iters: int, seed: int) -> dict:
    clips, feeds = inputs_for(meta, seed)
    batch = meta["input_shape"][0]
    reference = ort_outputs(paths["5d"], clips)
    ort_lowered = as_clips(ort_outputs(paths["lowered"], feeds), meta["output_layouts"], batch)
    loaded = {"5d": Library(libs["5d"], dev, clips), "lowered": Library(libs["lowered"], dev, feeds)}
    got = {"5d": loaded["5d"].outputs(),
           "lowered": as_clips(loaded["lowered"].outputs(), meta["output_layouts"], batch)}
    errors = {kind: max(rel_l2(r, g) for r, g in zip(reference, got[kind])) for kind in KINDS}
    for _ in range(warmup):
        for lib in loaded.values():
            lib.timed_run()
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for i in range(iters):
        for kind in (KINDS if i % 2 == 0 else KINDS[::-1]):
            times[kind].append(loaded[kind].timed_run() * 1e3)
    row = {"model": name, "small": meta["small"], "input": meta["input_shape"],
           "rel_l2_5d_tvm_vs_ort": errors["5d"], "rel_l2_lowered_tvm_vs_ort": errors["lowered"],
           "rel_l2_lowered_ort_vs_5d_ort": max(rel_l2(r, g) for r, g in zip(reference, ort_lowered)),
           "edge3d_verify_max_rel_l2": meta.get("edge3d_max_rel_l2"), "iters": iters, "warmup": warmup}
    for kind in KINDS:
        row[f"median_ms_{kind}"] = statistics.median(times[kind])
        row[f"p90_ms_{kind}"] = percentile(times[kind], 90)
        row[f"min_ms_{kind}"] = min(times[kind])
    row["ratio_lowered_over_5d"] = row["median_ms_lowered"] / row["median_ms_5d"]
    del loaded
    return row


# --- main ------------------------------------------------------------------------------------------

def print_table(rows: list[dict], failures: list[dict], title: str) -> None:
    header = ("model", "rel-L2 5D-TVM vs ORT", "rel-L2 lowered-TVM vs ORT", "median ms 5D", "median ms lowered",
              "ratio lowered/5D", "p90 ms 5D", "p90 ms lowered")
    lines = [header] + [(r["model"], f"{r['rel_l2_5d_tvm_vs_ort']:.2e}", f"{r['rel_l2_lowered_tvm_vs_ort']:.2e}",
                         f"{r['median_ms_5d']:.3f}", f"{r['median_ms_lowered']:.3f}",
                         f"{r['ratio_lowered_over_5d']:.3f}", f"{r['p90_ms_5d']:.3f}",
                         f"{r['p90_ms_lowered']:.3f}") for r in rows]
    print(title)
    markdown_table(lines)
    for f in failures:
        print(f"FAILED {f['model']}: {f['error'].splitlines()[0]}")


def common_parser(doc: str, iters: int, what: str) -> argparse.ArgumentParser:
    """The arguments both GPU benchmarks take: models, size, warm-ups, timed runs, seed."""
    from examples.models import EXAMPLES

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=sorted(EXAMPLES))
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--small", dest="small", action="store_true", default=True,
                      help="the small test configurations (default)")
    size.add_argument("--full", dest="small", action="store_false", help="the full-size configurations")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=iters, help=f"timed runs of each {what} (at least 50)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def markdown_table(lines: list[tuple[str, ...]], left: int = 1) -> None:
    """Print rows as a markdown table, the first ``left`` columns left-aligned, the rest right."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for j, line in enumerate(lines):
        print("| " + " | ".join(cell.rjust(w) if i >= left else cell.ljust(w)
                                for i, (cell, w) in enumerate(zip(line, widths))) + " |")
        if j == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__, 100, "library")
    parser.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1),
                        help="libraries compiled side by side (processes)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu: an llvm target on this CPU, to check the script without a GPU")
    parser.add_argument("--arch", help="override the sm_XY read from the GPU")
    parser.add_argument("--onnx-dir", type=Path, help="read the ONNX pairs from here where present (written by "
                        "--export-only) instead of exporting")
    parser.add_argument("--export-only", type=Path, metavar="DIR", help="write the ONNX pairs to DIR and stop")
    parser.add_argument("--json", type=Path, help="write the rows as JSON")
    parser.add_argument("--verbose", action="store_true", help="do not mute TVM's C++ log while compiling")
    parser.add_argument("--time-budget", type=float, help="seconds: time no further model once this is spent")
    args = parser.parse_args(argv)
    if args.iters < 50:
        parser.error("--iters must be at least 50")

    if args.export_only:
        for name in args.models:
            meta = export_pair(name, args.small, args.export_only)
            print(f"exported {name} {meta['input_shape']} in {meta['export_s']:.1f} s", flush=True)
        return 0

    if args.device == "cuda":
        found = cuda_device()
        if found is None:
            print("no CUDA device (tvm.cuda(0) does not exist here, or TVM is not installed): nothing to time")
            return 0
        dev, arch, described = found
        arch = args.arch or arch
        checked = torch_arch()
        if checked and checked != arch and not args.arch:
            print(f"note: TVM reads {arch}, torch reads {checked}; using {arch}")
        spec = {"kind": "cuda", "arch": arch, "host": {"kind": "llvm"}}
    else:
        import tvm

        dev, described = tvm.cpu(0), "this CPU (llvm)"
        spec = {"kind": "llvm"}

    import tvm

    print(f"device: {described}; TVM {tvm.__version__}; target {json.dumps(spec)}; "
          f"CUDA compiler: {os.environ.get('TVM_CUDA_COMPILE_MODE', 'nvrtc')}", flush=True)
    rows, failures = [], []
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        metas, pairs = {}, {}
        for name in args.models:
            folder = args.onnx_dir
            if folder is None or not meta_path(folder, name, args.small).exists():
                folder = work / "onnx"
                print(f"exporting {name} ...", flush=True)
                export_pair(name, args.small, folder)
            metas[name] = json.loads(meta_path(folder, name, args.small).read_text())
            pairs[name] = pair_paths(folder, name, args.small)
        jobs = [((name, kind), str(path), spec, str(work / f"{name}-{kind}.so"), not args.verbose)
                for name in args.models for kind, path in pairs[name].items()]
        start = time.perf_counter()
        compiled = compile_all(jobs, args.jobs)
        print(f"compiled {len(jobs)} libraries in {time.perf_counter() - start:.1f} s "
              f"({args.jobs} side by side)", flush=True)
        for name in args.models:
            if args.time_budget and time.perf_counter() - began > args.time_budget:
                failures.append({"model": name, "error": f"not timed: the --time-budget of {args.time_budget} s "
                                 "was spent"})
                continue
            problems = [f"{kind}: {compiled[(name, kind)][1]}" for kind in KINDS if compiled[(name, kind)][1]]
            if problems:
                failures.append({"model": name, "error": "\n".join(problems)})
                print(f"{name}: compile failed\n" + "\n".join(problems), flush=True)
                continue
            libs = {kind: work / f"{name}-{kind}.so" for kind in KINDS}
            try:
                row = bench_model(name, metas[name], pairs[name], libs, dev, args.warmup, args.iters, args.seed)
            except Exception as exc:  # noqa: BLE001 - one model's failure is reported, the others go on
                failures.append({"model": name, "error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"})
                print(f"{name}: run failed: {type(exc).__name__}: {exc}", flush=True)
                continue
            for kind in KINDS:
                row[f"compile_s_{kind}"], _, row[f"cuda_compiler_{kind}"] = compiled[(name, kind)]
            rows.append(row)
            print(json.dumps(row), flush=True)
    size_label = "small" if args.small else "full-size"
    print_table(rows, failures, f"TVM {tvm.__version__} on {described}, {size_label} configs: median and p90 of "
                f"{args.iters} alternating runs after {args.warmup} warm-ups; rel-L2 against ONNX Runtime (CPU) "
                "on the 5D model")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": described, "tvm": tvm.__version__, "target": spec,
                                         "small": args.small, "rows": rows, "failures": failures}, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
