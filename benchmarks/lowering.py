"""Lowered vs original 5D model, on the examples and the third-party corpus: latency, memory, export.

For each model: save it (examples as TorchScript; corpus models, ``tests/zoo``, as ``.pt2``),
export it with ``edge3d export`` in a child process (wall time and peak RSS), export the 5D
baseline exactly as the export pipeline does before lowering, then, each in a fresh process:

- latency: both models in one process, run alternately so that machine noise hits both alike,
  for at least ``--iters`` rounds and ``--seconds``; in ``--processes`` fresh processes (where a
  small model's buffers land moves its time from process to process); the median of each, their
  ratio lowered/5D and its two-level bootstrap 95% interval (``paired.py``);
  ONNX Runtime CPU always, TVM (``--tvm``: the ``x86`` target's library of each model, both
  built the same way, with ``--tvm-trials`` tuning trials each) when asked;
- memory: the peak RSS (VmHWM) of a process that loads one model in ONNX Runtime with its default
  options and runs it 3 times, and the static activation peak of each model (bytes alive after
  each node in graph order, weights excluded: ``edge3d/passes/live_memory.py``).

    python benchmarks/lowering.py                            # examples (full size) and corpus
    python benchmarks/lowering.py --models r3d18 pv_x3d --iters 30
    python benchmarks/lowering.py --corpus examples --small  # the test-size examples only
    python benchmarks/lowering.py --tvm --markdown lowering.md --json lowering.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from paired import alternate, nested_ratio_interval  # noqa: E402

from edge3d.choices import CONV_STRATEGIES  # noqa: E402  - the repository's edge3d, not an installed one

RUNS_FOR_MEMORY = 3


# --- children: each measurement in a fresh process ------------------------------------------------

def peak_rss_mb() -> float:
    """VmHWM: the peak RSS of this process image (ru_maxrss would carry the forking parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def input_shapes(path: Path) -> dict[str, list[int]]:
    """The 5D model's input shapes (read in the parent: a child that measures memory loads no
    more than the model under test)."""
    import onnx

    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in onnx.load(str(path)).graph.input}


def activation_peak(path: Path) -> int:
    """Bytes alive at the peak of a run in graph order (``edge3d/passes/live_memory.py``), from
    the model file itself, so that a bundle made before the manifest recorded it is measured alike."""
    import onnx

    from edge3d.passes.live_memory import live_memory_of

    model = onnx.load(str(path), load_external_data=False)
    return live_memory_of(onnx.shape_inference.infer_shapes(model, data_prop=True)).peak


def feeds_for(shapes: dict[str, list[int]], layouts: dict, frames: bool) -> dict[str, np.ndarray]:
    """Seeded float32 inputs of the 5D model's shapes; in frames where the lowered model takes them so."""
    from edge3d.layouts import clip_to_frames

    rng = np.random.default_rng(0)
    feeds = {}
    for name, shape in shapes.items():
        x = rng.standard_normal(shape).astype(np.float32)
        feeds[name] = clip_to_frames(x) if frames and layouts.get(name) == "frames" else x
    return feeds


def child(spec: dict) -> dict:
    start = time.perf_counter()
    mode = spec["mode"]
    result: dict = {}
    if mode == "export":
        from edge3d.cli import main

        try:
            main(spec["argv"], standalone_mode=False)
        except SystemExit as exc:
            if exc.code:
                raise
    elif mode == "baseline":
        import onnx

        from edge3d.frontend.load import load_model
        from edge3d.frontend.to_onnx import export_to_onnx, prepare

        shapes = [tuple(s) for s in spec["shapes"]] if spec["shapes"] else None
        loaded = load_model(Path(spec["model"]), input_shapes=shapes)
        onnx.save(prepare(export_to_onnx(loaded).model), spec["out"])
    elif mode == "run":  # memory: load one model with ONNX Runtime's defaults, run it a few times
        import onnxruntime as ort

        session = ort.InferenceSession(spec["path"], providers=["CPUExecutionProvider"])
        feeds = feeds_for(spec["shapes"], spec["layouts"], spec["lowered"])
        for _ in range(RUNS_FOR_MEMORY):
            session.run(None, feeds)
    elif mode == "time":
        runs = make_runs(spec)
        result["times"] = alternate(runs, spec["warmup"], spec["iters"], spec.get("seconds", 0.0))
    result.update(seconds=time.perf_counter() - start, peak_mb=peak_rss_mb())
    return result


