"""Render lint results for people (text), machines (json), code scanning (sarif) and CI (github)."""

from __future__ import annotations

import json

from .. import __version__
from ..onnx_tensors import TensorInfo
from .rank import RULE_RANK, LintResult

FORMATS = ("text", "json", "sarif", "github")


def shape_text(shape) -> str:
    if shape is None:
        return "?"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _node(pair) -> str:
    return f"{pair[0]} ({pair[1]})" if pair else "-"


def _message(t: TensorInfo) -> str:
    where = f"produced by {_node(t.producer)}" if t.producer else f"graph {t.kind}"
    used = ", ".join(_node(c) for c in t.consumers) or "nothing"
    return f"rank-{t.rank} tensor '{t.name}' {shape_text(t.shape)} {where}; used by {used}"


def finding_dict(t: TensorInfo) -> dict:
    return {
        "name": t.name,
        "rank": t.rank,
        "shape": list(t.shape) if t.shape is not None else None,
        "dtype": t.dtype,
        "kind": t.kind,
        "graph": t.graph,
        "producer": {"name": t.producer[0], "op": t.producer[1]} if t.producer else None,
        "consumers": [{"name": n, "op": op} for n, op in t.consumers],
    }


def render(results: list[LintResult], fmt: str) -> str:
    return {"text": _text, "json": _json, "sarif": _sarif, "github": _github}[fmt](results)


def _text(results: list[LintResult]) -> str:
    lines = []
    for r in results:
        if r.error:
            lines.append(f"{r.path}: error: {r.error}")
            continue
        for t in r.findings:
            lines.append(f"{r.path}: {RULE_RANK} {_message(t)}")
        for issue in r.issues:
            lines.append(f"{r.path}: {issue.rule} {issue.message}" + (f" [{issue.node}]" if issue.node else ""))
        for t in r.unknown:
            lines.append(f"{r.path}: note: rank of '{t.name}' from {_node(t.producer)} "
                         "is unknown after shape inference")
        above = f"{len(r.findings)} tensor(s)" if r.findings else "no tensor"
        verdict = f"{above} above rank {r.max_rank}"
        if r.target:
            verdict += f"; {len(r.issues)} {r.target} issue(s)" if r.issues else f"; fits {r.target}"
        lines.append(f"{r.path}: {verdict}; {r.tensor_count} tensors checked in {r.seconds:.2f}s")
    return "\n".join(lines)


def _json(results: list[LintResult]) -> str:
    doc = {
        "tool": "edge3d",
        "version": __version__,
        "files": [
            {
                "path": r.path,
                "max_rank": r.max_rank,
                "error": r.error,
                "tensors_checked": r.tensor_count,
                "findings": [finding_dict(t) for t in r.findings],
                "target": r.target,
                "target_issues": [vars(i) for i in r.issues],
                "unknown_rank": [t.name for t in r.unknown],
                "exit_code": r.exit_code,
            }
            for r in results
        ],
    }
    return json.dumps(doc, indent=2)


def _sarif(results: list[LintResult]) -> str:
    sarif_results = []
    for r in results:
        location = {"physicalLocation": {"artifactLocation": {"uri": r.path}}}
        if r.error:
            sarif_results.append({"ruleId": "E3D000", "level": "error", "message": {"text": r.error},
                                  "locations": [location]})
        for t in r.findings:
            sarif_results.append({
                "ruleId": RULE_RANK,
                "level": "error",
                "message": {"text": _message(t)},
                "locations": [{**location, "logicalLocations": [{"name": t.name, "kind": "variable"}]}],
                "properties": finding_dict(t),
            })
        for issue in r.issues:
            sarif_results.append({"ruleId": issue.rule, "level": "error", "message": {"text": issue.message},
                                  "locations": [location], "properties": vars(issue)})
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "edge3d",
                "version": __version__,
                "rules": [
                    {"id": RULE_RANK, "name": "TensorAboveMaxRank",
                     "shortDescription": {"text": "A tensor has more dimensions than the target accepts"},
                     "help": {"text": "Lower the model with `edge3d export` or `edge3d lower` "
                                      "so every tensor is rank 4."}},
                    {"id": "E3D000", "name": "UnreadableModel",
                     "shortDescription": {"text": "The file is not a readable ONNX model"}},
                    {"id": "E3D002", "name": "OpNotOnTarget",
                     "shortDescription": {"text": "The target profile does not support this op"}},
                    {"id": "E3D003", "name": "OpLimitOnTarget",
                     "shortDescription": {"text": "The op exceeds a limit of the target profile"}},
                    {"id": "E3D004", "name": "DynamicShapeOnTarget",
                     "shortDescription": {"text": "The target needs static shapes"}},
                    {"id": "E3D005", "name": "OpsetOnTarget",
                     "shortDescription": {"text": "The model's opset is newer than the target's"}},
                ],
            }},
            "results": sarif_results,
        }],
    }
    return json.dumps(doc, indent=2)


def _github(results: list[LintResult]) -> str:
    """GitHub Actions workflow commands: each finding becomes an annotation on the file."""
    def escape(text: str) -> str:
        return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    lines = []
    for r in results:
        if r.error:
            lines.append(f"::error file={r.path},title=edge3d::{escape(r.error)}")
        for t in r.findings:
            lines.append(f"::error file={r.path},title=edge3d {RULE_RANK} rank {t.rank}::{escape(_message(t))}")
        for issue in r.issues:
            lines.append(f"::error file={r.path},title=edge3d {issue.rule}::{escape(issue.message)}")
        for t in r.unknown:
            note = escape(f"rank of {t.name} unknown after shape inference")
            lines.append(f"::notice file={r.path},title=edge3d::{note}")
    return "\n".join(lines)
