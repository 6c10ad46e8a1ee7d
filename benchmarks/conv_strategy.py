"""Taps gathered vs taps summed: which Conv3d lowering is faster, by kind of kernel.

Builds one Conv3d layer per configuration (dense, grouped, depthwise; kt = 3 and 5), lowers it
both ways and times the two rank-4 models in ONNX Runtime (CPU), alternating run by run. The
rule in ``edge3d/passes/rules/conv.py:choose_strategy`` follows from this table.

    python benchmarks/conv_strategy.py
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CONFIGS = [  # name, C in, C out, groups, kernel, (T, H, W)
    ("dense 64→64 3x3x3", 64, 64, 1, (3, 3, 3), (16, 28, 28)),
    ("dense 128→128 3x3x3", 128, 128, 1, (3, 3, 3), (8, 14, 14)),
    ("dense 32→32 5x3x3", 32, 32, 1, (5, 3, 3), (16, 28, 28)),
    ("grouped g=4 64→64 3x3x3", 64, 64, 4, (3, 3, 3), (16, 28, 28)),
    ("depthwise 96 3x3x3", 96, 96, 96, (3, 3, 3), (16, 28, 28)),
    ("depthwise 192 3x3x3", 192, 192, 192, (3, 3, 3), (8, 14, 14)),
    ("depthwise 96 5x3x3", 96, 96, 96, (5, 3, 3), (16, 28, 28)),
]


def lowered(conv, shape, strategy):
    import onnx
    import torch

    from edge3d.frontend.to_onnx import prepare
    from edge3d.passes import lower_model

    buffer = io.BytesIO()
    torch.onnx.export(conv, (torch.randn(*shape),), buffer, dynamo=False, opset_version=17)
    model, _ = lower_model(prepare(onnx.load_from_string(buffer.getvalue())), conv_strategy=strategy)
    return prepare(model).SerializeToString()


def main(iters: int = 30) -> None:
    import warnings

    import onnxruntime as ort
    import torch

    from edge3d.passes.rules.conv import choose_strategy

    warnings.simplefilter("ignore")

    print(f"{'layer':28} {'gathered ms':>12} {'summed ms':>10} {'summed/gathered':>16} {'rule':>9}")
    for name, cin, cout, groups, kernel, (t, h, w) in CONFIGS:
        conv = torch.nn.Conv3d(cin, cout, kernel, padding=tuple(k // 2 for k in kernel), groups=groups).eval()
        shape = (1, cin, t, h, w)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        sessions = {s: ort.InferenceSession(lowered(conv, shape, s), options, providers=["CPUExecutionProvider"])
                    for s in ("gathered", "summed")}
        feed = np.random.default_rng(0).standard_normal((t, cin, h, w)).astype(np.float32)
        times = {s: [] for s in sessions}
        for i in range(iters + 3):
            for s in (sessions if i % 2 == 0 else reversed(list(sessions))):
                start = time.perf_counter()
                sessions[s].run(None, {sessions[s].get_inputs()[0].name: feed})
                if i >= 3:
                    times[s].append(time.perf_counter() - start)
        g, s = (statistics.median(times[k]) * 1e3 for k in ("gathered", "summed"))
        print(f"{name:28} {g:12.2f} {s:10.2f} {s / g:16.2f} {choose_strategy(kernel[0], cin, groups):>9}")


if __name__ == "__main__":
    main()
