"""Taps gathered, summed or chunked: which Conv3d lowering is faster, and which lighter, by kind of kernel.

Builds one Conv3d layer per configuration (dense, grouped, depthwise; kt = 3 and 5; a large
clip), lowers it each way and times the 5D model and the three rank-4 models in ONNX
Runtime (CPU), alternating run by run. Memory: each model runs in a fresh process with ONNX Runtime's
defaults, and what a run adds to the process once its session is built (peak RSS after three
runs minus RSS before them) is the model's run-time memory. The rule in
``edge3d/passes/rules/conv.py:choose_strategy`` follows from this table.

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
    ("dense 64→64 3x3x3 large", 64, 64, 1, (3, 3, 3), (16, 56, 56)),
    ("dense 256→256 3x3x3 large", 256, 256, 1, (3, 3, 3), (8, 56, 56)),
]

STRATEGIES = ("gathered", "summed", "chunked")

CHILD = """
import sys, numpy as np, onnxruntime as ort
def rss(key):
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key)) / 1024
options = ort.SessionOptions(); options.intra_op_num_threads = 2
session = ort.InferenceSession(sys.argv[1], options, providers=['CPUExecutionProvider'])
i = session.get_inputs()[0]
feed = {i.name: np.random.default_rng(0).standard_normal(i.shape).astype(np.float32)}
before = rss('VmRSS')
for _ in range(3):
    session.run(None, feed)
print(rss('VmHWM') - before)
"""


def run_memory_mb(path: Path) -> float:
    """What running the model adds to a fresh process's peak RSS, in MB (ONNX Runtime defaults)."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def models(conv, shape) -> dict[str, bytes]:
    """The layer as the 5D model and lowered both ways."""
    import onnx
    import torch

    from edge3d.frontend.to_onnx import prepare
    from edge3d.passes import lower_model

    buffer = io.BytesIO()
    torch.onnx.export(conv, (torch.randn(*shape),), buffer, dynamo=False, opset_version=17)
    plain = prepare(onnx.load_from_string(buffer.getvalue()))
    out = {"5d": plain.SerializeToString()}
    for strategy in STRATEGIES:
        out[strategy] = prepare(lower_model(plain, conv_strategy=strategy)[0]).SerializeToString()
    return out


def main(iters: int = 20) -> None:
    import tempfile
    import warnings

    import onnxruntime as ort
    import torch

    from edge3d.passes.rules.conv import choose_strategy

    warnings.simplefilter("ignore")

    head = " ".join(f"{k:>9}" for k in ("5D", *STRATEGIES))
    print(f"{'layer':28} ms: {head} | run MB: {head} | {'rule':>9}")
    for name, cin, cout, groups, kernel, (t, h, w) in CONFIGS:
        conv = torch.nn.Conv3d(cin, cout, kernel, padding=tuple(k // 2 for k in kernel), groups=groups).eval()
        shape = (1, cin, t, h, w)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        built = models(conv, shape)
        sessions = {k: ort.InferenceSession(m, options, providers=["CPUExecutionProvider"]) for k, m in built.items()}
        clip = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        feeds = {k: clip if k == "5d" else np.ascontiguousarray(clip[0].transpose(1, 0, 2, 3)) for k in sessions}
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for i in range(iters + 3):
            for k in (list(sessions) if i % 2 == 0 else list(reversed(sessions))):
                start = time.perf_counter()
                sessions[k].run(None, {sessions[k].get_inputs()[0].name: feeds[k]})
                if i >= 3:
                    times[k].append(time.perf_counter() - start)
        del sessions
        ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        with tempfile.TemporaryDirectory() as tmp:
            memory = {}
            for k, m in built.items():
                (Path(tmp) / f"{k}.onnx").write_bytes(m)
                memory[k] = run_memory_mb(Path(tmp) / f"{k}.onnx")
        keys = ("5d", *STRATEGIES)
        rule = choose_strategy(kernel[0], cin, groups, kernel[0] * clip.nbytes)
        times_ms = " ".join(f"{ms[k]:9.2f}" for k in keys)
        run_mb = " ".join(f"{memory[k]:9.0f}" for k in keys)
        print(f"{name:28}     {times_ms} |         {run_mb} | {rule:>9}")

if __name__ == "__main__":
    main()
