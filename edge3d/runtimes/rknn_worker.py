"""Runs inside rknn-toolkit2's own interpreter (it pins old numpy and onnx), so it imports
nothing from edge3d. Commands, with JSON on the last line of stdout:

    build     ONNX OUT.rknn PLATFORM PRECISION [DATASET.txt]
    estimate  ONNX PLATFORM PRECISION [DATASET.txt]
    infer     ONNX PLATFORM PRECISION DATASET.txt|- INPUTS.npz OUTPUTS.npz

``build`` and ``estimate`` build verbosely: the compiler prints its per-layer cost estimate (the
"Network Layer Information Table", cycles and memory) to stdout, which no API returns; those
lines come back as ``perf``. The verbose build writes check*.onnx files into the working folder.
"""

import contextlib
import json
import os
import re
import sys


@contextlib.contextmanager
def captured_fds():
    """The toolkit logs from Python and from C: capture fds 1 and 2 into one file, worker.log in
    the working folder, which the caller reads where the toolkit aborts the process."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open("worker.log", "w+") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        lines = []
        try:
            yield lines
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            sink.seek(0)
            lines.extend(re.sub(r"\x1b\[[0-9;]*m", "", line).rstrip() for line in sink)


def _build(rknn, onnx, platform, precision, dataset):
    steps = [("config", lambda: rknn.config(target_platform=platform)),
             ("load_onnx", lambda: rknn.load_onnx(model=onnx)),
             ("build", lambda: rknn.build(do_quantization=precision == "int8",
                                          dataset=dataset if precision == "int8" else None))]
    for name, step in steps:
        if step() != 0:
            raise RuntimeError(f"rknn {name} failed")


PERF_START = "Network Layer Information Table"
PERF_KEEP = re.compile(r"Total (Internal|Weight) Memory Size")


def perf_lines(lines):
    """The layer table (from its title to the next blank-prefixed title) and the memory totals."""
    kept, inside = [], False
    for line in lines:
        text = re.sub(r"^[DIWE] RKNN: \[[\d:.]+\] ?", "", line)
        if text.strip() == PERF_START:
            inside = True
        elif inside and text.strip().endswith("Information Table"):
            inside = False
        if inside or PERF_KEEP.search(text):
            kept.append(text)
    return kept


def main(argv):
    from rknn.api import RKNN

    command = argv[0]
    rknn = RKNN(verbose=command in ("build", "estimate"))
    result = {"ok": True}
    log = []
    try:
        with captured_fds() as log:
            if command == "build":
                onnx, out, platform, precision = argv[1:5]
                _build(rknn, onnx, platform, precision, argv[5] if len(argv) > 5 else None)
                if rknn.export_rknn(out) != 0:
                    raise RuntimeError("rknn export_rknn failed")
            elif command == "estimate":
                onnx, platform, precision = argv[1:4]
                _build(rknn, onnx, platform, precision, argv[4] if len(argv) > 4 else None)
            elif command == "infer":
                import numpy as np

                # folder: in_0.npz … in_{count-1}.npz, each one run's inputs; out_N.npz written beside
                onnx, platform, precision, dataset, folder, count = argv[1:7]
                _build(rknn, onnx, platform, precision, None if dataset == "-" else dataset)
                if rknn.init_runtime() != 0:  # no target: the simulator
                    raise RuntimeError("rknn init_runtime (simulator) failed")
                for n in range(int(count)):
                    feeds = np.load(f"{folder}/in_{n}.npz")
                    outs = rknn.inference(inputs=[feeds[k] for k in sorted(feeds.files)], data_format="nchw")
                    np.savez(f"{folder}/out_{n}.npz", *outs)
            else:
                raise ValueError(f"unknown command {command}")
    except Exception as exc:  # reported to edge3d as JSON, not as a traceback
        result = {"ok": False, "error": str(exc)}
    finally:
        rknn.release()
    result["log"] = [line for line in log if line.startswith(("E ", "W "))][-20:]
    if command in ("build", "estimate"):
        result["perf"] = perf_lines(log)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
