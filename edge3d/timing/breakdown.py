"""Per-op-type time from ONNX Runtime's profiler, TensorRT's layer profile (trtexec
``--exportProfile``) or TVM's VM instrumentation, and per original 3D layer where the runtime
keeps node names.

Every node the lowering emits is named ``<original node>/<op>_<n>``, so summing the lowered
model's kernel times by that prefix gives the time of each original Conv3d, pool or norm.
TVM's compiled kernels lose the ONNX names, so its breakdown is per kernel family only.
"""

from __future__ import annotations

import json
import os
import re
import time
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
    return {"by_op_ms": _top(by_op), "by_layer_ms": _top(by_layer), "runs": runs}


def tvm_profile(session, feeds: dict, runs: int = 5) -> dict:
    """Time every call the Relax VM makes (its instrument hook runs before and after each one)
    and sum by kernel family: ``fused_conv2d3_add2_relu1`` counts as ``fused_conv2d_add_relu``,
    the VM's own allocations and reshapes as ``vm.builtin``."""
    totals, started = defaultdict(float), {}

    def instrument(_func, symbol, before, _ret, *_args):
        if before:
            started[symbol] = time.perf_counter()
        elif symbol in started:
            totals[symbol] += time.perf_counter() - started.pop(symbol)
        return 0  # VMInstrumentReturnKind.NO_OP

    session.vm.set_instrument(instrument)
    try:
        for _ in range(runs):
            session.run(feeds)
    finally:
        session.vm.set_instrument(None)
    by_op = defaultdict(float)
    for symbol, seconds in totals.items():
        by_op[_kernel_family(symbol)] += seconds * 1e3 / runs
    return {"by_op_ms": _top(by_op), "runs": runs}


def trt_profile(profile: Path, model: Path | None, lowered_nodes: list[str]) -> dict:
    """A TensorRT layer is named after the ONNX nodes it fused (``/a/Conv_3 + /a/Relu_4``,
    ``PWN(...)``, ``{ForeignNode[/a/Gather_1.../b/Conv_9]}``): its time goes to the first of them,
    and to its op type; reformat layers and names that match no node are kept apart."""
    import onnx

    from ..errors import InputError

    try:
        rows = json.loads(Path(profile).read_text())
        count, rows = int(rows[0]["count"]), rows[1:]
        layers = [(str(r["name"]), float(r["averageMs"])) for r in rows]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        raise InputError(f"{profile} is not a trtexec layer profile (written by --exportProfile)") from None
    op_of = {}
    if model is not None and Path(model).is_file():
        op_of = {n.name: n.op_type for n in onnx.load(str(model), load_external_data=False).graph.node}
    by_op, by_layer = defaultdict(float), defaultdict(float)
    for name, ms in layers:
        first = next((t for t in re.findall(r"/[^\s+(){}\[\],]+", name) if t in op_of), None)
        if name.startswith("Reformatting"):
            op, owner = "Reformat", "reformat layers"
        elif first is None:
            op, owner = "other", name
        else:
            op, owner = op_of[first], _owner(first, lowered_nodes)
        by_op[op] += ms
        by_layer[owner] += ms
    return {"by_op_ms": _top(by_op), "by_layer_ms": _top(by_layer), "runs": count}


def _kernel_family(symbol: str) -> str:
    if symbol.startswith("vm.builtin."):
        return "vm.builtin"
    return "_".join(re.sub(r"\d+$", "", part) for part in symbol.split("_"))


def _top(times: dict) -> dict:
    return dict(sorted(times.items(), key=lambda kv: -kv[1]))


def _owner(node: str, lowered: list[str]) -> str:
    """The original node a lowered node came from (the longest name it extends), else itself."""
    owners = [name for name in lowered if node.startswith(name + "/")]
    return max(owners, key=len) if owners else node
