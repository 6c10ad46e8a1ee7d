"""`edge3d rewrite` and `edge3d export --block`: files, reports, rank 4, fidelity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import invoke, shape_arg, small_shape, stderr_lines

LAYER_FIELDS = {"name", "kernel", "stride", "replaced", "reason", "params_before", "params_after",
                "macs_before", "macs_after", "projection", "calibrated", "weights"}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["pt2", "state-dict"])
def test_rewrite_writes_a_safe_pt2_and_a_report(saved_model, tmp_path, fmt):
    out = tmp_path / "rw.pt2"
    args = ["rewrite", saved_model("eco-lite", fmt), "--block", "st-add", "-o", out, "--calib", "random",
            "--calib-clips", "4"]
    if fmt == "state-dict":
        args += ["--arch", "examples.models.eco_lite:eco_lite", "--arch-kwargs", '{"width": 0.125, "num_classes": 10}',
                 "--input-shape", shape_arg(small_shape("eco-lite"))]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "Conv3d replaced by st-add" in result.stdout
    program = torch.export.load(str(out))  # an ExportedProgram: no pickle, no --trust-pickle
    clip = torch.randn(*small_shape("eco-lite"))
    assert program.module()(clip).shape == (1, 10)
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["block"] == "st-add" and report["calibration"] == "least-squares"
    replaced = [layer for layer in report["layers"] if layer["replaced"]]
    kept = [layer for layer in report["layers"] if not layer["replaced"]]
    assert len(replaced) == 12 and kept and all("1x1x1" in layer["reason"] for layer in kept)
    for layer in report["layers"]:
        assert LAYER_FIELDS <= set(layer)
    for layer in replaced:
        # The fit is kept only where it beats the projection on held-out clips.
        better = layer["calibrated"]["rel_l2"] <= layer["projection"]["rel_l2"]
        assert layer["weights"] == ("least-squares" if better else
                                    "projection (least squares did worse on held-out clips)")
        assert layer["params_after"] < layer["params_before"]
    model = report["model"]
    assert model["params_after"] < model["params_before"] and model["macs_after"] < model["macs_before"]
    # agreement of the two models' top-1 class on each held-out clip (batch 1): a count over them
    clips = model["heldout_clips"]
    assert clips >= 1 and model["top1_agreement"] in {k / clips for k in range(clips + 1)}

    bundle = tmp_path / "bundle"
    exported = invoke("export", out, "-o", bundle, "-q")
    assert exported.exit_code == 0, exported.output
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["max_rank"] == 4 and manifest["verification"]["passed"]


BLOCKS = ("st-add", "st-cat", "r2plus1d", "p3d-a", "p3d-b", "p3d-c", "rank1", "fsb")
BLOCK_CASES = [(block, "aligned") for block in BLOCKS]
BLOCK_CASES += [("st-add", "paper"), ("st-cat", "paper")]  # the stride mode only concerns the paper's blocks


@pytest.mark.slow
@pytest.mark.parametrize("block, mode", BLOCK_CASES)
def test_export_with_block_is_rank4_and_verified_against_the_rewritten_model(tiny_model, tmp_path, block, mode):
    """On the tiny net (tests/conftest.py): its three 3x3x3 convs are replaced, its 1x1x1 one is
    kept; the paper's (s, s²) stride cannot line up on its odd 9x9 frame, so that conv is kept too."""
    path, _ = tiny_model("net", "pt2")
    out = tmp_path / "b"
    result = invoke("export", path, "--block", block, "--stride-mode", mode, "--calib-clips", "2", "-o", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["max_rank"] == 4
    assert manifest["verification"]["passed"]
    assert max(o["rel_l2"] for o in manifest["verification"]["outputs"]) <= 1e-4
    rewrite = manifest["block_rewrite"]
    assert rewrite["block"] == block
    layers = {next(part for part in ("stem", "down", "frame", "point") if part in layer["name"]): layer
              for layer in rewrite["layers"]}
    assert len(layers) == len(rewrite["layers"]) == 4
    kept = {"point", "down"} if mode == "paper" else {"point"}
    assert {name for name, layer in layers.items() if not layer["replaced"]} == kept
    assert rewrite["model"]["replaced_layers"] == 4 - len(kept)
    assert "1x1x1" in layers["point"]["reason"]
    if mode == "paper":
        assert "paper stride on a 9x9 frame" in layers["down"]["reason"]
    fidelity = rewrite["fidelity_to_original"]["outputs"][0]
    assert np.isfinite(fidelity["rel_l2"]) and "cosine" in fidelity
    assert "rewritten into" in result.stdout
    first = (out / "report.md").read_text().split("\n\n")[1]  # the paragraph after the title
    assert first.startswith("**An approximation of the original model**: relative L2 ")
    assert f"{fidelity['rel_l2']:.2e}" in first and f"Conv3d replaced by {block} blocks" in first


@pytest.mark.slow
def test_rewrite_takes_torchscript_like_pt2(saved_model, tmp_path, monkeypatch):
    """A TorchScript file goes through torch's TorchScript converter (in a child process) to an
    ExportedProgram whose Conv3d become modules: the same layers are replaced as from .pt2."""
    shape = ["--input-shape", shape_arg(small_shape("c3d"))]
    ts = invoke("rewrite", saved_model("c3d", "pt"), "--block", "st-add", "-o", tmp_path / "ts.pt2", *shape)
    assert ts.exit_code == 0, ts.output
    ep = invoke("rewrite", saved_model("c3d", "pt2"), "--block", "st-add", "-o", tmp_path / "ep.pt2")
    assert ep.exit_code == 0, ep.output
    reports = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("ts", "ep")]
    assert reports[0]["model"]["replaced_layers"] == reports[1]["model"]["replaced_layers"] > 0

    from edge3d.frontend import to_onnx

    def broken(*args, **kwargs):
        raise RuntimeError("no")

    monkeypatch.setattr(to_onnx, "convert_in_child", broken)
    failed = invoke("rewrite", saved_model("c3d", "pt"), "--block", "st-add", "-o", tmp_path / "x.pt2", *shape)
    assert failed.exit_code == 2 and "torch.export.save" in failed.stderr and len(stderr_lines(failed)) == 1
    assert not (tmp_path / "x.pt2").exists()


