"""How long `edge3d lint` takes on a large model, weights embedded and in an external file.

Exports the full-size R3D-18-style example (about 33 M parameters, a 133 MB ONNX file) as a
plain rank-5 ONNX model and times the lint in a fresh process, median of several runs.

    python benchmarks/lint_speed.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    import onnx

    from edge3d.frontend.load import load_model
    from edge3d.frontend.to_onnx import export_to_onnx
    from examples.save_model import save

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shape = save("r3d18", tmp / "r3d18.pt")
        model = export_to_onnx(load_model(tmp / "r3d18.pt", input_shapes=[shape])).model
        embedded, external = tmp / "embedded.onnx", tmp / "external.onnx"
        onnx.save(model, str(embedded))
        onnx.save(model, str(external), save_as_external_data=True, location="external.onnx.data")
        for path in (embedded, external):
            size = sum(p.stat().st_size for p in tmp.glob(path.name + "*")) / 1e6
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                done = subprocess.run(["edge3d", "lint", str(path)], capture_output=True, text=True)
                times.append(time.perf_counter() - start)
            summary = done.stdout.strip().splitlines()[-1]
            print(f"{path.name:15} {size:7.1f} MB  median {statistics.median(times):.2f} s "
                  f"(process start included; exit {done.returncode})  {summary.split(': ', 1)[1]}")


if __name__ == "__main__":
    main()
