"""What edge3d makes of real third-party 3D model code: the corpus in tests/zoo, every format.

For each corpus model and format: save it (TorchScript by torch.jit.trace, torch.jit.script where
tracing fails; ``.pt2`` by torch.export; a state_dict where the class is rebuilt by ``--arch``),
run ``python -m edge3d export`` in a child process (with a timeout), and collect:

- status: ``ok``, or ``exit N: <edge3d's one stderr line>`` (``timeout``, ``save failed: ...``);
- the max rank of the lowered graph after ONNX shape inference;
- from manifest.json: the lowering's error against the 5D ONNX model, the error against PyTorch
  and the plain 5D export's own error against PyTorch (each the largest relative L2 over the
  outputs and verification samples);
- ORT CPU latency of the lowered and of the 5D ONNX model (medians of runs alternating between the
  two, as benchmarks/lowering.py does; the 5D model is exported and simplified exactly as the
  export pipeline does before lowering), in a child process;
- Transpose / Reshape / Gather counts in the lowered graph and in the 5D ONNX.

    python benchmarks/zoo.py                                    # whole corpus, every format
    python benchmarks/zoo.py --models monai_unet pv_x3d --formats pt2
    python benchmarks/zoo.py --markdown zoo.md --json zoo.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

COUNTED = ("Transpose", "Reshape", "Gather")


def op_counts(model) -> dict[str, int]:
    """Node counts by op type over the graph and its subgraphs."""
    counts: dict[str, int] = {}

    def walk(graph):
        for node in graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(model.graph)
    return counts


def max_rank(model) -> int:
    """Largest rank of any value after strict shape inference (tests/lowering_harness.py); where
    inference leaves a value untyped, the largest over those it types."""
    import onnx
    from lowering_harness import max_rank_after_inference

    try:
        return max_rank_after_inference(model)
    except AssertionError:
        inferred = onnx.shape_inference.infer_shapes(model)
        values = list(inferred.graph.input) + list(inferred.graph.output) + list(inferred.graph.value_info)
        ranks = [len(v.type.tensor_type.shape.dim) for v in values]
        return max(ranks + [len(i.dims) for i in inferred.graph.initializer])


def worst(outputs) -> float | None:
    values = [o.get("rel_l2") for o in outputs or [] if o.get("rel_l2") is not None]
    return max(values) if values else None


def stderr_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("edge3d:")]
    return (errors or lines or [""])[-1]


# --- child: the 5D baseline and the latency of both models ---------------------------------------

def child_baseline(spec: dict) -> dict:
    import numpy as np
    import onnx
    import onnxruntime as ort

    from edge3d.frontend.load import load_model
    from edge3d.frontend.to_onnx import export_to_onnx, prepare
    from edge3d.layouts import clip_to_frames

    shapes = [tuple(s) for s in spec["shapes"]] if spec["fmt"] != "pt2" else None
    loaded = load_model(spec["model"], input_shapes=shapes, arch=spec.get("arch"), arch_kwargs=spec.get("arch_kwargs"))
    original = prepare(export_to_onnx(loaded).model)
    onnx.save(original, spec["original"])
    lowered = onnx.load(spec["lowered"])
    manifest = json.loads(Path(spec["manifest"]).read_text())
    layouts = {i["name"]: i for i in manifest["inputs"]}

    rng = np.random.default_rng(0)
    feeds5, feeds4 = {}, {}
    for value in original.graph.input:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        x = rng.standard_normal(dims).astype(np.float32)
        feeds5[value.name] = x
        frames = layouts.get(value.name, {}).get("layout") == "frames"
        feeds4[value.name] = clip_to_frames(x) if frames else x
    options = ort.SessionOptions()
    options.intra_op_num_threads = spec["threads"]
    sessions = {"lowered": ort.InferenceSession(spec["lowered"], options, providers=["CPUExecutionProvider"]),
                "original": ort.InferenceSession(spec["original"], options, providers=["CPUExecutionProvider"])}
    feeds = {"lowered": {i.name: feeds4[i.name] for i in sessions["lowered"].get_inputs()},
             "original": {i.name: feeds5[i.name] for i in sessions["original"].get_inputs()}}
    from paired import alternate

    runs = {key: (lambda s=session, f=feeds[key]: s.run(None, f)) for key, session in sessions.items()}
    times = alternate(runs, spec["warmup"], spec["iters"])
    medians = {key: statistics.median(t) * 1e3 for key, t in times.items()}
    return {"lowered_ms": medians["lowered"], "original_ms": medians["original"],
            "ops_lowered": op_counts(lowered), "ops_original": op_counts(original),
            "max_rank_original": max_rank(original)}


# --- one model, one format --------------------------------------------------------------------------

def run_one(name: str, fmt: str, work: Path, args) -> dict:
    from zoo import SUFFIX, ZOO, export_args, save

    model = ZOO[name]
    row = {"model": name, "format": fmt, "category": model.category, "package": model.package}
    folder = work / f"{name}-{fmt}"
    folder.mkdir()
    path = folder / f"model{SUFFIX[fmt]}"
    start = time.perf_counter()
    try:
        saved = save(model, fmt, path)
    except Exception as exc:  # noqa: BLE001 - reported as the row's status
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        row.update(status=f"save failed: {type(exc).__name__}: {first[:200]}", ok=False)
        return row
    row.update(saved_by=saved["how"], save_s=time.perf_counter() - start, shapes=[list(s) for s in saved["shapes"]])
    out = folder / "bundle"
    command = [sys.executable, "-m", "edge3d", *export_args(model, fmt, path, saved["shapes"], out), "-q"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, cwd=str(REPO))
    except subprocess.TimeoutExpired:
        row.update(status=f"timeout after {args.timeout} s", ok=False, export_s=time.perf_counter() - start)
        return row
    row["export_s"] = time.perf_counter() - start
    if proc.returncode != 0:
        row.update(status=f"exit {proc.returncode}: {stderr_line(proc.stderr)}", ok=False)
        return row
    import onnx

    manifest = json.loads((out / "manifest.json").read_text())
    verification = manifest["verification"]
    row.update(
        status="ok", ok=True, exporter=manifest["model"]["exporter"], opset=manifest["model"]["opset"],
        max_rank=max_rank(onnx.load(str(out / "model.onnx"))),
        lowering_rel_l2=worst(verification.get("lowering", {}).get("outputs")),
        pytorch_rel_l2=worst(verification.get("outputs")),
        plain_export_rel_l2=worst(verification.get("plain_export", {}).get("outputs")),
        verification_passed=verification.get("passed"),
    )
    spec = {"model": str(path), "fmt": fmt, "shapes": row["shapes"], "lowered": str(out / "model.onnx"),
            "manifest": str(out / "manifest.json"), "original": str(folder / "original.onnx"),
            "threads": args.threads, "warmup": args.warmup, "iters": args.iters,
            "arch": model.arch if fmt == "state_dict" else None,
            "arch_kwargs": json.dumps(model.arch_kwargs) if fmt == "state_dict" else None}
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                              timeout=args.timeout, cwd=str(REPO))
        if proc.returncode == 0:
            row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        else:
            row["bench_error"] = stderr_line(proc.stderr)
    except subprocess.TimeoutExpired:
        row["bench_error"] = f"timeout after {args.timeout} s"
    return row


# --- report -------------------------------------------------------------------------------------------

def fmt_err(value) -> str:
    return "—" if value is None else f"{value:.1e}"


def fmt_ops(counts) -> str:
    return "—" if counts is None else "/".join(str(counts.get(op, 0)) for op in COUNTED)


def table_rows(rows: list[dict]) -> list[list[str]]:
    out = []
    for r in rows:
        latency = "—"
        if r.get("lowered_ms") is not None:
            latency = (f"{r['lowered_ms']:.1f} / {r['original_ms']:.1f} "
                       f"({r['lowered_ms'] / r['original_ms']:.2f})")
        elif r.get("bench_error"):
            latency = f"bench failed: {r['bench_error']}"
        out.append([r["model"], r["format"], r.get("saved_by", "—"), r["status"],
                    str(r["max_rank"]) if r.get("max_rank") is not None else "—",
                    fmt_err(r.get("lowering_rel_l2")), fmt_err(r.get("pytorch_rel_l2")),
                    fmt_err(r.get("plain_export_rel_l2")), latency,
                    fmt_ops(r.get("ops_lowered")), fmt_ops(r.get("ops_original")),
                    f"{r['export_s']:.1f}" if r.get("export_s") is not None else "—"])
    return out


HEADER = ["model", "format", "saved by", "status", "max rank", "lowering err (vs 5D ONNX)", "err vs PyTorch",
          "plain export err", "ORT ms lowered / 5D (ratio)", "T/R/G lowered", "T/R/G 5D", "export s"]


def markdown(rows: list[dict], args) -> str:
    import onnxruntime
    import torch

    ok = sum(r["ok"] is True for r in rows)
    tried = sum(r["ok"] is not None for r in rows)
    lines = [
        "# edge3d on the third-party model corpus (tests/zoo)",
        "",
        f"{ok} of {tried} model × format exports pass (n/a rows: the model cannot be saved in that format). "
        f"ORT CPU, {args.threads} threads, median of "
        f"{args.iters} runs alternating lowered and 5D (after {args.warmup} warm-up runs); errors are "
        "relative L2, the worst output over the verification samples; T/R/G: Transpose/Reshape/Gather "
        f"node counts. torch {torch.__version__}, onnxruntime {onnxruntime.__version__}.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    for cells in table_rows(rows):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child_baseline(json.loads(sys.argv[2]))))
        return
    from zoo import FORMATS, ZOO

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(ZOO), help="default: every installed corpus model")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS),
                        help="formats to try (each model only in those that apply to it)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per export (and per baseline)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the rows as JSON")
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown")
    args = parser.parse_args()

    names = args.models or [n for n, m in ZOO.items() if m.available()]
    missing = [n for n in names if not ZOO[n].available()]
    if missing:
        print(f"not installed, skipped: {', '.join(missing)}", file=sys.stderr)
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edge3d-zoo-") as tmp:
        for name in names:
            if name in missing:
                continue
            for fmt in args.formats:
                model = ZOO[name]
                if fmt in model.not_applicable:
                    row = {"model": name, "format": fmt, "category": model.category, "package": model.package,
                           "status": f"n/a: {model.not_applicable[fmt]}", "ok": None}
                elif fmt not in model.formats:
                    continue
                else:
                    row = run_one(name, fmt, Path(tmp), args)
                rows.append(row)
                print(f"{name:24} {fmt:12} {row['status'][:150]}", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started

    from rich.console import Console
    from rich.table import Table

    passed, tried = sum(r["ok"] is True for r in rows), sum(r["ok"] is not None for r in rows)
    table = Table(title=f"edge3d export on the corpus ({passed}/{tried} ok, {elapsed:.0f} s)")
    for col in HEADER:
        table.add_column(col, overflow="fold")
    for cells in table_rows(rows):
        table.add_row(*cells)
    Console(width=250).print(table)
    if args.json:
        args.json.write_text(json.dumps({"elapsed_s": elapsed, "rows": rows}, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown(rows, args))


if __name__ == "__main__":
    main()