@pytest.mark.slow
def test_rewrite_of_torchscript_given_by_a_relative_path(saved_model, tmp_path, monkeypatch):
    """The converter's child process runs elsewhere: a relative model path must still reach it."""
    path = saved_model("c3d", "pt")
    monkeypatch.chdir(path.parent)
    result = invoke("rewrite", path.name, "--block", "st-add", "-o", tmp_path / "rel.pt2",
                    "--input-shape", shape_arg(small_shape("c3d")))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rel.pt2").is_file()


def test_rewrite_refuses_unknown_blocks(saved_model, tmp_path):
    unknown = invoke("rewrite", saved_model("c3d", "pt2"), "--block", "nope", "-o", tmp_path / "y.pt2")
    assert unknown.exit_code == 2 and "st-add" in unknown.stderr
    assert not list(tmp_path.iterdir())


def test_rewrite_to_a_file_not_named_pt2_is_refused(saved_model, tmp_path):
    """``-o x.onnx`` once wrote a .pt2 zip named .onnx."""
    result = invoke("rewrite", saved_model("c3d", "pt2"), "--block", "st-add", "-o", tmp_path / "x.onnx")
    assert result.exit_code == 2 and "name it .pt2" in result.stderr and "--block st-add" in result.stderr
    assert not list(tmp_path.iterdir())


def test_python_api(saved_model):
    import edge3d
    from edge3d.blocks import BLOCKS
    from examples.models import build

    model, shape = build("c3d", small=True)
    convs = sum(isinstance(m, torch.nn.Conv3d) and m.kernel_size == (3, 3, 3) for m in model.modules())
    rewritten = edge3d.rewrite(model, block="r2plus1d", calib="random", input_shape=shape)
    assert convs > 0 and sum(isinstance(m, BLOCKS["r2plus1d"]) for m in rewritten.modules()) == convs
    assert not any(isinstance(m, torch.nn.Conv3d) and m.kernel_size == (3, 3, 3) for m in rewritten.modules())
    assert rewritten(torch.randn(*shape)).shape == model(torch.randn(*shape)).shape


