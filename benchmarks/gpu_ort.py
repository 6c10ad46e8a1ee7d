"""ONNX Runtime's CUDA execution provider: the plain 5D ONNX export vs edge3d's lowered rank-4 ONNX.

The GPU runtime closest to what a Jetson user deploys that needs nothing beyond pip: the CUDA
execution provider runs convolutions through cuDNN, as TensorRT's tactics largely do. For each
example model the ONNX pair is exported as ``gpu_tvm.py`` exports it (the lowered model has passed
edge3d's own verification), and each is run in FP32 and in FP16 (edge3d's own FP16 conversion,
``ort_runtime.to_fp16``: float16 weights and arithmetic, float32 inputs and outputs, the model a
strongly typed TensorRT 11 build takes). Inputs and outputs are bound on the GPU (I/O binding), so
a timed run is the graph's kernels, not host copies. For each precision the 5D and lowered sessions
alternate run by run; reported: median and p90 per session, the ratio lowered/5D of the medians
with its bootstrap 95% interval (``paired.py``), and each output's relative L2 against ONNX
Runtime (CPU, FP32) running the 5D model on the same clip.

    python benchmarks/gpu_ort.py                         # r3d18 x3d c3d shufflenet3d, small configs
    python benchmarks/gpu_ort.py --full --json out.json  # full-size configurations
    python benchmarks/gpu_ort.py --onnx-dir DIR          # pairs written by gpu_tvm.py --export-only
    python benchmarks/gpu_ort.py --device cpu            # the CPU provider: checks the script anywhere
    python benchmarks/gpu_ort.py --conv-strategy auto summed chunked --profile  # where the time goes

``--profile`` adds, per session, ONNX Runtime's own profile of a few runs summed by operator type
and execution provider (``MemcpyToHost``/``MemcpyFromHost`` rows mean nodes placed on the CPU), and
its slowest nodes.

Without the CUDA execution provider (``onnxruntime-gpu`` matching the machine's CUDA) it prints
that and exits 0.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gpu_tvm import (  # noqa: E402 - the same ONNX pairs and clips as the TVM comparison
    KINDS,
    REPO,
    as_clips,
    common_parser,
    export_pair,
    inputs_for,
    markdown_table,
    meta_path,
    ort_outputs,
    pair_paths,
    percentile,
    rel_l2,
)
from paired import alternate, ratio_interval  # noqa: E402

sys.path.insert(0, str(REPO))
from edge3d.choices import CONV_STRATEGIES  # noqa: E402

PRECISIONS = ("fp32", "fp16")


EXTRA_OPTIONS: dict[str, str] = {}  # --cuda-option KEY=VALUE


def cuda_options(tf32: bool) -> dict:
    """The CUDA provider's options: its defaults, except TF32 where asked off (cuDNN's TF32
    convolutions carry about 10 bits of mantissa, so FP32 here is not FP32 on the CPU) and any
    ``--cuda-option``."""
    return {"device_id": 0, "use_tf32": int(tf32), **EXTRA_OPTIONS}


class Bound:
    """One session with its input and outputs bound on the device: ``run`` times kernels only."""

    def __init__(self, path: Path, feeds: list[np.ndarray], device: str, tf32: bool):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        providers = ([("CUDAExecutionProvider", cuda_options(tf32)), "CPUExecutionProvider"]
                     if device == "cuda" else ["CPUExecutionProvider"])
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.used = self.session.get_providers()[0]
        self.binding = self.session.io_binding()
        place = "cuda" if device == "cuda" else "cpu"
        self.inputs = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), place, 0) for x in feeds]
        self.places = [place] * len(self.session.get_outputs())
        for spec, value in zip(self.session.get_inputs(), self.inputs):
            self.binding.bind_ortvalue_input(spec.name, value)
        for spec, where in zip(self.session.get_outputs(), self.places):
            self.binding.bind_output(spec.name, where, 0)

    def profile(self, runs: int = 10, warmup: int = 3, top: int = 8) -> dict:
        """ONNX Runtime's profile of ``runs`` runs after ``warmup`` (the first runs search cuDNN's
        algorithms), in a session of its own: mean microseconds per run by (operator type,
        provider), and the slowest nodes."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tempfile.gettempdir()) / "edge3d_gpu_ort")
        session = ort.InferenceSession(str(self.path), options, providers=self.session.get_providers())
        binding = session.io_binding()
        for spec, value in zip(session.get_inputs(), self.inputs):
            binding.bind_ortvalue_input(spec.name, value)
        for spec, place in zip(session.get_outputs(), self.places):
            binding.bind_output(spec.name, place, 0)
        for _ in range(warmup + runs):
            session.run_with_iobinding(binding)
        path = Path(session.end_profiling())
        events = json.loads(path.read_text())
        path.unlink()
        starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
        after = starts[warmup] if len(starts) > warmup else 0
        by_type: dict[str, float] = {}
        by_node: dict[str, float] = {}
        for e in events:
            if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < after:
                continue
            key = f"{e['args'].get('op_name', '?')} @ {e['args'].get('provider', '?').replace('ExecutionProvider', '')}"
            by_type[key] = by_type.get(key, 0.0) + e["dur"] / runs
            node = e["name"][: -len("_kernel_time")]
            by_node[node] = by_node.get(node, 0.0) + e["dur"] / runs
        slowest = sorted(by_node.items(), key=lambda kv: -kv[1])[:top]
        return {"us_by_op_and_provider": dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
                "slowest_nodes_us": dict(slowest), "kernel_us_total": sum(by_type.values()),
                "nodes": len(by_node)}

    def run(self) -> None:
        self.session.run_with_iobinding(self.binding)  # returns once the provider's stream is done

    def outputs(self) -> list[np.ndarray]:
        self.run()
        return [np.asarray(o, np.float32) for o in self.binding.copy_outputs_to_cpu()]


