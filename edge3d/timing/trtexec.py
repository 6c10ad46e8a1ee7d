"""Turn a trtexec log (from a bundle's build_engine.sh run on the device) into a bench report."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import InputError

_STAT = r"(min|max|mean|median|percentile\((\d+)%\))\s*=\s*([\d.]+)\s*ms"


def _stats(line: str) -> dict:
    out = {}
    for name, pct, value in re.findall(_STAT, line):
        key = {"min": "min_ms", "max": "max_ms", "mean": "mean_ms", "median": "median_ms"}.get(name, f"p{pct}_ms")
        out[key] = float(value)
    return out


def import_bundle_log(path: Path, bundle: Path | None) -> dict:
    """The log, plus what the bundle (or the log's folder) tells: frames per clip from its
    manifest, and the per-layer breakdown from the profile.json build_engine.sh wrote."""
    import json

    folder = Path(bundle) if bundle is not None else Path(path).parent
    manifest = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").is_file() else {}
    frames, clips = 1, 1
    if manifest.get("inputs"):
        shape = manifest["inputs"][0]["original_shape"]
        clips = shape[0] if isinstance(shape[0], int) else 1
        frames = shape[2] if manifest["inputs"][0]["layout"] == "frames" and isinstance(shape[2], int) else 1
    report = import_log(path, frames, clips)
    if (folder / "profile.json").is_file():
        from .breakdown import trt_profile

        lowered_nodes = [n["node"] for n in manifest.get("rewrite", {}).get("nodes", [])]
        report["breakdown"] = {"lowered": trt_profile(folder / "profile.json", folder / "model.onnx", lowered_nodes)}
    return report


def import_log(path: Path, frames_per_clip: int = 1, clips_per_run: int = 1) -> dict:
    text = Path(path).read_text(errors="replace") if Path(path).is_file() else None
    if text is None:
        raise InputError(f"{path}: no such trtexec log")
    compute = next((line for line in text.splitlines() if "GPU Compute Time:" in line), None)
    if compute is None:
        raise InputError(f"{path} has no 'GPU Compute Time' line; give the log of a trtexec run that timed inference")
    latency = _stats(compute)
    latency["iters"] = int(m.group(1)) if (m := re.search(r"(\d+) iterations", text)) else 0
    if "median_ms" in latency:
        latency["clips_per_s"] = clips_per_run * 1e3 / latency["median_ms"]
        latency["frames_per_s"] = latency["clips_per_s"] * frames_per_clip
    throughput = re.search(r"Throughput:\s*([\d.]+)\s*qps", text)
    device = re.search(r"Selected Device:\s*(.+)", text)
    version = re.search(r"TensorRT version:\s*([\d.]+)", text) or re.search(r"\[TensorRT v(\d+)\]", text)
    return {
        "schema_version": 1, "bundle": str(path), "runtime": "trtexec", "complete": True,
        "environment": {"cpu": "", "cpu_count": None, "gpu": device.group(1).strip() if device else None,
                        "runtime": "tensorrt", "threads": None,
                        "versions": {"tensorrt": version.group(1)} if version else {},
                        "target": {"name": "device (trtexec)"}},
        "models": {"lowered": {"file": str(path), "latency": latency,
                               **({"throughput_qps": float(throughput.group(1))} if throughput else {})}},
    }
