"""RKNN, the lowered model against rknn-toolkit2's own conversion of the 5D model: estimated
cycles (the toolkit's verbose build, offline), weight and internal memory, FP16 and INT8, per
example — what ``edge3d export --target rknn`` records under each rknn artifact's ``npu_estimate``.

    python benchmarks/rknn_cycles.py [--models c3d r3d18 ...] [--full] [--out benchmarks/results/rknn_cycles]

Needs ``edge3d setup rknn``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def rows_for(name: str, manifest: dict, seconds: float) -> list[str]:
    lines = []
    for a in manifest["artifacts"]:
        estimate = a.get("meta", {}).get("npu_estimate")
        if a["runtime"] != "rknn" or not estimate:
            continue
        low, kit = estimate["lowered"], estimate.get("toolkit_5d", {})
        if "error" in kit:
            kit_cells = f"not built: {kit['error'][:90]} | — | — | —"
        else:
            kit_cells = (f"{kit['cycles'] / 1e6:.2f} M | **{fmt(estimate.get('cycles_ratio'), '.2f')}** | "
                         f"{fmt(kit.get('weight_kb'), '.0f')} KB | {fmt(kit.get('internal_kb'), '.0f')} KB")
        top = estimate.get("layers", [{}])[0]
        heaviest = (f"{top['layer']}: {top['toolkit_cycles'] / 1e6:.2f} M → {top['lowered_cycles'] / 1e6:.2f} M"
                    if top else "—")
        lines.append(f"| {name} | {a['precision']} | {low['cycles'] / 1e6:.2f} M | {kit_cells} | "
                     f"{fmt(low.get('weight_kb'), '.0f')} KB | {fmt(low.get('internal_kb'), '.0f')} KB | "
                     f"{heaviest} | {seconds:.0f} |")
    return lines


def main() -> None:
    from examples.models import EXAMPLES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=sorted(EXAMPLES), choices=sorted(EXAMPLES))
    parser.add_argument("--full", action="store_true", help="full-size models instead of the small configurations")
    parser.add_argument("--out", type=Path, help="write OUT.md and OUT.json")
    args = parser.parse_args()

    from examples.save_model import save

    lines = ["| model | precision | lowered cycles | toolkit's Conv3d cycles | lowered / toolkit | toolkit weights | "
             "toolkit internal | lowered weights | lowered internal | costliest layer (toolkit → lowered) | "
             "export s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    records = {}
    with tempfile.TemporaryDirectory(prefix="edge3d-rknn-cycles-") as tmp:
        work = Path(tmp)
        for name in args.models:
            model = work / f"{name}.pt"
            shape = save(name, model, "torchscript", small=not args.full)
            out = work / name
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "edge3d", "export", str(model), "--input-shape",
                                   ",".join(map(str, shape)), "--target", "rknn", "-o", str(out), "-q"],
                                  capture_output=True, text=True, cwd=ROOT)
            seconds = time.perf_counter() - start
            if done.returncode:
                lines.append(f"| {name} | export failed (exit {done.returncode}): "
                             f"{(done.stderr.strip().splitlines() or [''])[-1]} |||||||||")
            else:
                manifest = json.loads((out / "manifest.json").read_text())
                records[name] = [a["meta"].get("npu_estimate") for a in manifest["artifacts"] if a["runtime"] == "rknn"]
                lines += rows_for(name, manifest, seconds)
            print(lines[-1], flush=True)
    text = ("# RKNN (rk3588): the lowered model against rknn-toolkit2's own Conv3d conversion\n\n"
            f"`python benchmarks/rknn_cycles.py {' '.join(sys.argv[1:])}`; "
            f"{'full-size' if args.full else 'small (test) configurations'}. Cycles are the toolkit's per-layer "
            "estimate summed (its verbose build; convolutions only), M = millions.\n\n" + "\n".join(lines) + "\n")
    print(text)
    if args.out:
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