def bench_model(name: str, meta: dict, paths: dict[str, Path], work: Path, device: str, tf32: bool,
                warmup: int, iters: int, seed: int, profile: bool = False) -> list[dict]:
    from edge3d.runtimes.ort_runtime import to_fp16

    clips, feeds = inputs_for(meta, seed)
    batch = meta["input_shape"][0]
    reference = ort_outputs(paths["5d"], clips)
    rows = []
    for precision in PRECISIONS:
        files = dict(paths)
        if precision == "fp16":
            files = {kind: paths[kind].with_suffix(".fp16.onnx") for kind in KINDS}
            for kind in KINDS:
                to_fp16(paths[kind], files[kind])
        sessions = {"5d": Bound(files["5d"], clips, device, tf32),
                    "lowered": Bound(files["lowered"], feeds, device, tf32)}
        got = {"5d": sessions["5d"].outputs(),
               "lowered": as_clips(sessions["lowered"].outputs(), meta["output_layouts"], batch)}
        times = alternate({kind: s.run for kind, s in sessions.items()}, warmup, iters)
        ms = {kind: [t * 1e3 for t in times[kind]] for kind in KINDS}
        ratio, low, high = ratio_interval(ms["lowered"], ms["5d"])
        row = {"model": name, "small": meta["small"], "input": meta["input_shape"], "precision": precision,
               "conv_strategy": meta.get("conv_strategy", "auto"),
               "provider": sessions["lowered"].used, "tf32": tf32 if device == "cuda" else None,
               "iters": len(ms["5d"]), "warmup": warmup, "ratio_lowered_over_5d": ratio,
               "ratio_ci95": [low, high], "edge3d_verify_max_rel_l2": meta.get("edge3d_max_rel_l2")}
        for kind in KINDS:
            row[f"rel_l2_{kind}_vs_ort_cpu_5d"] = max(rel_l2(r, g) for r, g in zip(reference, got[kind]))
            row[f"median_ms_{kind}"] = statistics.median(ms[kind])
            row[f"p90_ms_{kind}"] = percentile(ms[kind], 90)
        if profile:
            row["profile"] = {kind: s.profile() for kind, s in sessions.items()}
            for kind in KINDS:
                p = row["profile"][kind]
                print(f"# {name} {meta.get('conv_strategy', 'auto')} {precision} {kind}: {p['nodes']} nodes, "
                      f"kernels {p['kernel_us_total']:.0f} us/run; " + ", ".join(
                          f"{k} {v:.0f}" for k, v in list(p["us_by_op_and_provider"].items())[:8]), flush=True)
                print("#   slowest: " + ", ".join(f"{k} {v:.0f}" for k, v in p["slowest_nodes_us"].items()),
                      flush=True)
        rows.append(row)
        print(json.dumps(row), flush=True)
        del sessions
    return rows


