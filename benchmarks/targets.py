"""Export every example model for every target at default settings, each in a fresh process, and
tabulate the exit status, wall time, peak memory and each artifact's verification figures.

The question it answers is a new user's: does ``edge3d export EXAMPLE --target T`` pass as
written, and how long does it take? Nothing but ``--input-shape``, ``--target`` and ``-o`` is
passed.

    python benchmarks/targets.py [--targets x86 rknn ...] [--models r3d18 ...] [--full]
                                 [--precisions fp32 fp16 int8] [--out benchmarks/results/targets]

``--precisions``: each target once per precision it takes (``--precision P``) rather than once at
its default.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def export(model: Path, shape, target: str, out: Path, timeout: float, precision: str | None = None) -> dict:
    """One ``edge3d export`` in a child process: exit code, last stderr line, seconds, peak RSS."""
    argv = [sys.executable, "-m", "edge3d", "export", str(model), "--input-shape", ",".join(map(str, shape)),
            "--target", target, "-o", str(out)] + (["--precision", precision] if precision else [])
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=err, cwd=ROOT)
        deadline = start + timeout
        while True:  # wait4 gives this child's own peak RSS (getrusage(CHILDREN) is the max over all)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = [line for line in err.read().decode(errors="replace").splitlines() if line.strip()]
    return {"exit": proc.returncode, "seconds": seconds, "peak_mb": usage.ru_maxrss / 1024,
            "error": lines[-1] if proc.returncode else "", "timed_out": seconds > timeout}


def npu_estimates(out: Path) -> dict:
    """The vendor compilers' offline estimates the bundle records: RKNN's cycles (lowered against
    its own 5D conversion) and Vela's Ethos-U figures (lowered and 5D)."""
    from edge3d.runtimes.rknn_perf import estimates_of

    artifacts = json.loads((out / "manifest.json").read_text())["artifacts"]
    found = estimates_of(artifacts)
    found.update({f"ethos-u ({a['meta']['accelerator']})": a["meta"]["vela_estimate"] for a in artifacts
                  if (a.get("meta") or {}).get("vela_estimate")})
    return found


def estimate_tables(results: list[dict]) -> list[str]:
    """RKNN cycles and Vela figures per example, lowered beside the 5D model."""
    rknn, vela = [], []
    for r in results:
        for label, e in r.get("npu_estimates", {}).items():
            if label.startswith("rknn"):
                kit = e.get("toolkit_5d") or {}
                theirs = (f"{kit['cycles'] / 1e6:.2f} M | {e.get('cycles_ratio', float('nan')):.2f} | "
                          f"{kit.get('weight_kb') or 0:,.0f} KB" if "cycles" in kit else
                          f"{kit.get('error', 'not built')[:80]} | — | —")
                rknn.append(f"| {r['model']} | {label} | {e['lowered']['cycles'] / 1e6:.2f} M | {theirs} | "
                            f"{e['lowered'].get('weight_kb') or 0:,.0f} KB |")
            else:
                low, orig = e["lowered"], e["original_5d"]
                theirs = (f"{orig['npu_share']:.0%} ({orig.get('precision')}), {orig['inference_ms']:.2f} ms"
                          if orig.get("ok") else orig.get("error", "not compiled")[:80])
                vela.append(f"| {r['model']} | {label} | {low['inference_ms']:.2f} | {low['npu_share']:.0%} | "
                            f"{low['sram_kib']:.0f} | {low['flash_kib'] + low['dram_kib']:.0f} | "
                            f"{', '.join(low['cpu_ops']) or '—'} | {theirs} |")
    lines = []
    if rknn:
        lines += ["", "## RKNN (rk3588): estimated cycles, lowered against the toolkit's own Conv3d conversion", "",
                  "| model | artifact | lowered cycles | toolkit's cycles | lowered / toolkit | toolkit weights | "
                  "lowered weights |", "|---|---|---|---|---|---|---|"] + rknn
    if vela:
        lines += ["", "## Ethos-U (Vela, offline): the lowered INT8 model, and the 5D model", "",
                  "| model | accelerator | lowered NPU ms | lowered on NPU | SRAM KiB | flash/DRAM KiB | CPU ops | "
                  "5D: on NPU, NPU ms |", "|---|---|---|---|---|---|---|---|"] + vela
    return lines


