"""Peak memory of `edge3d export`, against the bound 4 × (weights + one clip).

Each export runs as `edge3d export` in a fresh process whose peak RSS (VmHWM) is read at its end.
What torch, its exporter, onnxsim and ONNX Runtime take for themselves is measured the same way:
the export of a tiny Conv3d model (a few hundred weights, a 1×3×4×8×8 clip) in the same format.
The figure compared with the bound is the difference, peak − that footprint.

Cases: R3D-18 (33 M parameters, a 1×3×16×112×112 clip: weights dominate) and one 512→512
3×3×3 Conv3d on a 1×512×32×56×56 clip (7 M parameters, a 205 MB clip: activations dominate).

    python benchmarks/export_memory.py                       # both cases, medians of 3 exports
    python benchmarks/export_memory.py --cases r3d18 --repeat 1
    python benchmarks/export_memory.py --big-frames 8        # the big conv on 8 frames (faster)

Writes benchmarks/results/export_memory.md and .json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from lowering import run_child  # noqa: E402  - one process per export, VmHWM at its end

RESULTS = REPO / "benchmarks" / "results"
CHILD_TIMEOUT_S = 3600  # one export; the big conv takes about 10 minutes on 2 cores


def _big_conv(frames: int):
    import torch

    return torch.nn.Conv3d(512, 512, 3, padding=1), (1, 512, frames, 56, 56)


def _tiny():
    import torch

    return torch.nn.Conv3d(3, 4, 3, padding=1), (1, 3, 4, 8, 8)


def _r3d18():
    from examples.models import build

    return build("r3d18")


def save_case(name: str, work: Path, big_frames: int) -> tuple[Path, tuple[int, ...], int]:
    """The case's model saved as .pt2 with seeded weights: (path, input shape, weight bytes)."""
    import torch

    torch.manual_seed(0)
    model, shape = {"tiny": _tiny, "r3d18": _r3d18, "bigconv": lambda: _big_conv(big_frames)}[name]()
    model.eval()
    path = work / f"{name}.pt2"
    with torch.no_grad():
        torch.export.save(torch.export.export(model, (torch.randn(*shape),)), str(path))
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) + \
        sum(b.numel() * b.element_size() for b in model.buffers())
    return path, tuple(shape), weights


def measure(path: Path, shape: tuple[int, ...], work: Path, repeat: int, samples: int) -> dict:
    argv = ["export", str(path), "-o", str(work / f"{path.stem}-bundle"), "--input-shape", ",".join(map(str, shape)),
            "--force", "-q", "--verify-samples", str(samples)]
    runs = [run_child({"mode": "export", "argv": argv}, CHILD_TIMEOUT_S) for _ in range(repeat)]
    return {"peak_mb": statistics.median(r["peak_mb"] for r in runs),
            "seconds": statistics.median(r["seconds"] for r in runs), "runs": len(runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["r3d18", "bigconv"], choices=["r3d18", "bigconv"])
    parser.add_argument("--repeat", type=int, default=3, help="exports per case; the median is reported")
    parser.add_argument("--big-frames", type=int, default=32, help="frames of the big conv's clip")
    parser.add_argument("--verify-samples", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS / "export_memory")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="edge3d-mem-") as tmp:
        work = Path(tmp)
        path, shape, _ = save_case("tiny", work, args.big_frames)
        footprint = measure(path, shape, work, args.repeat, args.verify_samples)
        print(f"footprint (tiny model): {footprint['peak_mb']:.0f} MB", file=sys.stderr)
        for name in args.cases:
            path, shape, weights = save_case(name, work, args.big_frames)
            got = measure(path, shape, work, args.repeat if name != "bigconv" else 1, args.verify_samples)
            clip = 4 * math.prod(shape)
            beyond = got["peak_mb"] - footprint["peak_mb"]
            bound = 4 * (weights + clip) / 2**20
            rows.append({"case": name, "input_shape": list(shape), "weights_mb": weights / 2**20,
                         "clip_mb": clip / 2**20, "peak_mb": got["peak_mb"], "footprint_mb": footprint["peak_mb"],
                         "beyond_mb": beyond, "bound_mb": bound, "ratio_to_bound": beyond / bound,
                         "export_s": got["seconds"], "runs": got["runs"]})
            print(f"{name}: peak {got['peak_mb']:.0f} MB, {beyond:.0f} MB beyond the footprint, bound "
                  f"{bound:.0f} MB ({beyond / bound:.2f}×)", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"verify_samples": args.verify_samples, "rows": rows},
                                                        indent=2) + "\n")
    lines = ["| case | input | weights MB | clip MB | peak MB | footprint MB | beyond MB | bound MB | "
             "beyond / bound | export s |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {'×'.join(map(str, r['input_shape']))} | {r['weights_mb']:.0f} | {r['clip_mb']:.0f} "
              f"| {r['peak_mb']:.0f} | {r['footprint_mb']:.0f} | {r['beyond_mb']:.0f} | {r['bound_mb']:.0f} | "
              f"{r['ratio_to_bound']:.2f} | {r['export_s']:.0f} |" for r in rows]
    args.out.with_suffix(".md").write_text(
        "# Export memory\n\nPeak RSS of `edge3d export` (medians of the runs), the footprint being the same export "
        "of a tiny Conv3d model; the bound is 4 × (weights + one clip) beyond that footprint.\n\n"
        + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