def print_table(rows: list[dict], failures: list[dict], title: str) -> None:
    header = ("model", "strategy", "precision", "rel-L2 5D", "rel-L2 lowered", "median ms 5D", "median ms lowered",
              "lowered/5D", "95% interval", "p90 ms 5D", "p90 ms lowered")
    lines = [header] + [(r["model"], r["conv_strategy"], r["precision"], f"{r['rel_l2_5d_vs_ort_cpu_5d']:.2e}",
                         f"{r['rel_l2_lowered_vs_ort_cpu_5d']:.2e}", f"{r['median_ms_5d']:.3f}",
                         f"{r['median_ms_lowered']:.3f}", f"{r['ratio_lowered_over_5d']:.3f}",
                         f"{r['ratio_ci95'][0]:.3f}–{r['ratio_ci95'][1]:.3f}", f"{r['p90_ms_5d']:.3f}",
                         f"{r['p90_ms_lowered']:.3f}") for r in rows]
    print(title)
    markdown_table(lines, left=3)
    for f in failures:
        print(f"FAILED {f['model']}: {f['error'].splitlines()[0]}")


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    parser = common_parser(__doc__, 200, "session")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu: the CPU provider, to check the script without a GPU")
    parser.add_argument("--no-tf32", dest="tf32", action="store_false",
                        help="FP32 convolutions without TF32 (the CUDA provider's default uses it)")
    parser.add_argument("--conv-strategy", nargs="+", default=["auto"], choices=CONV_STRATEGIES,
                        help="lower with each of these Conv3d strategies in turn (default: auto)")
    parser.add_argument("--cuda-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a CUDA provider option, e.g. prefer_nhwc=1 (repeatable)")
    parser.add_argument("--profile", action="store_true",
                        help="add ONNX Runtime's per-operator profile of each session")
    parser.add_argument("--onnx-dir", type=Path, help="read the ONNX pairs from here where present")
    parser.add_argument("--json", type=Path, help="write the rows as JSON")
    args = parser.parse_args(argv)
    if args.iters < 50:
        parser.error("--iters must be at least 50")
    EXTRA_OPTIONS.update(option.split("=", 1) for option in args.cuda_option)
    if args.device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        print("no CUDA execution provider in this onnxruntime (install onnxruntime-gpu for this CUDA): "
              "nothing to time")
        return 0
    described = _device_name() if args.device == "cuda" else "this CPU"
    print(f"device: {described}; onnxruntime {ort.__version__}; TF32 {'on' if args.tf32 else 'off'}; "
          f"CUDA options {cuda_options(args.tf32)}", flush=True)
    rows, failures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, strategy in [(n, s) for n in args.models for s in args.conv_strategy]:
            try:
                folder = args.onnx_dir if strategy == "auto" else None
                if folder is None or not meta_path(folder, name, args.small).exists():
                    folder = work / f"onnx-{strategy}"
                    print(f"exporting {name} ({strategy}) ...", flush=True)
                    export_pair(name, args.small, folder, strategy)
                meta = json.loads(meta_path(folder, name, args.small).read_text())
                rows += bench_model(name, meta, pair_paths(folder, name, args.small), work, args.device, args.tf32,
                                    args.warmup, args.iters, args.seed, args.profile)
            except Exception as exc:  # noqa: BLE001 - one model's failure is reported, the others go on
                failures.append({"model": name, "error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"})
                print(f"{name}: failed: {type(exc).__name__}: {exc}", flush=True)
    size_label = "small" if args.small else "full-size"
    print_table(rows, failures, f"onnxruntime {ort.__version__} on {described}, {size_label} configs: median and p90 "
                f"of alternating runs after {args.warmup} warm-ups; rel-L2 against ONNX Runtime (CPU, FP32) on the "
                "5D model")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": described, "onnxruntime": ort.__version__, "tf32": args.tf32,
                                         "cuda_options": cuda_options(args.tf32),
                                         "small": args.small, "rows": rows, "failures": failures,
                                         "date": time.strftime("%Y-%m-%d")}, indent=2))
    return 1 if failures else 0


def _device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return f"{torch.cuda.get_device_name(0)} (sm_{major}{minor})"
    except Exception:  # noqa: BLE001 - the name is a label only
        pass
    return "CUDA device 0"


if __name__ == "__main__":
    sys.exit(main())
