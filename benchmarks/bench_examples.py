"""`edge3d bench` over every example model: lowered/original ratios with bootstrap intervals in
ONNX Runtime and in TVM (CPU), and the JSON, markdown and HTML reports of each run.

    python benchmarks/bench_examples.py -o bench-reports/ [--small] [--iters 30] [--tvm-trials 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from examples.models import EXAMPLES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the reports")
    parser.add_argument("--models", nargs="+", default=sorted(EXAMPLES), choices=sorted(EXAMPLES))
    parser.add_argument("--runtimes", nargs="+", default=["ort", "tvm"], choices=["ort", "tvm"])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--tvm-trials", type=int, default=0, help="tune both TVM libraries with this budget")
    args = parser.parse_args()

    from edge3d.cli import main as cli
    from edge3d.timing.report import render
    from examples.save_model import save

    args.output.mkdir(parents=True, exist_ok=True)
    print("| model | runtime | original ms | lowered ms | ratio | 95% interval | difference |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model = Path(tmp) / f"{name}.pt"
            shape = save(name, model, "torchscript", small=args.small)
            bundle = Path(tmp) / f"{name}-x86"
            code = cli(["export", str(model), "--input-shape", ",".join(map(str, shape)), "--target", "x86",
                        "--tvm-trials", str(args.tvm_trials), "-o", str(bundle), "-q"], standalone_mode=False)
            if code:
                print(f"| {name} | export failed (exit {code}) | | | | | |", flush=True)
                continue
            for runtime in args.runtimes:
                stem = args.output / f"{name}-{runtime}"
                cli(["bench", str(bundle), "--runtime", runtime, "--iters", str(args.iters), "--warmup", "3",
                     "--format", "json", "-o", str(stem.with_suffix(".json"))], standalone_mode=False)
                report = json.loads(stem.with_suffix(".json").read_text())
                for fmt in ("md", "html"):  # the same run, rendered for people
                    stem.with_suffix(f".{fmt}").write_text(render(report, fmt))
                r, m = report["ratio"], report["models"]
                print(f"| {name} | {runtime} | {m['original']['latency']['median_ms']:.2f} | "
                      f"{m['lowered']['latency']['median_ms']:.2f} | {r['ratio']:.3f} | "
                      f"{r['low']:.3f}–{r['high']:.3f} | {'real' if r['significant'] else 'within noise'} |",
                      flush=True)


if __name__ == "__main__":
    main()