@pytest.mark.slow
def test_calibration_from_videos_and_distillation(saved_model, tmp_path):
    """Clips decoded from real video files (PyAV), then a few distillation steps."""
    import av

    videos = tmp_path / "videos"
    videos.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        with av.open(str(videos / f"v{k}.mp4"), "w") as container:
            stream = container.add_stream("mpeg4", rate=10)
            stream.width, stream.height, stream.pix_fmt = 48, 40, "yuv420p"
            for _ in range(40):
                frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    out = tmp_path / "rw.pt2"
    result = invoke("rewrite", saved_model("c3d", "pt2"), "--block", "st-add", "--calib", videos,
                    "--calib-clips", "4", "--finetune-steps", "3", "-o", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["calibration"] == "least-squares"
    assert report["model"]["heldout_clips"] == 1
    assert report["model"]["distillation"]["steps"] == 3


def test_calibration_folder_errors(saved_model, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("rewrite", saved_model("c3d", "pt2"), "--block", "st-add", "--calib", empty,
                    "-o", tmp_path / "o.pt2")
    assert result.exit_code == 2 and "--calib" in result.stderr and len(stderr_lines(result)) == 1
    np.save(empty / "bad.npy", np.zeros((3, 2, 4, 4), np.float32))
    result = invoke("rewrite", saved_model("c3d", "pt2"), "--block", "st-add", "--calib", empty,
                    "-o", tmp_path / "o.pt2")
    assert result.exit_code == 2 and "calibration clips must be" in result.stderr


def _c3d_onnx(tmp_path):
    """The small C3D as an ONNX file from torch's TorchScript exporter (an ONNX model from elsewhere)."""
    from examples.models import build

    torch.manual_seed(0)
    model, shape = build("c3d", small=True)
    path = tmp_path / "c3d.onnx"
    torch.onnx.export(model.eval(), (torch.randn(*shape),), str(path), dynamo=False, opset_version=17)
    return path, shape


@pytest.mark.slow
def test_rewrite_and_export_take_onnx(tmp_path):
    """An ONNX model is rewritten as a graph: the same layers as from PyTorch, the report says
    distillation was not run, and `export --block` lowers and verifies it."""
    import onnx
    import onnxruntime as ort

    path, shape = _c3d_onnx(tmp_path)
    result = invoke("rewrite", path, "--block", "st-add", "-o", tmp_path / "rw.onnx", "--calib-clips", "4",
                    "--finetune-steps", "5")
    assert result.exit_code == 0, result.output
    model = json.loads((tmp_path / "rw.json").read_text())["model"]
    assert model["replaced_layers"] == 8 and model["params_after"] < model["params_before"]
    assert model["distillation"]["steps"] == 0 and "no trainable module" in model["distillation"]["note"]
    onnx.checker.check_model(str(tmp_path / "rw.onnx"))
    session = ort.InferenceSession(str(tmp_path / "rw.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {session.get_inputs()[0].name: np.zeros(shape, np.float32)})[0].shape[0] == 1

    wrong = invoke("rewrite", path, "--block", "st-add", "-o", tmp_path / "rw2.pt2")
    assert wrong.exit_code == 2 and "name it .onnx" in wrong.stderr

    bundle = tmp_path / "bundle"
    exported = invoke("export", path, "--block", "st-add", "-o", bundle, "--calib-clips", "4")
    assert exported.exit_code == 0, exported.output
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["max_rank"] == 4 and manifest["verification"]["passed"]
    assert manifest["block_rewrite"]["model"]["replaced_layers"] == 8
    assert manifest["block_rewrite"]["fidelity_to_original"]["outputs"][0]["rel_l2"] < 0.5
