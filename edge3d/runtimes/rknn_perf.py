"""rknn-toolkit2's offline cost estimate, read from its verbose build, and the comparison of the
lowered model with the toolkit's own conversion of the 5D model.

The toolkit's compiler prints a per-layer table (estimated DDR and NPU cycles, bytes read) and the
model's weight and internal memory; no API returns them, and ``eval_perf`` needs a board. The
table's last column names each layer ``OpType:onnx_node_name``, so a layer is attributed to the
original model's node whose name prefixes it: the lowering names its nodes ``ORIGINAL/Op_N``, and
the toolkit names the Conv2d it makes of a Conv3d ``ORIGINAL_2d_tileK``.

Only convolutions carry cycles in the table (elementwise ops, pools and reshapes show 0), so the
totals are those of the convolutions on both sides.
"""

from __future__ import annotations

import re
from collections import defaultdict

ROW = re.compile(r"^(?P<id>\d+)\s+(?P<op>\S+)\s+(?P<dtype>\S+)\s+(?P<unit>\S+)\s+(?P<inputs>\S+)\s+(?P<outputs>\S+)\s+"
                 r"(?P<ddr>\d+)/(?P<npu>\d+)/(?P<total>\d+)\s+(?P<rw_kb>[\d.]+)\s+(?P<name>\S.*?)\s*$")
MEMORY = re.compile(r"Total (Internal|Weight) Memory Size:\s*([\d.]+)\s*(KB|MB|B)\b")
KB = {"B": 1 / 1024, "KB": 1.0, "MB": 1024.0}


def parse(lines: list[str]) -> dict:
    """Layers (name, op, unit, cycles) and totals from the worker's ``perf`` lines."""
    layers, memory = [], {}
    for line in lines:
        row = ROW.match(line.strip())
        if row:
            name = row["name"].partition(":")[2] or row["name"]
            layers.append({"name": name, "op": row["op"], "unit": row["unit"], "ddr_cycles": int(row["ddr"]),
                           "npu_cycles": int(row["npu"]), "cycles": int(row["total"])})
            continue
        found = MEMORY.search(line)
        if found:
            memory[f"{found[1].lower()}_kb"] = float(found[2]) * KB[found[3]]
    return {"layers": layers, "cycles": sum(x["cycles"] for x in layers),
            "npu_cycles": sum(x["npu_cycles"] for x in layers), "ddr_cycles": sum(x["ddr_cycles"] for x in layers),
            "weight_kb": memory.get("weight_kb"), "internal_kb": memory.get("internal_kb")}


def attribute(layers: list[dict], originals: list[str]) -> dict[str, int]:
    """Cycles per original node: the longest original name that prefixes the layer's name."""
    ordered = sorted((n for n in originals if n), key=len, reverse=True)
    per: dict[str, int] = defaultdict(int)
    for layer in layers:
        owner = next((n for n in ordered if layer["name"].startswith(n)), "(other)")
        per[owner] += layer["cycles"]
    return dict(per)


def compare(lowered: dict, toolkit: dict | None, originals: list[str], top: int = 10) -> dict:
    """The manifest's record: totals of both, the ratio lowered/toolkit, and the layers that cost
    most under the toolkit's conversion with what they cost lowered."""
    summary: dict = {"lowered": {k: v for k, v in lowered.items() if k != "layers"}}
    if toolkit is None:
        return summary
    summary["toolkit_5d"] = {k: v for k, v in toolkit.items() if k != "layers"}
    if toolkit["cycles"]:
        summary["cycles_ratio"] = lowered["cycles"] / toolkit["cycles"]
    if lowered.get("weight_kb") and toolkit.get("weight_kb"):
        summary["weight_ratio"] = lowered["weight_kb"] / toolkit["weight_kb"]
    mine, theirs = attribute(lowered["layers"], originals), attribute(toolkit["layers"], originals)
    names = sorted(set(mine) | set(theirs), key=lambda n: -max(theirs.get(n, 0), mine.get(n, 0)))
    summary["layers"] = [{"layer": n, "lowered_cycles": mine.get(n, 0), "toolkit_cycles": theirs.get(n, 0)}
                         for n in names[:top]]
    return summary


ESTIMATE_HEADER = ["artifact", "lowered cycles", "vendor's 5D conversion", "lowered / vendor",
                   "weights (lowered / vendor)", "internal memory (lowered / vendor)"]


def cycles_text(cycles: int) -> str:
    return f"{cycles / 1e6:.2f} M" if cycles >= 100_000 else f"{cycles / 1e3:.1f} k"


def estimates_of(artifacts: list[dict]) -> dict[str, dict]:
    """``{"rknn (fp16)": npu_estimate, …}`` of a manifest's artifacts that carry one."""
    return {f"{a['runtime']} ({a['precision']})": a["meta"]["npu_estimate"] for a in artifacts
            if (a.get("meta") or {}).get("npu_estimate")}


def estimate_rows(estimates: dict[str, dict]) -> list[list[str]]:
    """The rows of ESTIMATE_HEADER, for report.md and ``edge3d bench``."""
    def kb(x):
        return "—" if x is None else f"{x:,.0f} KB"

    rows = []
    for label, e in estimates.items():
        low, kit = e["lowered"], e.get("toolkit_5d") or {}
        if "error" in kit or not kit:
            rows.append([label, cycles_text(low["cycles"]), kit.get("error", "not built"), "—",
                         f"{kb(low.get('weight_kb'))} / —", f"{kb(low.get('internal_kb'))} / —"])
            continue
        ratio = e.get("cycles_ratio")
        rows.append([label, cycles_text(low["cycles"]), cycles_text(kit["cycles"]),
                     "—" if ratio is None else f"{ratio:.2f}×",
                     f"{kb(low.get('weight_kb'))} / {kb(kit.get('weight_kb'))}",
                     f"{kb(low.get('internal_kb'))} / {kb(kit.get('internal_kb'))}"])
    return rows
