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
    return {"json": to_json, "md": to_markdown, "html": to_html, "text": to_text}[fmt](report)


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2)


def _si(value, unit: str = "") -> str:
    """18027541 → "18.03 M", 4935270400 → "4.94 G" (with ``unit`` after the prefix)."""
    if not isinstance(value, (int, float)):
        return "—"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:g} {unit}".strip()


def _table(report: dict) -> tuple[list[str], list[list[str]]]:
    """The comparison table, every cell formatted once for every format: milliseconds with two
    decimals, throughput with one, parameters and MACs with SI prefixes."""
    names = list(report["models"])
    models = [report["models"][n] for n in names]
    rows = [["load (s)"] + [f"{m.get('load_s', 0):.2f}" for m in models],
            ["first run (ms)"] + [f"{m.get('cold_ms', 0):.2f}" for m in models]]
    for key in STATS:
        rows.append([key.replace("_ms", "").replace("_", " ") + " (ms)"]
                    + [f"{m['latency'].get(key, float('nan')):.2f}" for m in models])
    rows.append(["clips/s"] + [f"{m['latency'].get('clips_per_s', float('nan')):.1f}" for m in models])
    rows.append(["frames/s"] + [f"{m['latency'].get('frames_per_s', float('nan')):.1f}" for m in models])
    rows.append(["parameters"] + [_si(m.get("params")) for m in models])
    rows.append(["MACs"] + [_si(m.get("macs")) for m in models])
    rows.append(["max rank"] + [str(m.get("max_rank", "—")) for m in models])
    return [""] + names, rows


def _summary(report: dict) -> list[str]:
    """Plain sentences (no markup): interruption, the ratio and what it means."""
    lines = []
    if not report["complete"]:
        lines.append("Interrupted: the figures cover the runs measured before Ctrl-C.")
    ratio = report.get("ratio")
    if ratio:
        verdict = "a real difference" if ratio["significant"] else "within noise"
        lines.append(f"lowered / original median latency: {ratio['ratio']:.2f} ({ratio['level']:.0%} bootstrap "
                     f"interval {ratio['low']:.2f}–{ratio['high']:.2f}: {verdict})")
    return lines


def _streaming(report: dict) -> list[str]:
    return [f"streaming ({name}): window {s['window']}, hop {s['hop']}, camera {s['camera_fps']:g} fps → "
            f"{s['amortised_ms_per_frame']:.2f} ms per frame amortised, budget {s['budget_ms_per_clip']:.2f} ms "
            f"per clip: {'keeps up' if s['keeps_up'] else 'falls behind'} (p99), up to {s['max_camera_fps']:.1f} fps"
            for name, s in report.get("streaming", {}).items()]


def _breakdown(report: dict, what: str = "by_layer_ms", top: int = 10) -> tuple[list[str], list[list[str]]]:
    """The per-layer (or per-op) time of each model, slowest first, side by side."""
    breakdown = report.get("breakdown") or {}
    header: list[str] = []
    rows: list[list[str]] = []
    for name, b in breakdown.items():
        header += [f"{name}: {what.split('_')[1]}", "ms"]
        items = list(b.get(what, {}).items())[:top]
        for i, (key, ms) in enumerate(items):
            while len(rows) <= i:
                rows.append([])
            rows[i] += [key, f"{ms:.2f}"]
    width = len(header)
    return header, [row + [""] * (width - len(row)) for row in rows]


def _environment(report: dict) -> str:
    env = report["environment"]
    threads = env.get("threads") or (f"{env['cpu_count']} (the runtime's default: one per core)"
                                      if env.get("cpu_count") else "the runtime's default")
    cpu = f"{env['cpu']} ({env['cpu_count']} CPUs), " if env.get("cpu_count") else ""  # none for a trtexec log
    return (f"Environment: {cpu}GPU {env['gpu'] or 'none'}, threads {threads}, "
            f"target {env['target']['name']}"
            + (f", TVM tuned with {env['tvm_tuning_trials']} trials each" if env.get("tvm_tuning_trials") else "")
            + "; " + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
            + f". Peak RSS {report.get('peak_rss_mb', 0):.0f} MB.")


def _estimates(report: dict) -> tuple[list[str], list[list[str]]]:
    from ..runtimes.rknn_perf import ESTIMATE_HEADER, estimate_rows

    return ESTIMATE_HEADER, estimate_rows(report.get("npu_estimates") or {})


ESTIMATES_TITLE = "Estimated NPU cost at export (vendor compiler, offline): lowered vs the vendor's own 5D conversion"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(row) + " |" for row in rows])


