"""Every input and output a real model has: a clip with a boolean mask, an int64 index, an int8
vector, a rank-5 output beside a rank-2 one — lowered, verified and described in the manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import invoke

from edge3d.verify import seeded_inputs


class _MaskedClip:
    """Conv3d(x) · mask + embedding[t] + mean(q): four inputs of four dtypes, two outputs."""

    @staticmethod
    def build():
        import torch

        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = torch.nn.Conv3d(3, 4, 3, padding=1)
                self.embed = torch.nn.Embedding(10, 4)

            def forward(self, x, mask, t, q):
                y = self.conv(x) * mask.to(x.dtype) + self.embed(t)[:, :, None, None, None] + q.to(x.dtype).mean()
                return y, y.mean(dim=(2, 3, 4))

        torch.manual_seed(0)
        args = (torch.randn(1, 3, 4, 8, 8), torch.rand(1, 1, 4, 8, 8) > 0.5, torch.tensor([3]),
                torch.randint(-5, 5, (1, 4), dtype=torch.int8))
        return Model().eval(), args


def test_seeded_inputs_fit_index_and_mask_inputs():
    x, mask, index = seeded_inputs([(2, 3), (2, 3), (50,)], [np.float32, np.bool_, np.int64], seed=0)
    assert x.dtype == np.float32 and mask.dtype == np.bool_ and 0 < mask.sum() < mask.size
    assert index.dtype == np.int64 and set(np.unique(index)) == {0, 1}


@pytest.mark.slow
def test_clip_mask_index_and_int8_inputs_export(tmp_path):
    import torch

    model, args = _MaskedClip.build()
    path = tmp_path / "masked.pt2"
    torch.export.save(torch.export.export(model, args), str(path))
    result = invoke("export", path, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    inputs = {i["name"]: i for i in manifest["inputs"]}
    assert inputs["x"]["layout"] == inputs["mask"]["layout"] == "frames"
    assert inputs["mask"]["dtype"] == "bool" and inputs["mask"]["shape"] == [4, 1, 8, 8]
    assert (inputs["t"]["dtype"], inputs["q"]["dtype"]) == ("int64", "int8")
    outputs = [o["layout"] for o in manifest["outputs"]]
    assert outputs == ["frames", "plain"]
    assert manifest["model"]["max_rank"] <= 4 and manifest["verification"]["passed"]


def test_a_rank6_output_leaves_in_row_major_order(tmp_path):
    """A model that returns patches (B, C, T, H/2, W/2, 4): the bundle's output is its elements in
    row-major order at rank 4 (layout ``row-major``); reshaped to the original shape it matches."""
    import onnxruntime as ort
    import torch

    from edge3d.layouts import clip_to_frames, row_major_to_tensor

    class Patches(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(3, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            b, c, t, h, w = y.shape
            return y.reshape(b, c, t, h // 2, 2, w // 2, 2).permute(0, 1, 2, 3, 5, 4, 6).reshape(b, c, t, h // 2,
                                                                                                  w // 2, 4)

    torch.manual_seed(0)
    x = torch.randn(1, 3, 4, 8, 8)
    path = tmp_path / "patches.pt2"
    torch.export.save(torch.export.export(Patches().eval(), (x,)), str(path))
    result = invoke("export", path, "-o", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    (output,) = manifest["outputs"]
    assert output["layout"] == "row-major" and output["original_shape"] == [1, 4, 4, 4, 4, 4]
    assert len(output["shape"]) <= 4 and manifest["verification"]["passed"]
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: clip_to_frames(x.numpy())})
    with torch.no_grad():
        want = torch.export.load(str(path)).module()(x).numpy()
    np.testing.assert_allclose(row_major_to_tensor(got, output["original_shape"], 1), want, rtol=1e-4, atol=1e-5)


def test_a_frames_output_keeps_its_symbolic_batch_name(tmp_path):
    """With --dynamic-batch a rank-5 output leaves as frames of symbolic size ``batch*T``, like the
    input, and runs at any batch."""
    import onnxruntime as ort
    import torch

    from edge3d.layouts import clip_to_frames, frames_to_clip

    net = torch.nn.Conv3d(3, 4, 3, padding=1).eval()
    x = torch.randn(1, 3, 4, 8, 8)
    path = tmp_path / "seg.pt"
    torch.jit.save(torch.jit.trace(net, (x,)), str(path))
    result = invoke("export", path, "--input-shape", "1,3,4,8,8", "--dynamic-batch", "-o", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["inputs"][0]["shape"][0] == manifest["outputs"][0]["shape"][0] == "batch*4"
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    clip = torch.randn(3, 3, 4, 8, 8)
    (got,) = session.run(None, {session.get_inputs()[0].name: clip_to_frames(clip.numpy())})
    with torch.no_grad():
        np.testing.assert_allclose(frames_to_clip(got, 3), net(clip).numpy(), rtol=1e-4, atol=1e-5)
