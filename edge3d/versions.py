"""The versions of edge3d and the libraries it used, recorded in every bundle and bench report."""

from __future__ import annotations

import contextlib
import platform

from . import __version__


def tool_versions() -> dict:
    import onnx
    import onnxruntime

    versions = {"edge3d": __version__, "python": platform.python_version(),
                "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    for name in ("torch", "onnxsim", "onnx_ir"):
        with contextlib.suppress(ImportError):
            versions[name] = __import__(name).__version__
    return versions
