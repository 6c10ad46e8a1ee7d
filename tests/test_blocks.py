"""The 4D blocks: shapes, rank 4 inside, lowering, the paper's stride flaw, and calibration."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edge3d.blocks import BLOCKS, Geometry
from edge3d.blocks.least_squares import RIDGES, fidelity, fit_
from edge3d.blocks.rewrite import LayerReport, fitted_block, rewrite_model
from edge3d.frontend.to_onnx import prepare
from edge3d.layouts import clip_to_frames, frames_to_clip
from edge3d.passes import lower_model

CASES = [(name, mode) for name in BLOCKS
         for mode in (("aligned", "paper") if name in ("st-add", "st-cat") else ("aligned",))]


def conv3d(stride=1, cin=4, cout=6, seed=0):
    torch.manual_seed(seed)
    return nn.Conv3d(cin, cout, 3, stride=stride, padding=1).eval()


def block_for(name, mode, conv):
    block = BLOCKS[name](Geometry.of(conv), mode)
    block.project_(conv.weight.detach(), conv.bias.detach())
    return block.eval()


@pytest.mark.parametrize("name,mode", CASES)
@pytest.mark.parametrize("stride", [1, 2])
def test_output_shape_matches_the_conv3d(name, mode, stride):
    conv = conv3d(stride)
    x = torch.randn(2, 4, 6, 8, 8)
    assert block_for(name, mode, conv)(x).shape == conv(x).shape


@pytest.mark.parametrize("name,mode", CASES)
def test_only_the_boundary_is_rank5(name, mode):
    """In the exported graph, rank-5 values are the input clip and the final reshape only."""
    block = block_for(name, mode, conv3d(2))
    graph = torch.export.export(block, (torch.randn(1, 4, 6, 8, 8),)).graph
    rank5 = [n for n in graph.nodes if hasattr(n.meta.get("val"), "dim") and n.meta["val"].dim() >= 5]
    assert [n.op for n in rank5][0] == "placeholder"
    inner = [n for n in rank5 if n.op != "placeholder"]
    assert len(inner) == 1 and any(op in str(inner[0].target) for op in ("view", "reshape"))
    assert all(user.op == "output" for user in inner[0].users)
    assert not any("conv3d" in str(n.target) for n in graph.nodes)


@pytest.mark.parametrize("name,mode", CASES)
def test_every_block_lowers_to_rank4_and_matches(name, mode):
    block = block_for(name, mode, conv3d(2))
    x = torch.randn(2, 4, 6, 8, 8)
    buffer = io.BytesIO()
    torch.onnx.export(block, (x,), buffer, dynamo=False, opset_version=17, input_names=["x"])
    lowered, report = lower_model(prepare(onnx.load_from_string(buffer.getvalue())))
    lowered = prepare(lowered)
    inferred = onnx.shape_inference.infer_shapes(lowered)
    values = list(inferred.graph.value_info) + list(inferred.graph.output)
    assert max(len(v.type.tensor_type.shape.dim) for v in values) <= 4
    session = ort.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"])
    got = frames_to_clip(session.run(None, {"x": clip_to_frames(x.numpy())})[0], 2)
    with torch.no_grad():
        want = block(x).numpy()
    assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 1e-4


def separable_conv(stride=2, seed=0):
    """A Conv3d whose kernel is exactly a spatial-only kernel plus a temporal-only kernel."""
    conv = conv3d(stride, seed=seed)
    with torch.no_grad():
        spatial = torch.randn(6, 4, 3, 3)
        temporal = torch.randn(6, 4, 3)
        temporal[:, :, 1] = 0
        weight = torch.zeros(6, 4, 3, 3, 3)
        weight[:, :, 1] = spatial
        weight[:, :, :, 1, 1] += temporal
        conv.weight.copy_(weight)
    return conv


def test_aligned_block_reproduces_a_separable_conv3d_and_the_paper_block_does_not():
    conv = separable_conv(stride=2)
    x = torch.randn(2, 4, 6, 8, 8)
    with torch.no_grad():
        want = conv(x)
        aligned = block_for("st-add", "aligned", conv)(x)
        paper = block_for("st-add", "paper", conv)(x)
    assert aligned.shape == paper.shape == want.shape
    assert (aligned - want).abs().max() < 1e-5
    rel = ((paper - want).norm() / want.norm()).item()
    assert rel > 0.1, rel


def test_paper_stride_keeps_the_wrong_pixels():
    """With H = W = 4 and s = 2, the (s, s²) stride keeps pixels (0,0),(1,0),(2,0),(3,0)."""
    block = BLOCKS["st-add"](Geometry(1, 1, (1 + 2, 1 + 2, 1 + 2), (2, 2, 2), (1, 1, 1)), "paper")
    with torch.no_grad():
        block.temporal.weight.zero_()
        block.temporal.weight[0, 0, 1, 0] = 1  # the temporal branch passes its centre frame through
        block.spatial.weight.zero_()
        block.spatial.bias.zero_()
        x = torch.arange(16.0).reshape(1, 1, 1, 4, 4).repeat(1, 1, 3, 1, 1)
        kept = block(x)[0, 0, 0].flatten().tolist()
    assert kept == [0.0, 4.0, 8.0, 12.0]  # row-major indices of (0,0), (1,0), (2,0), (3,0)


def test_st_cat_is_a_drop_in_that_starts_as_st_add():
    conv = conv3d(2)
    x = torch.randn(1, 4, 6, 8, 8)
    cat, add = block_for("st-cat", "aligned", conv), block_for("st-add", "aligned", conv)
    with torch.no_grad():
        assert cat(x).shape == conv(x).shape
        assert torch.allclose(cat(x), add(x), atol=1e-6)


class TinyVideoNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv3d(1, 8, 3, padding=1)
        self.c2 = nn.Conv3d(8, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.c2(torch.relu(self.c1(x)))).mean((2, 3, 4)))


def moving_dots(n, seed):
    """Clips of a dot moving right (label 1) or left (label 0): motion needs the temporal kernel."""
    gen = torch.Generator().manual_seed(seed)
    clips = torch.zeros(n, 1, 6, 8, 8)
    labels = torch.randint(0, 2, (n,), generator=gen)
    for i in range(n):
        row, col = torch.randint(0, 8, (2,), generator=gen).tolist()
        for t in range(6):
            clips[i, 0, t, row, (col + (t if labels[i] else -t)) % 8] = 1.0
    return clips + 0.05 * torch.randn(clips.shape, generator=gen), labels


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = TinyVideoNet()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    x, y = moving_dots(64, 0)
    for _ in range(30):  # enough to learn it (checked below)
        loss = nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    test_x, test_y = moving_dots(64, 1)
    assert (model(test_x).argmax(1) == test_y).float().mean() > 0.9, "the tiny model must learn the task"
    return model.eval()


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_calibration_beats_projection_on_a_trained_model(trained, block):
    clips = list(moving_dots(32, 2)[0].split(8))
    heldout = list(moving_dots(32, 3)[0].split(8))
    rewritten, report = rewrite_model(trained, clips[0], block, "aligned", clips, heldout)
    layers = [layer for layer in report.layers if layer.replaced]
    assert len(layers) == 2
    for layer in layers:  # measured on held-out clips
        assert layer.calibrated["rel_l2"] < layer.projection["rel_l2"], (layer.name, layer.projection, layer.calibrated)
        assert layer.weights == "least-squares"
        assert layer.params_after > 0 and layer.macs_after > 0
    with torch.no_grad():  # the agreement reported is the one on the held-out clips
        agree = sum(int((trained(x).argmax(1) == rewritten(x).argmax(1)).sum()) for x in heldout)
    assert report.model["heldout_clips"] == 4 and report.model["top1_agreement"] == agree / 32


def test_fit_is_exact_when_the_block_can_represent_the_layer():
    conv = separable_conv(stride=1)
    block = BLOCKS["st-add"](Geometry.of(conv), "aligned")  # random init, far from the answer
    xs = [torch.randn(2, 4, 6, 8, 8) for _ in range(2)]
    with torch.no_grad():
        ys = [conv(x) for x in xs]
    fit_(block, xs, ys)
    assert fidelity(block, xs, ys)["rel_l2"] < 1e-5


def smooth_clip(seed: int) -> torch.Tensor:
    """Spatially smooth, as frames are: neighbouring taps then carry the same signal, which the
    least-squares fit can move into the taps a block keeps (white noise leaves nothing to move)."""
    coarse = torch.randn(1, 8, 4, 3, 3, generator=torch.Generator().manual_seed(seed))
    return nn.functional.interpolate(coarse, size=(4, 6, 6), mode="trilinear", align_corners=True)


def test_a_short_calibration_set_is_fitted_with_a_ridge_towards_the_projection_chosen_on_held_out_clips():
    """Three clips give few output positions per weight: the plain solve fits their accidents and
    does worse than the projection on other clips, the ridge towards the projection does better
    than both, and the held-out clips find it."""
    conv = conv3d(cin=8, cout=8, seed=3)
    with torch.no_grad():
        calib = [smooth_clip(100 + i) for i in range(3)]
        heldout = [smooth_clip(i) for i in range(8)]
        inputs = calib + heldout
        outputs = [conv(x) for x in inputs]
    layer = LayerReport("c", [3, 3, 3], [1, 1, 1], replaced=False)
    block = fitted_block("st-add", "aligned", Geometry.of(conv), conv.weight.detach(), conv.bias.detach(), layer,
                         inputs, outputs, n_calib=3, n_held=8)
    plain = BLOCKS["st-add"](Geometry.of(conv), "aligned").eval()
    fit_(plain, calib, outputs[:3])
    plain_error = fidelity(plain, heldout, outputs[3:])["rel_l2"]
    assert plain_error > layer.projection["rel_l2"], "the setting must make the plain solve overfit"
    assert layer.weights == "least-squares" and layer.ridge in RIDGES and layer.ridge > RIDGES[0]
    assert layer.calibrated["rel_l2"] == pytest.approx(fidelity(block, heldout, outputs[3:])["rel_l2"])
    assert layer.calibrated["rel_l2"] < layer.projection["rel_l2"] - 0.05, (layer.calibrated, layer.projection)
