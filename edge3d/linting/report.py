"""Render lint results for people (text), machines (json), code scanning (sarif) and CI (github)."""

from __future__ import annotations

import json
import re

from .. import __version__
from ..choices import LINT_FORMATS as FORMATS
from ..onnx_tensors import TensorInfo, shape_text
from .rank import RULE_DECLARED, RULE_RANK, LintResult

__all__ = ["FORMATS", "finding_dict", "github_data", "github_property", "printable", "render", "shape_text"]

# C0 and C1 control characters, and the Unicode line separators and bidirectional controls that
# can make a line show something else than it holds.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match) -> str:
    c = match.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def printable(text: str, keep: str = "") -> str:
    """``text`` with its control characters written as Python escapes (``\\n``, ``\\x1b``): a file
    or tensor name cannot start a new line (a forged CI command) or send terminal escape codes.
    The characters in ``keep`` are left as they are."""
    return _CONTROL.sub(lambda m: m.group() if m.group() in keep else _escape_char(m), str(text))


def github_data(text: str) -> str:
    """The message of a GitHub Actions workflow command: ``%``, CR and LF escaped as the runner
    unescapes them, other control characters as ``printable`` writes them."""
    return printable(text, keep="\r\n").replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def github_property(text: str) -> str:
    """A property value (``file=``, ``title=``) of a workflow command: as ``github_data``, and
    ``:`` and ``,``, which would end the value or forge another property."""
    return github_data(text).replace(":", "%3A").replace(",", "%2C")


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
        "shape_source": t.shape_source,
    }


def render(results: list[LintResult], fmt: str) -> str:
    return {"text": _text, "json": _json, "sarif": _sarif, "github": _github}[fmt](results)


def _text(results: list[LintResult]) -> str:
    """One line per finding and a verdict per file; a file that could not be read has no line
    here (its error goes to stderr). Control characters in names are escaped."""
    lines = []
    for r in results:
        if r.error:
            continue
        for t in r.findings:
            lines.append(f"{r.path}: {RULE_RANK} {_message(t)}")
        for m in r.mismatches:
            lines.append(f"{r.path}: {m.rule} {m.message}")
        for issue in r.issues:
            lines.append(f"{r.path}: {issue.rule} {issue.message}" + (f" [{issue.node}]" if issue.node else ""))
        for t in r.unknown:
            lines.append(f"{r.path}: note: rank of '{t.name}' from {_node(t.producer)} "
                         "is unknown after shape inference")
        for t in r.from_declaration:
            lines.append(f"{r.path}: note: rank of '{t.name}' from {_node(t.producer)} is taken from the file's "
                         "declaration: shape inference could not type it")
        above = f"{len(r.findings)} tensor(s)" if r.findings else "no tensor"
        verdict = f"{above} above rank {r.max_rank}"
        if r.target:
            verdict += f"; {len(r.issues)} {r.target} issue(s)" if r.issues else f"; fits {r.target}"
        if r.mismatches:
            verdict += f"; {len(r.mismatches)} declared shape(s) contradicted"
        lines.append(f"{r.path}: {verdict}; {r.tensor_count} tensors checked in {r.seconds:.2f}s")
    return "\n".join(printable(line) for line in lines)


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
                "declared_mismatches": [vars(m) for m in r.mismatches],
                "unknown_rank": [t.name for t in r.unknown],
                "declared_rank_only": [t.name for t in r.from_declaration],
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
        for m in r.mismatches:
            sarif_results.append({
                "ruleId": m.rule,
                "level": "error",
                "message": {"text": m.message},
                "locations": [{**location, "logicalLocations": [{"name": m.name, "kind": "variable"}]}],
                "properties": vars(m),
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
                    {"id": "E3D007", "name": "BatchOnTarget",
                     "shortDescription": {"text": "The input's batch exceeds what the target runs"}},
                    {"id": RULE_DECLARED, "name": "DeclaredShapeDisagrees",
                     "shortDescription": {"text": "A shape the file declares disagrees with shape inference"},
                     "help": {"text": "Ranks are checked on inferred shapes; remove the file's stale value_info "
                                      "(or fix the declared graph inputs/outputs) and export again."}},
                ],
            }},
            "results": sarif_results,
        }],
    }
    return json.dumps(doc, indent=2)


def _github(results: list[LintResult]) -> str:
    """GitHub Actions workflow commands: each finding becomes an annotation on the file. Every
    property and message is escaped, so no name can end the command or forge another one."""
    def annotation(kind: str, path: str, title: str, message: str) -> str:
        return f"::{kind} file={github_property(path)},title={github_property(title)}::{github_data(message)}"

    lines = []
    for r in results:
        if r.error:
            lines.append(annotation("error", r.path, "edge3d", r.error))
        for t in r.findings:
            lines.append(annotation("error", r.path, f"edge3d {RULE_RANK} rank {t.rank}", _message(t)))
        for m in r.mismatches:
            lines.append(annotation("error", r.path, f"edge3d {m.rule}", m.message))
        for issue in r.issues:
            lines.append(annotation("error", r.path, f"edge3d {issue.rule}", issue.message))
        for t in r.unknown:
            lines.append(annotation("notice", r.path, "edge3d", f"rank of {t.name} unknown after shape inference"))
        for t in r.from_declaration:
            lines.append(annotation("notice", r.path, "edge3d",
                                    f"rank of {t.name} taken from the file's declaration (not inferred)"))
    return "\n".join(lines)
