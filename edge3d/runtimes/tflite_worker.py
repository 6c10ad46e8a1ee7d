"""Runs inside the LiteRT interpreter's own environment (``edge3d setup tflite``: TensorFlow,
onnx2tf, ai-edge-litert and Arm's Vela), so it imports nothing from edge3d. Commands, with JSON
on the last line of stdout:

    convert  ONNX OUTDIR BACKEND [CALIB.npy]   onnx2tf: *_float32, *_float16 and, with CALIB,
                                               *_full_integer_quant .tflite files in OUTDIR
    run      TFLITE FOLDER COUNT               LiteRT: in_N.npz -> out_N.npz (int8 I/O (de)quantised)
    vela     TFLITE OUTDIR ACCELERATOR         Vela: estimated time, memory, NPU placement

The graph's inputs keep their ONNX shape (``-kat``): a bundle's frames stay (B·T, C, H, W), and
calibration data is given in that layout.
"""

import csv
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

BIN = Path(sys.executable).parent
# Vela's system configurations, one per accelerator family, as Vela itself defaults to them
VELA_SYSTEMS = {
    "ethos-u55-128": ("Ethos_U55_High_End_Embedded", "Shared_Sram"),
    "ethos-u65-256": ("Ethos_U65_Client_Server", "Dedicated_Sram_384KB"),
    "ethos-u85-256": ("Ethos_U85_SYS_DRAM_Mid", "Dedicated_Sram_384KB"),
}


def _tail(text, lines=3):
    kept = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in text.splitlines() if line.strip()]
    return " ".join(kept[-lines:])


def convert(onnx, out, backend, calib=None):
    import onnx as onnx_lib

    names = [i.name for i in onnx_lib.load(onnx, load_external_data=False).graph.input]
    command = [str(BIN / "onnx2tf"), "-i", onnx, "-o", out, "-tb", backend, "-kat", *names]
    if calib:
        command += ["-oiqt", "-cind", names[0], calib, "[0.0]", "[1.0]"]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # it runs onnxsim by name
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    stem = Path(onnx).stem
    files = {prec: str(Path(out) / f"{stem}_{suffix}.tflite")
             for prec, suffix in (("fp32", "float32"), ("fp16", "float16"), ("int8", "full_integer_quant"))}
    files = {prec: path for prec, path in files.items() if Path(path).exists()}
    if done.returncode != 0 or "fp32" not in files:
        return {"ok": False, "error": _tail(done.stdout + done.stderr), "files": files}
    if calib and "int8" not in files:
        return {"ok": False, "error": "no integer model: " + _tail(done.stdout + done.stderr), "files": files}
    return {"ok": True, "files": files, "ops": {p: _ops(f) for p, f in files.items()}}


def _ops(path):
    """Op histogram of a .tflite, read with the flatbuffer schema Vela ships (it also reads files
    LiteRT cannot load, such as Vela's output with its ethos-u custom op)."""
    from ethosu.vela.tflite.BuiltinOperator import BuiltinOperator
    from ethosu.vela.tflite.Model import Model

    model = Model.GetRootAsModel(Path(path).read_bytes(), 0)
    names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = builtin == BuiltinOperator.CUSTOM
        codes.append(code.CustomCode().decode() if custom else names.get(builtin, str(builtin)))
    counts: Counter = Counter()
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for j in range(graph.OperatorsLength()):
            counts[codes[graph.Operators(j).OpcodeIndex()]] += 1
    return dict(counts)


def run(tflite, folder, count):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=tflite)
    interpreter.allocate_tensors()
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    for n in range(int(count)):
        feeds = np.load(f"{folder}/in_{n}.npz")
        for detail, key in zip(inputs, sorted(feeds.files)):
            x = feeds[key]
            if detail["dtype"] in (np.int8, np.uint8):
                scale, zero = detail["quantization"]
                info = np.iinfo(detail["dtype"])
                x = np.clip(np.round(x / scale + zero), info.min, info.max)
            interpreter.set_tensor(detail["index"], x.astype(detail["dtype"]))
        interpreter.invoke()
        outs = []
        for detail in outputs:
            y = interpreter.get_tensor(detail["index"])
            if detail["dtype"] in (np.int8, np.uint8):
                scale, zero = detail["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            outs.append(y.astype(np.float32))
        np.savez(f"{folder}/out_{n}.npz", *outs)
    return {"ok": True}


def vela(tflite, out, accelerator):
    system, memory = VELA_SYSTEMS[accelerator]
    command = [str(BIN / "vela"), tflite, "--accelerator-config", accelerator, "--config", "Arm/vela.ini",
               "--system-config", system, "--memory-mode", memory, "--output-dir", out,
               "--verbose-performance", "--show-cpu-operations"]
    done = subprocess.run(command, capture_output=True, text=True)
    said = done.stdout + done.stderr
    if done.returncode != 0:
        return {"ok": False, "error": _tail(said)}
    stem = Path(tflite).stem
    with open(Path(out) / f"{stem}_summary_{system}.csv") as f:
        row = next(csv.DictReader(f))
    source, compiled = _ops(tflite), _ops(Path(out) / f"{stem}_vela.tflite")
    on_cpu = {op: n for op, n in compiled.items() if op != "ethos-u"}
    total = sum(source.values())
    reasons = sorted({re.sub(r"\s*\([^()]*\)$", "", r).strip() for r in re.findall(r"Reason: (.*)", said)})
    cpu_ops = Counter(m.group(1) for m in re.finditer(r"Warning \(supported operators\) operator: (\w+)", said))
    return {"ok": True, "accelerator": accelerator, "system_config": system, "memory_mode": memory,
            "inference_ms": float(row["inference_time"]) * 1e3, "sram_kib": float(row["sram_memory_used"]),
            "dram_kib": float(row["dram_memory_used"]),
            "flash_kib": float(row["off_chip_flash_memory_used"]) + float(row["on_chip_flash_memory_used"]),
            "npu_segments": compiled.get("ethos-u", 0), "ops": total, "cpu_ops": on_cpu,
            "npu_share": (total - sum(on_cpu.values())) / total if total else 0.0,
            "cpu_reasons": reasons[:20], "unsupported": dict(cpu_ops),
            "vela_file": str(Path(out) / f"{stem}_vela.tflite")}


def main(argv):
    command, args = argv[0], argv[1:]
    try:
        if command == "convert":
            result = convert(*args)
        elif command == "run":
            result = run(*args)
        elif command == "vela":
            result = vela(*args)
        else:
            raise ValueError(f"unknown command {command}")
    except Exception as exc:  # reported to edge3d as JSON, not as a traceback
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