def make_runs(spec: dict) -> dict:
    """Zero-argument callables running the 5D and the lowered model on the same clip."""
    paths = {"original": spec["original"], "lowered": spec["lowered"]}
    feeds = {key: feeds_for(spec["shapes"], spec["layouts"], key == "lowered") for key in paths}
    if spec["runtime"] == "ort":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = spec["threads"]
        sessions = {key: ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
                    for key, path in paths.items()}
        return {key: (lambda s=s, f=feeds[key]: s.run(None, f)) for key, s in sessions.items()}
    from edge3d.runtimes.tvm_runtime import TvmRuntime
    from edge3d.targets import load_target

    target, runtime, built = load_target("x86"), TvmRuntime(), {}
    for key, path in paths.items():
        folder = Path(spec["work"]) / f"tvm-{key}"
        folder.mkdir(exist_ok=True)
        (folder / "model.onnx").write_bytes(Path(path).read_bytes())
        artifact = runtime.build(folder / "model.onnx", target, folder, "fp32", trials=spec["tvm_trials"])
        session = runtime.load(artifact, folder)
        ordered = {v.name: feeds[key][v.name] for v in session.inputs}
        built[key] = (lambda s=session, f=ordered: s.run(f))
    return built


def run_child(spec: dict, timeout: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                         timeout=timeout, cwd=str(REPO))
    if out.returncode:
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        raise RuntimeError((lines or ["no output"])[-1][:300])
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- one model ---------------------------------------------------------------------------------------

def save_model(name: str, work: Path, small: bool) -> tuple[Path, list, list[str]]:
    """The saved file, its input shapes (None for a .pt2, which records them) and export arguments."""
    from examples.models import EXAMPLES

    if name in EXAMPLES:
        from examples.save_model import save

        path = work / f"{name}.pt"
        shape = save(name, path, "torchscript", small=small)
        return path, [list(shape)], ["--input-shape", ",".join(map(str, shape))]
    from zoo import ZOO, save

    path = work / f"{name}.pt2"
    save(ZOO[name], "pt2", path)
    return path, [], []


