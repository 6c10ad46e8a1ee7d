"""TVM (Relax ONNX frontend): a shared library for x86 or, cross-compiled, AArch64 and CUDA.

The target comes from the profile as a JSON-style dict, e.g. ``{"kind": "cuda", "arch": "sm_87",
"host": {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}}``; ``cc`` names the cross compiler
(Debian's g++-aarch64-linux-gnu). Only a library for this machine's CPU can be run here.
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

import numpy as np

from ..log import native_output_muted
from .base import Artifact, Runtime, Session, onnx_io, register


def _plain(value):
    return {k: _plain(v) for k, v in value.items()} if hasattr(value, "items") else value


def runnable_here(target: dict) -> bool:
    host = target.get("host", target)
    triple = host.get("mtriple", "")
    return target.get("kind") == "llvm" and (not triple or triple.startswith(platform.machine()))


@register("tvm")
class TvmRuntime(Runtime):
    missing_hint = "the target needs TVM: pip install 'edge3d[tvm]'"
    timed_here = True
    speed_hint = "tune its kernels with --tvm-trials N (e.g. --tvm-trials 2000 on the x86 target)"

    def is_available(self) -> bool:
        try:
            import tvm  # noqa: F401
        except ImportError:
            return False
        return True

    def where(self, target) -> str:
        if runnable_here(_plain(target.tvm["target"])):
            return "TVM: built, verified and timed here"
        return ("TVM: cross-compiled here (object files to link on the device where the cross compiler is "
                "missing); verified and timed on the device (`edge3d bench --rpc`)")

    def build_label(self, precision: str, trials: int = 0, **options) -> str:
        return f"Tuning ({trials} trials) and building tvm ({precision})" if trials else super().build_label(precision)

    def build(self, model: Path, target, bundle: Path, precision: str, calib: list | None = None,
              trials: int = 0, **options) -> Artifact:
        """``trials`` > 0 tunes the conv and matmul kernels with that many timed candidates
        (``tvm_tune``); only a library for this CPU can be tuned. Without the profile's cross
        compiler the kernels are still compiled here, into object files the device links
        (``model.tvm.tar``): the rest of the bundle does not depend on the compiler."""
        import onnx
        import tvm
        from tvm.relax.frontend.onnx import from_onnx

        if precision not in ("fp32",):
            raise ValueError(f"the TVM artifact is built in fp32 (asked for {precision})")
        spec = _plain(target.tvm["target"])
        cc = target.tvm.get("cc")
        link_here = not cc or shutil.which(cc) is not None
        if trials and not runnable_here(spec):
            raise ValueError("only a TVM library for this CPU can be tuned here (--tvm-trials)")
        if trials and spec.get("kind") == "llvm":
            spec.setdefault("num-cores", os.cpu_count() or 1)  # MetaSchedule's parallel rule needs it
        out = bundle / ("model.tvm.so" if link_here else "model.tvm.tar")
        meta = {"target": spec, "tvm": tvm.__version__}
        with native_output_muted((2,)):  # TVM's C++ log warns about every Gather it compiles
            module = from_onnx(onnx.load(str(model)), keep_params_in_input=False)
            if trials:
                from .tvm_tune import tune

                module, summary = tune(module, tvm.target.Target(spec), trials)
                meta["tuning"] = summary.to_dict()
            executable = tvm.compile(module, target=tvm.target.Target(spec))
            executable.export_library(str(out), **({"cc": cc} if cc and link_here else {}))  # .tar: no linker
        if link_here:
            return Artifact("tvm", "fp32", [out.name], built_here=True, runnable_here=runnable_here(spec), meta=meta)
        return Artifact("tvm", "fp32", [out.name], built_here=False, runnable_here=False, meta=meta,
                        notes=[f"{cc} is missing here (apt-get install g++-aarch64-linux-gnu), so the library's "
                               "object files are shipped to be linked on the device"],
                        device_steps=[f"mkdir -p tvm_objects && tar -xf {out.name} -C tvm_objects && "
                                      "g++ -shared -fPIC -o model.tvm.so tvm_objects/*.o"])

    def load(self, artifact: Artifact, bundle: Path, calib: list | None = None) -> TvmSession:
        return TvmSession(bundle / artifact.files[0], artifact)


class TvmSession(Session):
    """The library's Relax VM on this CPU; names and shapes come from the model.onnx beside it."""

    def __init__(self, path: Path, artifact: Artifact | None):
        import tvm
        from tvm import relax

        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
        self.inputs, self.outputs = onnx_io(path.with_name("model.onnx"))

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import tvm

        args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[v.name])) for v in self.inputs]
        out = self.vm["main"](*args)
        outs = list(out) if isinstance(out, (list, tuple)) or type(out).__name__ == "Array" else [out]
        return [o.numpy() for o in outs]

    def close(self) -> None:
        self.vm = None  # the VM holds the loaded library and its device memory
