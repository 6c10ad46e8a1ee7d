"""Latency of lowered vs original models in ONNX Runtime (CPU), plus export time and memory.

For each example model: export it with ``edge3d export`` in a child process (wall time and
peak RSS of that process), then time the original 5D ONNX model and the lowered rank-4 model
in one process, alternating the two run by run so that machine noise hits both alike.
Reported: medians, the ratio lowered/original of the medians, and peak RSS of a process that
only loads and runs each model.

    python benchmarks/lowering.py                      # every example, full size
    python benchmarks/lowering.py --models r3d18 c3d --iters 30
    python benchmarks/lowering.py --small              # the test-size configurations
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

from edge3d.choices import CONV_STRATEGIES  # noqa: E402  - the repository's edge3d, not an installed one


def child(argv: list[str]) -> None:
    """Run in a fresh process: either an export or a load-and-run, then report peak RSS."""
    mode, *rest = argv
    start = time.perf_counter()
    if mode == "export":
        from edge3d.cli import main

        try:
            main(rest, standalone_mode=False)
        except SystemExit as exc:
            if exc.code:
                raise
    else:
        import onnxruntime as ort

        path, shape, iters = rest[0], [int(d) for d in rest[1].split(",")], int(rest[2])
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
        for _ in range(iters):
            session.run(None, feed)
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """VmHWM: the peak RSS of this process image (ru_maxrss would carry the forking parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(*args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"child failed: {' '.join(map(str, args))}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def original_onnx(model_path: Path, shape, dest: Path) -> None:
    """The 5D baseline, exported and simplified exactly as the export pipeline does before lowering."""
    import onnx

    from edge3d.frontend.load import load_model
    from edge3d.frontend.to_onnx import export_to_onnx, prepare

    loaded = load_model(model_path, input_shapes=[shape])
    onnx.save(prepare(export_to_onnx(loaded).model), str(dest))


def alternate(paths: dict[str, Path], feeds: dict[str, np.ndarray], warmup: int, iters: int, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sessions = {k: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
    inputs = {k: {s.get_inputs()[0].name: feeds[k]} for k, s in sessions.items()}
    for _ in range(warmup):
        for k, s in sessions.items():
            s.run(None, inputs[k])
    times = {k: [] for k in sessions}
    for i in range(iters):
        order = list(sessions) if i % 2 == 0 else list(reversed(sessions))
        for k in order:
            start = time.perf_counter()
            sessions[k].run(None, inputs[k])
            times[k].append(time.perf_counter() - start)
    return times


def bench_model(name: str, small: bool, warmup: int, iters: int, threads: int, work: Path,
                strategy: str = "auto") -> dict:
    from edge3d.layouts import clip_to_frames
    from examples.models import build
    from examples.save_model import save

    model_path = work / f"{name}.pt"
    shape = save(name, model_path, "torchscript", small=small)
    model, _ = build(name, small=small)
    params = sum(p.numel() for p in model.parameters())
    bundle = work / f"{name}-bundle"
    export = run_child("export", "export", model_path, "-o", bundle, "--input-shape", ",".join(map(str, shape)),
                       "--force", "-q", "--conv-strategy", strategy)
    original = work / f"{name}-5d.onnx"
    original_onnx(model_path, shape, original)
    clip = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    paths = {"original": original, "lowered": bundle / "model.onnx"}
    times = alternate(paths, {"original": clip, "lowered": clip_to_frames(clip)}, warmup, iters, threads)
    medians = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    frames_shape = clip_to_frames(clip).shape
    memory = {"original": run_child("run", original, ",".join(map(str, shape)), 3)["peak_mb"],
              "lowered": run_child("run", bundle / "model.onnx", ",".join(map(str, frames_shape)), 3)["peak_mb"]}
    manifest = json.loads((bundle / "manifest.json").read_text())
    return {
        "model": name, "params_m": params / 1e6, "input": list(shape),
        "original_ms": medians["original"], "lowered_ms": medians["lowered"],
        "ratio": medians["lowered"] / medians["original"],
        "export_s": export["seconds"], "export_peak_mb": export["peak_mb"],
        "run_peak_mb_original": memory["original"], "run_peak_mb_lowered": memory["lowered"],
        "max_rel_l2": max(o["rel_l2"] for o in manifest["verification"]["outputs"]),
    }


def main() -> None:
    from examples.models import EXAMPLES

    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=sorted(EXAMPLES), choices=sorted(EXAMPLES))
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--conv-strategy", choices=list(CONV_STRATEGIES), default="auto")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows.append(bench_model(name, args.small, args.warmup, args.iters, args.threads, Path(tmp),
                                    args.conv_strategy))
            print(json.dumps(rows[-1]), file=sys.stderr)
    table = Table(title=f"ONNX Runtime CPU, {args.threads} threads, median of {args.iters} alternating runs")
    for col in ("model", "params (M)", "original ms", "lowered ms", "ratio", "export s", "export peak MB",
                "run peak MB 5D / 4D", "rel-L2"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["model"], f"{r['params_m']:.1f}", f"{r['original_ms']:.1f}", f"{r['lowered_ms']:.1f}",
                      f"{r['ratio']:.3f}", f"{r['export_s']:.1f}", f"{r['export_peak_mb']:.0f}",
                      f"{r['run_peak_mb_original']:.0f} / {r['run_peak_mb_lowered']:.0f}", f"{r['max_rel_l2']:.1e}")
    Console(width=200).print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
