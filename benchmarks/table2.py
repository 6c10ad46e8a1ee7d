"""The paper's Table II, measured: the ECO-Lite 3D-Net built with each structure.

Input 96×16×28×28 (the 2D-Net's output for 16 frames), 400 classes. For each structure: the
parameter count, multiply-accumulates (the unit the paper's "FLOPs" column counts), and the
throughput of the lowered rank-4 ONNX model in ONNX Runtime on the CPU, all models timed
round-robin in one process so that machine noise hits them alike. The Conv3D model is also
timed as its original 5D ONNX export. The paper's figures (V100 GPU) are printed beside ours.

    python benchmarks/table2.py [--iters 10] [--threads 2] [--batch 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Method, block, paper: params (M), FPS on V100, FLOPs (G) — the paper's Table II.
ROWS = [
    ("Conv3D", None, 33.7, 773, 35.6),
    ("R(2+1)D", "r2plus1d", 33.7, 764, 36.9),
    ("Proposed-Cat", "st-cat", 32.2, 774, 32.7),
    ("Proposed-Add", "st-add", 16.3, 865, 17.1),
    ("P3D-A", "p3d-a", 22.5, 824, 19.5),
    ("P3D-B", "p3d-b", 23.5, 791, 20.9),
    ("P3D-C", "p3d-c", 22.8, 758, 19.6),
    ("Rank-1", "rank1", 13.7, 724, 14.7),
    ("FSB", "fsb", None, None, None),
]
SHAPE = (96, 16, 28, 28)


def build(block: str | None, batch: int, work: Path):
    """The structure's model, its params and MACs, and the path of its lowered ONNX model."""
    import torch

    from edge3d.blocks.rewrite import count_macs, rewrite_model, save_exported
    from edge3d.pipeline import ExportOptions, run_export
    from examples.models.eco_lite import eco_lite

    torch.manual_seed(0)
    model = eco_lite(num_classes=400).eval()
    example = torch.randn(batch, *SHAPE)
    if block is not None:
        model, _ = rewrite_model(model, example, block, "aligned")
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, example)
    pt2 = work / f"{block or 'conv3d'}.pt2"
    save_exported(model, example, pt2)
    bundle = work / f"{block or 'conv3d'}-bundle"
    run_export(ExportOptions(model=pt2, out=bundle, verify_samples=1))
    return params, macs, bundle / "model.onnx", pt2


def original_onnx(pt2: Path, dest: Path) -> Path:
    import onnx

    from edge3d.frontend.load import load_model
    from edge3d.frontend.to_onnx import export_to_onnx, prepare

    onnx.save(prepare(export_to_onnx(load_model(pt2)).model), str(dest))
    return dest


def round_robin(paths: dict[str, Path], feeds: dict[str, np.ndarray], iters: int, threads: int) -> dict[str, float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sessions = {k: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
    times = {k: [] for k in sessions}
    for i in range(iters + 1):
        for k, s in sessions.items():
            start = time.perf_counter()
            s.run(None, {s.get_inputs()[0].name: feeds[k]})
            if i:  # the first round is warm-up
                times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from edge3d.layouts import clip_to_frames

    clip = np.random.default_rng(0).standard_normal((args.batch, *SHAPE)).astype(np.float32)
    stats, paths, feeds = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for method, block, *_ in ROWS:
            print(f"building {method}...", file=sys.stderr)
            params, macs, lowered, pt2 = build(block, args.batch, work)
            stats[method] = (params, macs)
            paths[method], feeds[method] = lowered, clip_to_frames(clip)
            if block is None:
                paths["Conv3D (5D ONNX)"] = original_onnx(pt2, work / "conv3d-5d.onnx")
                feeds["Conv3D (5D ONNX)"] = clip
        seconds = round_robin(paths, feeds, args.iters, args.threads)

    base_params, base_macs = stats["Conv3D"]
    base_time = seconds["Conv3D"]
    table = Table(title=f"ECO-Lite 3D-Net, input {args.batch}×96×16×28×28; ONNX Runtime CPU, {args.threads} threads, "
                        f"median of {args.iters} round-robin runs")
    for col in ("method", "params M", "vs Conv3D", "GMACs", "vs Conv3D", "clips/s", "frames/s", "speed vs Conv3D",
                "paper params M", "paper GFLOPs", "paper FPS", "paper speed"):
        table.add_column(col, justify="right")
    for method, _block, p_params, p_fps, p_flops in ROWS:
        params, macs = stats[method]
        s = seconds[method]
        fmt = lambda v, f="{:.1f}": "—" if v is None else f.format(v)  # noqa: E731
        table.add_row(method, f"{params / 1e6:.1f}", f"{params / base_params:.0%}", f"{macs / 1e9:.1f}",
                      f"{macs / base_macs:.0%}", f"{args.batch / s:.2f}", f"{args.batch * SHAPE[1] / s:.1f}",
                      f"{base_time / s:.2f}×", fmt(p_params), fmt(p_flops), fmt(p_fps, "{:d}"),
                      "—" if p_fps is None else f"{p_fps / 773:.2f}×")
    s5 = seconds["Conv3D (5D ONNX)"]
    table.add_row("Conv3D (5D ONNX)", f"{base_params / 1e6:.1f}", "100%", f"{base_macs / 1e9:.1f}", "100%",
                  f"{args.batch / s5:.2f}", f"{args.batch * SHAPE[1] / s5:.1f}", f"{base_time / s5:.2f}×",
                  "", "", "", "")
    Console(width=220).print(table)


if __name__ == "__main__":
    main()
