"""`edge3d bench`: the report's figures, its schema, its three formats, streaming, trtexec
logs, Ctrl-C, and the HTML in a real headless browser where one is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from conftest import invoke, shape_arg, small_shape

from edge3d.timing.report import SCHEMA, render
from edge3d.timing.run import BenchOptions, run_bench

LATENCY_KEYS = {"iters", "min_ms", "mean_ms", "median_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "std_ms",
                "clips_per_s", "frames_per_s"}


@pytest.fixture(scope="module")
def bundle(saved_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "x3d"
    result = invoke("export", saved_model("x3d", "pt"), "--input-shape", shape_arg(small_shape("x3d")), "-o", out, "-q")
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow  # the bundle fixture exports x3d
def test_json_report_has_every_figure_and_validates(bundle, tmp_path):
    out = tmp_path / "r.json"
    result = invoke("bench", bundle, "--iters", "12", "--warmup", "1", "--format", "json", "-o", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    assert report["complete"]
    for name in ("lowered", "original"):
        model = report["models"][name]
        assert LATENCY_KEYS <= set(model["latency"]) and model["latency"]["iters"] == 12
        assert model["load_s"] > 0 and model["cold_ms"] > 0 and len(model["times_ms"]) == 12
        lat = model["latency"]
        assert lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        b, c, t, h, w = small_shape("x3d")
        assert lat["frames_per_s"] == pytest.approx(lat["clips_per_s"] * t)
    assert report["models"]["lowered"]["max_rank"] == 4 and report["models"]["original"]["max_rank"] == 5
    ratio = report["ratio"]
    assert ratio["low"] <= ratio["ratio"] <= ratio["high"] and ratio["level"] == 0.95
    lowered_layers = report["breakdown"]["lowered"]["by_layer_ms"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert set(n["node"] for n in manifest["rewrite"]["nodes"]) & set(lowered_layers), \
        "time is aggregated back to the original model's layers"
    assert report["breakdown"]["original"]["by_op_ms"]
    env = report["environment"]
    assert env["cpu"] and env["versions"]["onnxruntime"] and env["target"]["name"] == "onnx"
    assert report["peak_rss_mb"] > 0


@pytest.mark.slow  # the bundle fixture exports x3d
def test_markdown_and_html_reports(bundle, tmp_path):
    md = invoke("bench", bundle, "--iters", "5", "--warmup", "0", "--format", "md")
    assert md.exit_code == 0 and "lowered / original median latency" in md.stdout and "| p99 (ms) |" in md.stdout
    text = invoke("bench", bundle, "--iters", "5", "--warmup", "0").stdout  # the default: for a terminal
    assert "**" not in text and "|---" not in text and "p99 (ms)" in text
    assert not re.search(r"\d{5}", text.split("parameters")[1].splitlines()[0])  # 65.23 k, not 65230
    page = tmp_path / "r.html"
    result = invoke("bench", bundle, "--iters", "5", "--warmup", "0", "--format", "html", "-o", page)
    assert result.exit_code == 0
    text = page.read_text()
    assert text.startswith("<!doctype html>") and text.count("data:image/png;base64,") == 2
    assert "**" not in text and "<strong>lowered / original median latency" in text
    assert "Time by layer of the original model" in text  # the per-layer breakdown, as a table
    assert "http://" not in text.replace("http://www.w3.org", "") and "<script" not in text  # self-contained


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="no headless Chromium (apt-get install chromium)")
def test_html_renders_in_headless_chromium(bundle, tmp_path):
    page = tmp_path / "r.html"
    assert invoke("bench", bundle, "--iters", "5", "--warmup", "0", "--format", "html", "-o", page).exit_code == 0
    shot = tmp_path / "shot.png"
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
                    page.as_uri()], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
    from PIL import Image

    pixels = Image.open(shot).convert("L").getextrema()
    assert pixels[0] < 100 < pixels[1], "the screenshot is blank"


@pytest.mark.slow  # the bundle fixture exports x3d
def test_streaming_mode(bundle):
    result = invoke("bench", bundle, "--iters", "6", "--warmup", "0", "--stream", "--hop", "2",
                    "--camera-fps", "1000000", "--format", "json")
    report = json.loads(result.stdout)
    lowered = report["streaming"]["lowered"]
    t = small_shape("x3d")[2]
    assert lowered["window"] == t and lowered["hop"] == 2 and lowered["budget_ms_per_clip"] == pytest.approx(2e-3)
    assert lowered["keeps_up"] is False and lowered["dropped_clip_fraction"] == 1.0  # a million fps: no chance
    relaxed = json.loads(invoke("bench", bundle, "--iters", "4", "--warmup", "0", "--stream", "--camera-fps", "0.01",
                                "--format", "json").stdout)
    assert relaxed["streaming"]["lowered"]["keeps_up"] is True


@pytest.mark.slow  # the bundle fixture exports x3d
def test_ctrl_c_still_reports_what_was_measured(bundle):
    def interrupt(i):
        if i == 3:
            raise KeyboardInterrupt

    report = run_bench(BenchOptions(bundle, iters=50, warmup=0), tick=interrupt)
    assert report["complete"] is False
    assert report["models"]["lowered"]["latency"]["iters"] == 3
    assert "Interrupted" in render(report, "md")


@pytest.mark.slow  # the bundle fixture exports x3d
def test_baseline_none_and_bad_bundle(bundle, tmp_path):
    report = json.loads(invoke("bench", bundle, "--iters", "3", "--baseline", "none", "--format", "json").stdout)
    assert list(report["models"]) == ["lowered"] and "ratio" not in report
    bad = invoke("bench", tmp_path, "--iters", "3")
    assert bad.exit_code == 2 and "not an edge3d bundle" in bad.stderr


@pytest.mark.tvm
def test_tvm_runtime_bench(tiny_model, tmp_path):
    path, shape = tiny_model("conv3d")  # one Conv3d: a Conv2d kernel once lowered
    out = tmp_path / "x86"
    assert invoke("export", path, "--input-shape", shape_arg(shape), "--target", "x86", "-o", out, "-q").exit_code == 0
    report = json.loads(invoke("bench", out, "--runtime", "tvm", "--iters", "4", "--warmup", "1",
                               "--format", "json").stdout)
    assert report["runtime"] == "tvm" and report["models"]["original"]["latency"]["iters"] == 4
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    # the VM's per-call times: the lowered model's time is in 2D convs, the original's in 3D ones
    lowered, original = report["breakdown"]["lowered"]["by_op_ms"], report["breakdown"]["original"]["by_op_ms"]
    assert any("conv2d" in op for op in lowered) and not any("conv3d" in op for op in lowered)
    assert any("conv3d" in op for op in original)
    for by_op in (lowered, original):  # times, not their ratio to the run: that flakes on a loaded machine
        assert all(np.isfinite(ms) and ms >= 0 for ms in by_op.values()) and sum(by_op.values()) > 0


TRTEXEC_LOG = """&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec --onnx=model.onnx --saveEngine=model.plan --fp16
[11/21/2026-06:00:00] [I] TensorRT version: 10.3.0
[11/21/2026-06:00:00] [I] Selected Device: Orin
[11/21/2026-06:00:09] [I] Timing trace has 1432 queries over 3.00617 s
[11/21/2026-06:00:09] [I] Throughput: 476.347 qps
[11/21/2026-06:00:09] [I] Latency: min = 2.06543 ms, max = 2.61377 ms, mean = 2.09311 ms, median = 2.08643 ms, percentile(90%) = 2.10938 ms, percentile(95%) = 2.12103 ms, percentile(99%) = 2.34204 ms
[11/21/2026-06:00:09] [I] GPU Compute Time: min = 2.03906 ms, max = 2.58557 ms, mean = 2.06631 ms, median = 2.05957 ms, percentile(90%) = 2.08252 ms, percentile(95%) = 2.09473 ms, percentile(99%) = 2.31445 ms
[11/21/2026-06:00:09] [I] Average on 10 runs - GPU latency: 2.06631 ms
"""  # noqa: E501


def test_import_trtexec_log(tmp_path):
    log = tmp_path / "trtexec.log"
    log.write_text(TRTEXEC_LOG)
    report = json.loads(invoke("bench", "--import-trtexec", log, "--format", "json").stdout)
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    lat = report["models"]["lowered"]["latency"]
    assert lat["median_ms"] == pytest.approx(2.05957) and lat["p99_ms"] == pytest.approx(2.31445)
    assert report["environment"]["gpu"] == "Orin" and report["environment"]["versions"]["tensorrt"] == "10.3.0"
    assert report["models"]["lowered"]["throughput_qps"] == pytest.approx(476.347)
    md = invoke("bench", "--import-trtexec", log, "--format", "md")
    assert md.exit_code == 0 and "| 2.06 |" in md.stdout  # the median, two decimals like every ms
    bad = tmp_path / "empty.log"
    bad.write_text("nothing")
    result = invoke("bench", "--import-trtexec", bad)
    assert result.exit_code == 2 and "GPU Compute Time" in result.stderr


@pytest.mark.slow  # the bundle fixture exports x3d
def test_import_trtexec_log_with_the_bundle_and_its_layer_profile(bundle, tmp_path):
    """The profile names TensorRT layers after the ONNX nodes they fused; their time lands on the
    original layer the lowering made those nodes from."""
    import onnx

    folder = tmp_path / "device"
    shutil.copytree(bundle, folder)
    nodes = onnx.load(str(folder / "model.onnx")).graph.node
    conv = next(n for n in nodes if n.op_type == "Conv")
    follower = next(n for n in nodes if n.op_type != "Conv")
    profile = [{"count": 10},
               {"name": f"{conv.name} + {follower.name}", "timeMs": 5.0, "averageMs": 0.5, "medianMs": 0.5,
                "percentage": 50},
               {"name": f"PWN({follower.name})", "timeMs": 3.0, "averageMs": 0.3, "medianMs": 0.3, "percentage": 30},
               {"name": f"Reformatting CopyNode for Input Tensor 0 to {conv.name}", "timeMs": 2.0, "averageMs": 0.2,
                "medianMs": 0.2, "percentage": 20}]
    (folder / "profile.json").write_text(json.dumps(profile))
    log = tmp_path / "trtexec.log"
    log.write_text(TRTEXEC_LOG)
    report = json.loads(invoke("bench", folder, "--import-trtexec", log, "--format", "json").stdout)
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    breakdown = report["breakdown"]["lowered"]
    assert breakdown["runs"] == 10
    assert breakdown["by_op_ms"]["Conv"] == pytest.approx(0.5)
    assert breakdown["by_op_ms"]["Reformat"] == pytest.approx(0.2)
    owners = {n["node"] for n in json.loads((folder / "manifest.json").read_text())["rewrite"]["nodes"]}
    owner = next(o for o in owners if conv.name.startswith(o + "/"))
    assert breakdown["by_layer_ms"][owner] >= 0.5
    frames = small_shape("x3d")[2]
    assert report["models"]["lowered"]["latency"]["frames_per_s"] == pytest.approx(frames * 1e3 / 2.05957)
    (folder / "profile.json").write_text("[]")
    bad = invoke("bench", folder, "--import-trtexec", log)
    assert bad.exit_code == 2 and "not a trtexec layer profile" in bad.stderr


def test_schema_file_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(json.loads(Path(SCHEMA).read_text()))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.tvm
def test_rpc_on_loopback_with_a_real_tracker_and_server(tiny_model, tmp_path):
    """A TVM RPC tracker and server started on 127.0.0.1; the bench runs the library through them."""
    import sys
    import time

    path, shape = tiny_model("conv3d")
    out = tmp_path / "x86"
    assert invoke("export", path, "--input-shape", shape_arg(shape), "--target", "x86", "-o", out, "-q").exit_code == 0
    port = _free_port()
    tracker = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                                "--port", str(port), "--port-end", str(port + 1)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = None
    try:
        server = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
                                   "--tracker", f"127.0.0.1:{port}", "--key", "loopback-board"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from tvm import rpc

        deadline = time.time() + 60
        while time.time() < deadline:  # the server registers with the tracker once it has started
            try:
                if "loopback-board" in rpc.connect_tracker("127.0.0.1", port).summary()["queue_info"]:
                    break
            except Exception:  # noqa: BLE001 - the tracker may not be listening yet
                pass
            time.sleep(0.5)
        else:
            pytest.fail("the loopback RPC server never registered "
                        f"(tracker exit {tracker.poll()}, server exit {server.poll()})")
        result = invoke("bench", out, "--rpc", f"127.0.0.1:{port}", "--key", "loopback-board", "--iters", "3",
                        "--warmup", "1", "--format", "json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        jsonschema.validate(report, json.loads(SCHEMA.read_text()))
        assert report["runtime"] == "tvm-rpc" and report["rpc"]["key"] == "loopback-board"
        for name in ("lowered", "original"):
            latency = report["models"][name]["latency"]
            assert latency["iters"] == 3 and latency["median_ms"] > 0
        missing = invoke("bench", out, "--rpc", f"127.0.0.1:{port}", "--key", "no-such-board", "--iters", "1")
        assert missing.exit_code == 2
    finally:
        for proc in (server, tracker):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)


@pytest.mark.slow  # the bundle fixture exports x3d
def test_duration_and_threads(bundle):
    result = invoke("bench", bundle, "--duration", "0.5", "--warmup", "0", "--threads", "1", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["environment"]["threads"] == 1
    assert report["models"]["lowered"]["latency"]["iters"] >= 1
    assert report["models"]["lowered"]["latency"]["iters"] == report["models"]["original"]["latency"]["iters"]


def test_report_numbers_have_units_and_one_precision():
    from edge3d.timing.report import _si, _table

    assert (_si(18027541), _si(4935270400), _si(512), _si(None)) == ("18.03 M", "4.94 G", "512", "—")
    times = {"iters": 3, "min_ms": 0.0848, "mean_ms": 0.227, "median_ms": 0.2, "p90_ms": 0.3, "p95_ms": 0.3,
             "p99_ms": 0.3, "max_ms": 0.31, "std_ms": 0.01, "clips_per_s": 5000.0, "frames_per_s": 40000.0}
    report = {"models": {"lowered": {"latency": times, "load_s": 0.1, "cold_ms": 1.0, "params": 3e7,
                                     "macs": 4e10, "max_rank": 4}}}
    header, rows = _table(report)
    cells = dict((row[0], row[1]) for row in rows)
    assert cells["min (ms)"] == "0.08" and cells["mean (ms)"] == "0.23"  # not 0.0848 beside 0.227
    assert cells["parameters"] == "30.00 M" and cells["MACs"] == "40.00 G"
