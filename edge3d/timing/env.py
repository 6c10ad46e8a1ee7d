"""What a latency figure was measured on: machine, threads, tool versions, target."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_model() -> str | None:
    import shutil

    from ..runtimes.base import run_tool
    from ..runtimes.tensorrt_runtime import NVIDIA_SMI_TIMEOUT_S

    if shutil.which("nvidia-smi") is None:
        return None
    out = run_tool(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"], "nvidia-smi",
                   NVIDIA_SMI_TIMEOUT_S, hint="is the NVIDIA driver hung?", capture_output=True, text=True)
    return out.stdout.strip() or None


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def environment(runtime: str, threads: int | None, manifest: dict) -> dict:
    from ..versions import tool_versions

    target = manifest.get("target") or {}
    trt = target.get("tensorrt") or {}
    versions = tool_versions()
    extra = {}
    if runtime == "tvm":
        import tvm

        versions["tvm"] = tvm.__version__
        extra["tvm_tuning_trials"] = tvm_tuning_budget(manifest)
    return {
        "host": platform.node(), "os": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "gpu": gpu_model(), "runtime": runtime, "threads": threads, **extra, "versions": versions,
        "target": {"name": target.get("name", "onnx"), "precision": target.get("precision"),
                   "jetson": {"jetpack": trt.get("jetpack"), "compute_capability": trt.get("compute_capability"),
                              "dla_cores": trt.get("dla_cores"), "dla_core": trt.get("dla_core")} if trt else None},
    }


def tvm_artifact(manifest: dict) -> dict | None:
    """The bundle's TVM library entry, if it has one."""
    return next((a for a in manifest.get("artifacts", []) if a["runtime"] == "tvm"), None)


def tvm_tuning_budget(manifest: dict) -> int:
    """The --tvm-trials budget the bundle's TVM library was tuned with (0: TVM's default schedules)."""
    art = tvm_artifact(manifest) or {}
    return int(art.get("meta", {}).get("tuning", {}).get("budget", 0))