def artifact_rows(out: Path) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    rows = []
    for a in manifest["artifacts"]:
        v = a.get("verification") or {}
        o = (v.get("outputs") or [{}])[0]
        rows.append({"artifact": f"{a['runtime']}: {', '.join(a['files'])}", "built_here": a["built_here"],
                     "precision": a["precision"], "rel_l2": o.get("rel_l2"), "cosine": o.get("cosine"),
                     "top1": o.get("top1"), "median_ms": (a.get("latency") or {}).get("median_ms"),
                     "slow": bool(a.get("slow"))})
    return rows


def table(results: list[dict]) -> list[str]:
    lines = ["| model | target | exit | export s | peak MB | artifact | precision | rel-L2 | cosine | top-1 | "
             "median ms |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def fmt(value, spec):
        return "—" if value is None else format(value, spec)

    for r in results:
        head = f"| {r['model']} | {r['target']} | {r['exit']} | {r['seconds']:.1f} | {r['peak_mb']:.0f} |"
        if r["exit"]:
            lines.append(f"{head} {r['error'].replace('|', '/')} | | | | | |")
            continue
        for a in r["artifacts"]:
            where = "" if a["built_here"] else " (device build)"
            slow = " (slow)" if a["slow"] else ""
            lines.append(f"{head} {a['artifact']}{where} | {a['precision']} | {fmt(a['rel_l2'], '.1e')} | "
                         f"{fmt(a['cosine'], '.5f')} | {fmt(a['top1'], '.0%')} | {fmt(a['median_ms'], '.2f')}{slow} |")
            head = "| | | | | |"
    return lines


def main() -> None:
    from edge3d.targets import all_targets
    from examples.models import EXAMPLES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", default=[t.name for t in all_targets()])
    parser.add_argument("--models", nargs="+", default=sorted(EXAMPLES), choices=sorted(EXAMPLES))
    parser.add_argument("--full", action="store_true", help="full-size models instead of the small configurations")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one export may take")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "fp16", "int8"],
                        help="each target at each of these it takes, rather than at its default")
    parser.add_argument("--out", type=Path, help="write OUT.md and OUT.json")
    args = parser.parse_args()
    profiles = {t.name: t for t in all_targets()}
    runs = [(t, p) for t in args.targets
            for p in ([q for q in args.precisions if q in profiles[t].precisions] if args.precisions else [None])]

    from examples.save_model import save

    results: list[dict] = []
    summary = "nothing exported"
    with tempfile.TemporaryDirectory(prefix="edge3d-targets-") as tmp:
        work = Path(tmp)
        for name in args.models:
            model = work / f"{name}.pt"
            shape = save(name, model, "torchscript", small=not args.full)
            for target, precision in runs:
                out = work / f"{name}-{target}-{precision or 'default'}"
                row = {"model": name, "shape": list(shape), "target": target + (f" --precision {precision}"
                                                                                 if precision else ""),
                       **export(model, shape, target, out, args.timeout, precision)}
                row["artifacts"] = [] if row["exit"] else artifact_rows(out)
                row["npu_estimates"] = {} if row["exit"] else npu_estimates(out)
                results.append(row)
                print("\n".join(table([row])[2:]), flush=True)
                summary = write(results, args)  # after every export: a stopped run keeps what it measured
    print(summary)
    sys.exit(1 if any(r["exit"] for r in results) else 0)


def write(results: list[dict], args) -> str:
    failed = [r for r in results if r["exit"]]
    size = "full-size" if args.full else "small (test) configurations"
    settings = "the precisions asked for" if args.precisions else "default settings"
    summary = (f"{len(results) - len(failed)} of {len(results)} exports passed ({size}, TorchScript files, "
               f"{settings}); total {sum(r['seconds'] for r in results) / 60:.1f} min.")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
        args.out.with_suffix(".md").write_text(
            f"# `edge3d export EXAMPLE --target T` at {settings}\n\n"
            f"`python benchmarks/targets.py {' '.join(sys.argv[1:])}`\n\n" + summary + "\n\n"
            + "\n".join(table(results) + estimate_tables(results)) + "\n")
    return summary


if __name__ == "__main__":
    main()
