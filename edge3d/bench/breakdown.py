"""Per-op-type time from ONNX Runtime's profiler, and per original 3D layer.

Every node the lowering emits is named ``<original node>/<op>_<n>``, so summing the lowered
model's kernel times by that prefix gives the time of each original Conv3d, pool or norm.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path


def ort_profile(model: Path, feeds: dict, lowered_nodes: list[str], runs: int = 5, threads: int | None = None) -> dict:
    """``lowered_nodes``: names of the original nodes the rewrite summary lists."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, feeds)
    trace = session.end_profiling()
    try:
        events = json.loads(Path(trace).read_text())
    finally:
        os.remove(trace)
    by_op, by_layer = defaultdict(float), defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        ms = event["dur"] / 1e3 / runs
        by_op[event["args"].get("op_name", "?")] += ms
        node = event["name"][: -len("_kernel_time")]
        by_layer[_owner(node, lowered_nodes)] += ms
    top = lambda d: dict(sorted(d.items(), key=lambda kv: -kv[1]))  # noqa: E731
    return {"by_op_ms": top(by_op), "by_layer_ms": top(by_layer), "runs": runs}


def _owner(node: str, lowered: list[str]) -> str:
    """The original node a lowered node came from (the longest name it extends), else itself."""
    owners = [name for name in lowered if node.startswith(name + "/")]
    return max(owners, key=len) if owners else node
