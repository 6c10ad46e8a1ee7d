"""Bench reports: JSON (schema in schema.json), markdown for pull requests, and one
self-contained HTML file with plots (matplotlib, embedded as PNG)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from ..latency import KEYS

SCHEMA = Path(__file__).with_name("schema.json")
STATS = tuple(k for k in KEYS if k != "iters")  # the rows of the table, in edge3d.latency's order


def render(report: dict, fmt: str) -> str:
    return {"json": to_json, "md": to_markdown, "html": to_html, "text": to_markdown}[fmt](report)


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2)


def _rows(report: dict) -> list[str]:
    names = list(report["models"])
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in ("load_s", "cold_ms"):
        lines.append(f"| {key.replace('_', ' ')} | "
                     + " | ".join(f"{report['models'][n].get(key, 0):.3g}" for n in names) + " |")
    for key in STATS + ("clips_per_s", "frames_per_s"):
        lines.append(f"| {key.replace('_ms', ' ms').replace('_per_s', '/s').replace('_', ' ')} | "
                     + " | ".join(f"{report['models'][n]['latency'].get(key, float('nan')):.3f}" for n in names) + " |")
    for key in ("params", "macs", "max_rank"):
        lines.append(f"| {key} | " + " | ".join(f"{report['models'][n].get(key, '')}" for n in names) + " |")
    return lines


def to_markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"## edge3d bench — `{report['bundle']}` ({report['runtime']})", ""]
    if not report["complete"]:
        lines += ["**Interrupted**: the figures cover the runs measured before Ctrl-C.", ""]
    ratio = report.get("ratio")
    if ratio:
        verdict = "a real difference" if ratio["significant"] else "within noise"
        lines += [f"**lowered / original median latency: {ratio['ratio']:.3f}** "
                  f"({ratio['level']:.0%} bootstrap interval {ratio['low']:.3f}–{ratio['high']:.3f}: {verdict})", ""]
    lines += _rows(report) + [""]
    for name, s in report.get("streaming", {}).items():
        lines.append(f"- streaming ({name}): window {s['window']}, hop {s['hop']}, camera {s['camera_fps']:g} fps → "
                     f"{s['amortised_ms_per_frame']:.2f} ms per frame amortised, "
                     f"budget {s['budget_ms_per_clip']:.1f} ms per clip: "
                     f"{'keeps up' if s['keeps_up'] else 'falls behind'} (p99), up to {s['max_camera_fps']:.1f} fps")
    for name, b in report.get("breakdown", {}).items():
        top = list(b["by_op_ms"].items())[:8]
        lines.append(f"- {name} by op type: " + ", ".join(f"{op} {ms:.2f} ms" for op, ms in top))
    lines += ["", f"Environment: {env['cpu']} ({env['cpu_count']} CPUs), GPU {env['gpu'] or 'none'}, "
              f"threads {env['threads'] or 'default'}, target {env['target']['name']}"
              + (f", TVM tuned with {env['tvm_tuning_trials']} trials each" if env.get("tvm_tuning_trials") else "")
              + "; "
              + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
              + f". Peak RSS {report.get('peak_rss_mb', 0):.0f} MB.", ""]
    return "\n".join(lines)


def _figure_png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _plots(report: dict) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    plots = []
    series = {n: m["times_ms"] for n, m in report["models"].items() if m.get("times_ms")}
    if series:
        fig, (cdf, hist) = plt.subplots(1, 2, figsize=(11, 3.6))
        for name, times in series.items():
            ordered = np.sort(times)
            cdf.plot(ordered, np.arange(1, len(ordered) + 1) / len(ordered), label=name)
            hist.hist(times, bins=30, alpha=0.6, label=name)
        cdf.set(xlabel="latency (ms)", ylabel="fraction of runs", title="latency CDF")
        hist.set(xlabel="latency (ms)", ylabel="runs", title="latency histogram")
        cdf.legend()
        hist.legend()
        plots.append(("Latency", _figure_png(fig)))
        plt.close(fig)
    breakdown = report.get("breakdown") or {}
    if breakdown:
        fig, axes = plt.subplots(1, len(breakdown), figsize=(5.5 * len(breakdown), 3.6), squeeze=False)
        for ax, (name, b) in zip(axes[0], breakdown.items()):
            items = list(b["by_op_ms"].items())[:10][::-1]
            ax.barh([k for k, _ in items], [v for _, v in items])
            ax.set(xlabel="ms per run", title=f"{name}: time by op type")
        plots.append(("Per-op breakdown", _figure_png(fig)))
        plt.close(fig)
    return plots


def to_html(report: dict) -> str:
    md_table = _rows(report)
    header = [c.strip() for c in md_table[0].strip("|").split("|")]
    body = [[c.strip() for c in row.strip("|").split("|")] for row in md_table[2:]]
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body) + "</table>"
    figures = "".join(f"<h2>{html.escape(t)}</h2><img alt='{html.escape(t)}' src='data:image/png;base64,{png}'>"
                      for t, png in _plots(report))
    summary = html.escape(to_markdown(report).split("\n\n")[1] if report.get("ratio") else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edge3d bench — {html.escape(report['bundle'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:72em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}img{{max-width:100%}}</style></head>
<body><h1>edge3d bench</h1><p>{html.escape(report['bundle'])} — runtime {html.escape(report['runtime'])}</p>
<p>{summary}</p>{table}{figures}
<h2>Environment</h2><pre>{html.escape(json.dumps(report['environment'], indent=2))}</pre>
</body></html>
"""