def to_markdown(report: dict) -> str:
    lines = [f"## edge3d bench — `{report['bundle']}` ({report['runtime']})", ""]
    lines += [f"**{line}**" for line in _summary(report)] + [""]
    lines += _md_table(*_table(report)) + [""]
    lines += [f"- {line}" for line in _streaming(report)]
    header, rows = _breakdown(report)
    if rows:
        lines += ["", "Time by layer of the original model (the lowered model's nodes added back to it):", ""]
        lines += _md_table(header, rows)
    header, rows = _estimates(report)
    if rows:
        lines += ["", ESTIMATES_TITLE + ":", ""] + _md_table(header, rows)
    lines += ["", _environment(report), ""]
    return "\n".join(lines)


def _rich_table(Table, header: list[str], rows: list[list[str]], title: str | None = None):
    """Numbers right-aligned: every column but a label column (the first, and each ``…: layer``)."""
    table = Table(title=title, show_edge=False)
    for i, name in enumerate(header):
        label = i == 0 if title is None else i % 2 == 0
        table.add_column(name, justify="left" if label else "right")
    for row in rows:
        table.add_row(*row)
    return table


def to_text(report: dict) -> str:
    """For a terminal: rich tables, plain sentences."""
    from rich.console import Console
    from rich.table import Table

    console = Console(record=True, width=120, file=io.StringIO(), force_terminal=False, color_system=None)
    console.print(f"edge3d bench — {report['bundle']} ({report['runtime']})")
    for line in _summary(report):
        console.print(line)
    console.print(_rich_table(Table, *_table(report)))
    for line in _streaming(report):
        console.print(line)
    header, rows = _breakdown(report)
    if rows:
        console.print(_rich_table(Table, header, rows, "time by layer (slowest first)"))
    header, rows = _estimates(report)
    if rows:
        console.print(ESTIMATES_TITLE)
        console.print(_rich_table(Table, header, rows))
    console.print(_environment(report))
    return console.export_text().rstrip()


def _figure_png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _plots(report: dict) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    plots = []
    series = {n: m["times_ms"] for n, m in report["models"].items() if m.get("times_ms")}
    if series:
        fig, (cdf, hist) = plt.subplots(1, 2, figsize=(11, 3.6))
        runs = max(len(t) for t in series.values())
        edges = np.histogram_bin_edges(np.concatenate(list(series.values())),
                                       bins=max(3, min(30, int(np.sqrt(runs)) + 1)))  # no more bins than runs allow
        for name, times in series.items():
            ordered = np.sort(times)  # the empirical CDF: a step at each run, from 0 to 1
            cdf.step(np.concatenate([[ordered[0]], ordered]), np.arange(len(ordered) + 1) / len(ordered),
                     where="post", label=name)
            hist.hist(times, bins=edges, alpha=0.6, label=name)
        cdf.set(xlabel="latency (ms)", ylabel="fraction of runs", title="latency CDF", ylim=(0, 1.02))
        hist.set(xlabel="latency (ms)", ylabel="runs", title="latency histogram")
        hist.yaxis.set_major_locator(MaxNLocator(integer=True))
        cdf.legend()
        hist.legend()
        plots.append(("Latency", _figure_png(fig)))
        plt.close(fig)
    breakdown = report.get("breakdown") or {}
    if breakdown:
        fig, axes = plt.subplots(1, len(breakdown), figsize=(5.5 * len(breakdown), 3.6), squeeze=False, sharex=True)
        for ax, (name, b) in zip(axes[0], breakdown.items()):
            items = list(b["by_op_ms"].items())[:10][::-1]
            ax.barh([k for k, _ in items], [v for _, v in items])
            ax.set(xlabel="ms per run", title=f"{name}: time by op type")
        plots.append(("Time by op type (one scale)", _figure_png(fig)))
        plt.close(fig)
    return plots


def _html_table(header: list[str], rows: list[list[str]], css: str = "") -> str:
    return (f"<table class='{css}'><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
            + "</table>")


def to_html(report: dict) -> str:
    figures = "".join(f"<h2>{html.escape(t)}</h2><img alt='{html.escape(t)}' src='data:image/png;base64,{png}'>"
                      for t, png in _plots(report))
    summary = "".join(f"<p><strong>{html.escape(line)}</strong></p>" for line in _summary(report))
    streaming = "".join(f"<p>{html.escape(line)}</p>" for line in _streaming(report))
    header, rows = _breakdown(report)
    layers = (f"<h2>Time by layer of the original model</h2>{_html_table(header, rows, 'layers')}" if rows else "")
    header, rows = _estimates(report)
    if rows:
        layers += f"<h2>{html.escape(ESTIMATES_TITLE)}</h2>{_html_table(header, rows)}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edge3d bench — {html.escape(report['bundle'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:72em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td:first-child{{text-align:left}}
table.layers td:nth-child(odd){{text-align:left}}
img{{max-width:100%}}</style></head>
<body><h1>edge3d bench</h1><p>{html.escape(report['bundle'])} — runtime {html.escape(report['runtime'])}</p>
{summary}{_html_table(*_table(report))}{streaming}{figures}{layers}
<h2>Environment</h2><p>{html.escape(_environment(report))}</p>
</body></html>
"""