def bench_model(name: str, args, work: Path) -> dict:
    row: dict = {"model": name}
    model_path, shapes, extra = save_model(name, work, args.small)
    bundle = work / f"{name}-bundle"
    argv = ["export", str(model_path), "-o", str(bundle), "--target", "onnx", "--force", "-q",
            "--conv-strategy", args.conv_strategy, *extra]
    export = run_child({"mode": "export", "argv": argv}, args.timeout)
    row.update(export_s=export["seconds"], export_peak_mb=export["peak_mb"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    original = work / f"{name}-5d.onnx"
    run_child({"mode": "baseline", "model": str(model_path), "shapes": shapes, "out": str(original)}, args.timeout)
    layouts = {i["name"]: i["layout"] for i in manifest["inputs"]}
    common = {"original": str(original), "lowered": str(bundle / "model.onnx"), "layouts": layouts,
              "shapes": input_shapes(original),
              "threads": args.threads, "warmup": args.warmup, "iters": args.iters, "seconds": args.seconds,
              "work": str(work),
              "tvm_trials": args.tvm_trials}
    for runtime in ["ort"] + (["tvm"] if args.tvm else []):
        try:
            runs = [run_child({"mode": "time", "runtime": runtime, **common}, args.timeout)["times"]
                    for _ in range(args.processes)]
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            row[f"{runtime}_error"] = str(exc)
            continue
        ratio, low, high = nested_ratio_interval([(t["lowered"], t["original"]) for t in runs])
        row[runtime] = {"original_ms": statistics.median(np.median(t["original"]) for t in runs) * 1e3,
                        "lowered_ms": statistics.median(np.median(t["lowered"]) for t in runs) * 1e3,
                        "ratio": ratio, "ci95": [low, high], "processes": len(runs),
                        "rounds": [len(t["lowered"]) for t in runs],
                        "process_ratios": [float(np.median(t["lowered"]) / np.median(t["original"])) for t in runs]}
    for key in ("original", "lowered"):
        spec = {"mode": "run", "path": common[key], "shapes": common["shapes"], "layouts": layouts,
                "lowered": key == "lowered"}
        row[f"run_peak_mb_{key}"] = run_child(spec, args.timeout)["peak_mb"]
    for key in ("original", "lowered"):
        row[f"activations_mb_{key}"] = activation_peak(Path(common[key])) / 1e6
    row["max_rel_l2"] = max(o["rel_l2"] for o in manifest["verification"]["outputs"])
    return row


# --- report --------------------------------------------------------------------------------------------

def latency_cell(row: dict, runtime: str) -> str:
    if runtime not in row:
        return f"failed: {row[f'{runtime}_error']}" if f"{runtime}_error" in row else "—"
    r = row[runtime]
    return (f"{r['lowered_ms']:.1f} / {r['original_ms']:.1f} = **{r['ratio']:.2f}** "
            f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "—"


def table(rows: list[dict], runtimes: list[str]) -> tuple[list[str], list[list[str]]]:
    header = (["model"] + [f"{r.upper()} ms lowered / 5D = ratio [95% CI]" for r in runtimes]
              + ["run peak MB lowered / 5D (ratio)", "activations MB lowered / 5D (ratio)", "export s",
                 "export peak MB", "rel-L2"])
    cells = []
    for row in rows:
        if "error" in row:
            cells.append([row["model"], f"failed: {row['error']}"] + [""] * (len(header) - 2))
            continue
        run = (row["run_peak_mb_lowered"], row["run_peak_mb_original"])
        act = (row["activations_mb_lowered"], row["activations_mb_original"])
        cells.append([row["model"], *[latency_cell(row, r) for r in runtimes],
                      f"{run[0]:.0f} / {run[1]:.0f} ({ratio(*run)})", f"{act[0]:.1f} / {act[1]:.1f} ({ratio(*act)})",
                      f"{row['export_s']:.1f}", f"{row['export_peak_mb']:.0f}", f"{row['max_rel_l2']:.1e}"])
    return header, cells


def summary(rows: list[dict], runtimes: list[str]) -> list[str]:
    lines = []
    for runtime in runtimes:
        measured = [r[runtime] for r in rows if runtime in r]
        if measured:
            ratios = [m["ratio"] for m in measured]
            above = sum(m["ci95"][1] > 1.05 for m in measured)
            lines.append(f"{runtime.upper()}: median ratio {statistics.median(ratios):.2f} over {len(ratios)} models, "
                         f"worst {max(ratios):.2f}; {above} with the upper end of the 95% interval above 1.05.")
    acts = [r["activations_mb_lowered"] / r["activations_mb_original"] for r in rows
            if r.get("activations_mb_original")]
    runs = [r["run_peak_mb_lowered"] / r["run_peak_mb_original"] for r in rows if r.get("run_peak_mb_original")]
    if acts:
        lines.append(f"Activation peak lowered/5D: median {statistics.median(acts):.2f}, worst {max(acts):.2f}; "
                     f"process peak: median {statistics.median(runs):.2f}, worst {max(runs):.2f}.")
    return lines


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
        return
    from zoo import ZOO

    from examples.models import EXAMPLES

    corpus = {"examples": sorted(EXAMPLES), "zoo": [n for n, m in ZOO.items() if m.available() and "pt2" in m.formats]}
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(EXAMPLES) + sorted(ZOO))
    parser.add_argument("--corpus", choices=["examples", "zoo", "all"], default="all",
                        help="which models, when --models is not given")
    parser.add_argument("--small", action="store_true", help="the examples' test-size configurations")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10, help="alternating rounds per process, at least")
    parser.add_argument("--seconds", type=float, default=3.0, help="and rounds until this long (per process)")
    parser.add_argument("--processes", type=int, default=3, help="timing processes per model and runtime")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per child process")
    parser.add_argument("--conv-strategy", choices=list(CONV_STRATEGIES), default="auto")
    parser.add_argument("--tvm", action="store_true", help="also time the x86 TVM library of each model")
    parser.add_argument("--tvm-trials", type=int, default=0, help="tuning trials for each TVM library (both models)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown")
    args = parser.parse_args()

    names = args.models or (corpus["examples"] + corpus["zoo"] if args.corpus == "all" else corpus[args.corpus])
    runtimes = ["ort"] + (["tvm"] if args.tvm else [])
    rows = []
    started = time.perf_counter()
    for name in names:
        with tempfile.TemporaryDirectory(prefix="edge3d-lowering-") as tmp:
            try:
                rows.append(bench_model(name, args, Path(tmp)))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                rows.append({"model": name, "error": str(exc)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started

    from rich.console import Console
    from rich.table import Table

    header, cells = table(rows, runtimes)
    shown = Table(title=f"lowered vs 5D, {args.threads} threads, {args.processes} processes of ≥ {args.iters} "
                        f"alternating rounds and ≥ {args.seconds:g} s each ({elapsed / 60:.1f} min)")
    for col in header:
        shown.add_column(col, overflow="fold")
    for line in cells:
        shown.add_row(*[c.replace("**", "") for c in line])
    console = Console(width=220)
    console.print(shown)
    for line in summary(rows, runtimes):
        console.print(line)
    if args.json:
        args.json.write_text(json.dumps({"elapsed_s": elapsed, "args": vars(args) | {"json": None, "markdown": None},
                                         "rows": rows}, indent=2, default=str))
    if args.markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in cells]
        args.markdown.write_text("\n".join(lines + [""] + summary(rows, runtimes)) + "\n")


if __name__ == "__main__":
    main()
