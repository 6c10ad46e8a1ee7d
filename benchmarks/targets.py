"""Export every example model for every CPU-buildable target and tabulate each artifact's
verification figures (the issue's acceptance matrix), from fresh TorchScript files.

    python benchmarks/targets.py [--targets x86 arm64 jetson npu rknn] [--full]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from examples.models import EXAMPLES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", default=["x86", "arm64", "jetson", "npu", "rknn"])
    parser.add_argument("--models", nargs="+", default=sorted(EXAMPLES), choices=sorted(EXAMPLES))
    parser.add_argument("--full", action="store_true", help="full-size models instead of the small configurations")
    args = parser.parse_args()

    from edge3d.cli import main as cli
    from examples.save_model import save

    print("| model | target | artifact | precision | rel-L2 | cosine | top-1 | median ms | export s |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.models:
            model = tmp / f"{name}.pt"
            shape = save(name, model, "torchscript", small=not args.full)
            for target in args.targets:
                out = tmp / f"{name}-{target}"
                start = time.perf_counter()
                try:  # without standalone mode, click returns the exit code
                    code = cli(["export", str(model), "--input-shape", ",".join(map(str, shape)), "--target", target,
                                "-o", str(out), "-q"], standalone_mode=False) or 0
                except SystemExit as exc:
                    code = exc.code
                if code:
                    print(f"| {name} | {target} | FAILED (exit {code}; the error line is on stderr) | | | | | | |",
                          flush=True)
                    continue
                seconds = time.perf_counter() - start
                manifest = json.loads((out / "manifest.json").read_text())
                for a in manifest["artifacts"]:
                    v = a.get("verification")
                    o = v["outputs"][0] if v else {}
                    cell = lambda key, f, o=o: f.format(o[key]) if o.get(key) is not None else "—"  # noqa: E731
                    latency = a.get("latency", {}).get("median_ms")
                    print(f"| {name} | {target} | {a['runtime']}: {', '.join(a['files'])}"
                          f"{'' if a['built_here'] else ' (device build)'} | {a['precision']} | "
                          f"{cell('rel_l2', '{:.1e}')} | {cell('cosine', '{:.5f}')} | {cell('top1', '{:.0%}')} | "
                          f"{'—' if latency is None else f'{latency:.2f}'} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
