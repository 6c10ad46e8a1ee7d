"""The choices of the command line's options, defined here once.

This module imports nothing: ``edge3d --help`` and ``edge3d lint`` build their options from it
without importing torch, onnx_ir or numpy. The modules that use a constant import it from here.
"""

from __future__ import annotations

# ONNX opsets `edge3d export` writes (edge3d.frontend.to_onnx).
DEFAULT_OPSET = 17
MIN_OPSET = 13  # the lowering's rules take opset-13 attributes and inputs (Squeeze axes, Split sizes…)
MAX_OPSET = 23

# How a Conv3d's temporal taps become 2D convs (edge3d.passes.rules.conv).
CONV_STRATEGIES = ("auto", "gathered", "summed", "chunked")

# Precisions of the target artifacts: the keys of edge3d.verify.TOLERANCES, in its order
# (tests/test_lint_startup.py checks that they agree).
PRECISIONS = ("fp32", "fp16", "int8")

# `edge3d bench`: the runtimes it times on this machine (edge3d.timing.run) and its report formats
# (edge3d.timing.report).
BENCH_RUNTIMES = ("ort", "tvm")
BENCH_FORMATS = ("text", "json", "md", "html")

# `edge3d lint` report formats (edge3d.linting.report).
LINT_FORMATS = ("text", "json", "sarif", "github")
