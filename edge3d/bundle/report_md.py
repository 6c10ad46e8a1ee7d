"""The bundle's human report: what was built, how faithful and how fast it is, how to run it."""

from __future__ import annotations

from pathlib import Path


def _shape(shape) -> str:
    return "×".join(str(d) for d in shape) if shape else "?"


def _approximation(block: dict | None) -> list[str]:
    """A `--block` export is not the original model: say so first, with its distance to it (the
    verification further down is of the lowering of the rewritten model, which is exact)."""
    if not block:
        return []
    fidelity = (block.get("fidelity_to_original") or {}).get("outputs") or []
    worst = max(fidelity, key=lambda o: o["rel_l2"]) if fidelity else None
    distance = (f": relative L2 {worst['rel_l2']:.2e}, cosine {worst['cosine']:.4f} from the original model"
                if worst else "")
    layers = (block.get("model") or {}).get("replaced_layers", "?")
    return [f"**An approximation of the original model**{distance} ({layers} Conv3d replaced by "
            f"{block.get('block', 'blocks')} blocks). The verification below measures the lowering of the "
            "rewritten model, not its distance to the original.", ""]


def _npu_estimates(artifacts: list[dict]) -> list[str]:
    from ..runtimes.rknn_perf import ESTIMATE_HEADER, cycles_text, estimate_rows, estimates_of

    rows = estimate_rows(estimates_of(artifacts))
    if not rows:
        return []
    lines = ["", "## Estimated NPU cost: lowered against the vendor's own Conv3d conversion", "",
             "The vendor compiler's offline per-layer estimate (convolutions), for `model.onnx` and for the "
             "original 5D model as the vendor's toolkit converts it itself.", "",
             "| " + " | ".join(ESTIMATE_HEADER) + " |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    for a in artifacts:
        layers = a.get("meta", {}).get("npu_estimate", {}).get("layers")
        if layers:
            lines += ["", f"Costliest layers of the original model ({a['runtime']} {a['precision']}), cycles "
                      "vendor → lowered: " + "; ".join(f"`{x['layer']}` {cycles_text(x['toolkit_cycles'])} → "
                                                       f"{cycles_text(x['lowered_cycles'])}" for x in layers[:5]) + "."]
    return lines


def _vela_estimates(artifacts: list[dict]) -> list[str]:
    """Vela's offline estimate for the lowered model beside the original 5D model's."""
    lines = []
    for a in artifacts:
        estimate = (a.get("meta") or {}).get("vela_estimate")
        if not estimate:
            continue
        lines += ["", f"## Estimated on {a['meta']['accelerator']} (Vela, offline): lowered against the 5D model", "",
                  "| model | NPU time (ms) | operators on the NPU | SRAM (KiB) | flash / DRAM (KiB) | on the CPU |",
                  "|---|---|---|---|---|---|"]
        for label, e in (("lowered (int8)", estimate["lowered"]), ("original 5D", estimate["original_5d"])):
            if not e.get("ok"):
                lines.append(f"| {label} | {e.get('error', 'not compiled')} | | | | |")
                continue
            cpu = ", ".join(f"{op} ×{n}" for op, n in sorted(e["cpu_ops"].items())) or "nothing"
            lines.append(f"| {label} ({e.get('precision', 'int8')}) | {e['inference_ms']:.2f} | {e['npu_share']:.0%} "
                         f"of {e['ops']} | {e['sram_kib']:.0f} | {e['flash_kib'] + e['dram_kib']:.0f} | {cpu} |")
        reasons = estimate["original_5d"].get("cpu_reasons") or []
        if estimate["original_5d"].get("int8_error"):
            lines += ["", f"The 5D model: {estimate['original_5d']['int8_error'][:300]}."]
        if reasons:
            lines += ["", "Vela's reasons for the 5D model's CPU operators: " + "; ".join(reasons) + "."]
        lines += ["", "The NPU time leaves out operators on the CPU and the hand-overs between the two."]
    return lines


def write_report(path: Path, manifest: dict) -> None:
    t = manifest["target"]
    m = manifest["model"]
    lines = [
        f"# edge3d bundle — target `{t['name']}` ({t['precision']})", "",
        *_approximation(manifest.get("block_rewrite")),
        t["description"], "",
        f"Source: `{manifest['source']['path']}` ({manifest['source']['kind']}). "
        f"`model.onnx`: opset {m['opset']}, max rank {m['max_rank']}, "
        f"{manifest['rewrite']['lowered_nodes']} nodes lowered.", "",
        "## Inputs and outputs", "",
        "| name | layout | shape | original shape | dtype |", "|---|---|---|---|---|",
    ]
    for io in manifest["inputs"] + manifest["outputs"]:
        lines.append(f"| `{io['name']}` | {io['layout']} | {_shape(io['shape'])} | {_shape(io['original_shape'])} "
                     f"| {io['dtype']} |")
    lines += ["", "A `frames` tensor is the clip `(B, C, T, H, W)` as `(B·T, C, H, W)`, batch-major:",
              "`edge3d.layouts.clip_to_frames(clip)` / `frames_to_clip(frames, B)`. A `row-major` output "
              "(rank 6 to 8) holds its elements in row-major order: reshape it to its original shape.", ""]
    lines += _verification(manifest.get("verification"))
    lines += ["## Artifacts", "",
              "| runtime | precision | files | built here | verified here | rel-L2 | cosine | top-1 | median ms |",
              "|---|---|---|---|---|---|---|---|---|"]
    for a in manifest["artifacts"]:
        v = a.get("verification")
        out = v["outputs"][0] if v and v["outputs"] else {}
        fmt = lambda x, f: "—" if x is None else f.format(x)  # noqa: E731
        lines.append(
            f"| {a['runtime']} | {a['precision']} | {', '.join('`' + f + '`' for f in a['files'])} | "
            f"{'yes' if a['built_here'] else 'on the device'} | {'yes' if v else 'no'} | "
            f"{fmt(out.get('rel_l2'), '{:.2e}')} | {fmt(out.get('cosine'), '{:.5f}')} | "
            f"{fmt(out.get('top1'), '{:.0%}')} | "
            f"{fmt(a.get('latency', {}).get('median_ms'), '{:.2f}')} |")
    lines += _npu_estimates(manifest["artifacts"])
    lines += _vela_estimates(manifest["artifacts"])
    slow = [a["slow"] for a in manifest["artifacts"] if a.get("slow")]
    if slow:
        lines += [""] + [f"**Slow here:** {line}." for line in slow]
    warned = [f"{a['runtime']} ({a['precision']}): {w}" for a in manifest["artifacts"] for w in a.get("warnings", [])]
    if warned:
        lines += [""] + [f"**Warning:** {line}." for line in warned]
    device_builds = [a for a in manifest["artifacts"] if not a["built_here"]]
    if device_builds:
        lines += ["", "## To build on the device", ""]
        for a in device_builds:
            lines += [f"- {a['runtime']}: " + "; ".join(a["notes"]) + "."]
            if a.get("device_steps"):
                lines += ["  ```sh"] + [f"  {step}" for step in a["device_steps"]] + ["  ```"]
    if manifest.get("target_lint"):
        lines += ["", f"## {t['name']} profile findings", ""]
        lines += [f"- {i['rule']} {i['message']}" + (f" ({i['node']})" if i["node"] else "")
                  for i in manifest["target_lint"][:50]]
    notes = manifest.get("notes", [])
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    tools = ", ".join(f"{k} {v}" for k, v in manifest["tools"].items())
    lines += ["", f"Tools: {tools}.", ""]
    path.write_text("\n".join(lines))


def _verification(v: dict | None) -> list[str]:
    """The lowered model's two checks: against the 5D ONNX model (the lowering's own error) and
    against PyTorch, beside what the plain 5D export achieves there."""
    if not v or not v.get("lowering"):
        return []
    fmt = lambda x: "—" if x is None else f"{x:.2e}"  # noqa: E731
    own = {o["name"]: o for o in v["lowering"]["outputs"]}
    lines = ["## Verification", "",
             f"On {v['samples']} seeded inputs (seed {v['seed']}), {v['precision']}; the worst sample counts. "
             "The lowering's error is the lowered model against the plain 5D ONNX model in ONNX Runtime; "
             f"its tolerance is {v['lowering']['tolerance']['rel_l2']:.0e}.", ""]
    plain = v.get("plain_export")
    if plain is None:  # an ONNX source: the 5D ONNX model is the reference
        lines += ["| output | lowering error (rel-L2) | tolerance |", "|---|---|---|"]
        lines += [f"| `{o['name']}` | {fmt(o['rel_l2'])} | {fmt(o['tolerance'])} |" for o in v["outputs"]]
    else:
        from ..verify import PLAIN_EXPORT_FACTOR, TOLERANCES

        lines[-2] += (f" Against PyTorch, each output may differ by {PLAIN_EXPORT_FACTOR:g} × the plain export's "
                      f"own error, and always by {TOLERANCES[v['precision']].rel_l2:.0e}: only error the lowering "
                      "adds fails.")
        exported = {o["name"]: o for o in plain["outputs"]}
        lines += ["| output | lowering error (vs 5D ONNX) | vs PyTorch | plain 5D export vs PyTorch "
                  "| tolerance vs PyTorch |", "|---|---|---|---|---|"]
        lines += [f"| `{o['name']}` | {fmt(own.get(o['name'], {}).get('rel_l2'))} | {fmt(o['rel_l2'])} | "
                  f"{fmt(exported.get(o['name'], {}).get('rel_l2'))} | {fmt(o['tolerance'])} |" for o in v["outputs"]]
    return lines + [""]
