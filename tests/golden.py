"""Golden op histograms: the structure of a lowered graph, stored under tests/golden/<name>.json.

A change to the lowering can add layout round trips (extra Transpose, Reshape or Gather nodes)
while the numerics still pass; comparing how many nodes of each op type the main graph has with
a stored count catches that. After a change that is meant to alter the lowered structure, rerun
the tests with ``--update-golden`` and review the diff of tests/golden/*.json.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
LAYOUT_OPS = ("Gather", "Reshape", "Transpose")  # more of these is the regression guarded against
UPDATE_HINT = "--update-golden"


def op_histogram(model_proto) -> dict[str, int]:
    """op_type -> number of nodes of the main graph (subgraphs not counted), sorted by op_type."""
    counts = Counter(node.op_type for node in model_proto.graph.node)
    return dict(sorted(counts.items()))


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(GOLDEN_DIR.parent.parent))
    except ValueError:
        return str(path)


def _diff(stored: dict[str, int], now: dict[str, int]) -> tuple[list[str], list[str]]:
    """Lines ``op: stored -> now`` for every op whose count changed, and the ops that went up."""
    lines, up = [], []
    for op in sorted(set(stored) | set(now)):
        before, after = stored.get(op, 0), now.get(op, 0)
        if before == after:
            continue
        change = after - before
        if change > 0:
            up.append(op)
        lines.append(f"  {op}: {before or 'absent'} -> {after or 'absent'}  ({_direction(change)})")
    return lines, up


def _direction(change: int) -> str:
    return f"UP +{change}" if change > 0 else f"down {change}" if change < 0 else "unchanged"


def check_golden(name: str, model_proto, update: bool, directory: Path | None = None) -> dict:
    """Compare ``model_proto``'s op histogram with ``<directory>/<name>.json`` (default
    tests/golden), failing the test with a readable diff on a mismatch. With ``update`` the file
    is (re)written instead. Returns the histogram as stored: {"ops": {...}, "total": N}."""
    path = (GOLDEN_DIR if directory is None else Path(directory)) / f"{name}.json"
    ops = op_histogram(model_proto)
    now = {"ops": ops, "total": sum(ops.values())}

    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(now, indent=2) + "\n")
        return now
    if not path.is_file():
        pytest.fail(f"no golden op histogram {_shown(path)} for {name!r}; rerun with {UPDATE_HINT} to "
                    f"write it, and review it before committing", pytrace=False)

    stored = json.loads(path.read_text())
    if stored == now:
        return now
    lines, up = _diff(stored.get("ops", {}), ops)
    total_before, total_after = stored.get("total"), now["total"]
    message = [f"the lowered graph of {name!r} no longer matches its golden op histogram "
               f"{_shown(path)} (per op: stored -> now):", *lines,
               f"  total: {total_before} -> {total_after}  ({_direction(total_after - (total_before or 0))})"]
    if up:
        message.append(f"went UP: {', '.join(up)}")
        layout_up = [op for op in up if op in LAYOUT_OPS]
        if layout_up:
            message.append(f"more {'/'.join(layout_up)} nodes: the lowering may have added layout round "
                           f"trips, the regression this check guards against")
    message.append(f"if the change in structure is intended, rerun with {UPDATE_HINT} and review the diff "
                   f"of tests/golden/*.json")
    pytest.fail("\n".join(message), pytrace=False)
