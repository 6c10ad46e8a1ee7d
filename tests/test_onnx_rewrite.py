"""The rewrite of an ONNX graph: the spliced blocks compute what the PyTorch rewrite's blocks do,
calibration only helps, ineligible Convs stay with their reason, and the result lowers to rank 4."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edge3d.blocks import BLOCKS
from edge3d.blocks.onnx_rewrite import conv_ineligible, rewrite_onnx
from edge3d.blocks.rewrite import rewrite_model
from edge3d.errors import InputError
from edge3d.linting import lint_model
from edge3d.passes import lower_model

SHAPE = (1, 3, 4, 8, 8)


class VideoNet(nn.Module):
    """Two eligible Conv3d (the second strided in space), a pointwise and a grouped one."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv3d(3, 8, 3, padding=1)
        self.c2 = nn.Conv3d(8, 8, 3, stride=(1, 2, 2), padding=1)
        self.point = nn.Conv3d(8, 8, 1)
        self.grouped = nn.Conv3d(8, 8, 3, padding=1, groups=2)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.head(torch.relu(self.grouped(self.point(x))).mean((2, 3, 4)))


def net(seed=0):
    torch.manual_seed(seed)
    return VideoNet().eval()


def to_onnx(module, opset=17):
    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.zeros(SHAPE),), buffer, dynamo=False, opset_version=opset,
                      input_names=["x"], output_names=["logits"])
    return onnx.load_from_string(buffer.getvalue())


def clips(n, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(n)]


def run(model, clip):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": clip})[0]


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("block,mode", [(name, "aligned") for name in BLOCKS] + [("st-add", "paper")])
def test_every_block_splices_and_computes_what_the_pytorch_rewrite_does(block, mode):
    module, example = net(), clips(1, 1)[0]
    rewritten, report = rewrite_onnx(to_onnx(module), block, mode, [], [], example)
    onnx.checker.check_model(rewritten)
    expected, torch_report = rewrite_model(module, torch.from_numpy(example), block, mode)
    with torch.no_grad():
        want = expected(torch.from_numpy(example)).numpy()
    assert rel(run(rewritten, example), want) <= 1e-5
    assert report.model["replaced_layers"] == torch_report.model["replaced_layers"] == 2
    for key in ("params_before", "params_after", "macs_before", "macs_after"):
        assert report.model[key] == torch_report.model[key], key


def test_the_weights_of_replaced_convs_are_gone_and_the_rest_is_kept():
    original = to_onnx(net())
    rewritten, _ = rewrite_onnx(original, "st-add", "aligned", [], [], clips(1, 1)[0])
    rank5 = sorted(t.name for t in rewritten.graph.initializer if len(t.dims) == 5)
    assert rank5 == ["grouped.weight", "point.weight"]
    assert {o.name for o in rewritten.graph.output} == {"logits"}
    assert len({n.name for n in rewritten.graph.node}) == len(rewritten.graph.node)


def test_calibration_only_helps_and_ineligible_convs_keep_their_reason():
    module = net()
    calib, heldout = clips(8, 2), clips(4, 3)
    rewritten, report = rewrite_onnx(to_onnx(module), "st-add", "aligned", calib, heldout, calib[0])
    onnx.checker.check_model(rewritten)
    assert report.calibration == "least-squares"
    replaced = [layer for layer in report.layers if layer.replaced]
    assert len(replaced) == 2
    for layer in replaced:
        if layer.weights == "least-squares":
            assert layer.calibrated["rel_l2"] <= layer.projection["rel_l2"]
        assert layer.macs_after < layer.macs_before and layer.params_after < layer.params_before
    reasons = {layer.name: layer.reason for layer in report.layers if not layer.replaced}
    assert len(reasons) == 2
    assert any(r.startswith("1x1x1 kernel") for r in reasons.values())
    assert any(r.startswith("groups = 2") for r in reasons.values())
    assert report.model["heldout_clips"] == 4 and 0 <= report.model["top1_agreement"] <= 1
    assert "distillation" not in report.model
    # the same fit as the PyTorch rewrite, up to ONNX Runtime's rounding of the captured activations
    expected, _ = rewrite_model(module, torch.from_numpy(calib[0]), "st-add", "aligned",
                                [torch.from_numpy(c) for c in calib], [torch.from_numpy(c) for c in heldout])
    with torch.no_grad():
        want = expected(torch.from_numpy(heldout[0])).numpy()
    assert rel(run(rewritten, heldout[0]), want) <= 1e-3


def test_the_rewritten_model_lowers_to_rank4():
    rewritten, _ = rewrite_onnx(to_onnx(net()), "st-add", "aligned", [], [], clips(1, 1)[0])
    lowered, _ = lower_model(onnx.shape_inference.infer_shapes(rewritten, data_prop=True))
    assert lint_model(lowered, max_rank=4).findings == []


def test_blocks_are_written_at_the_models_own_opset():
    module, example = net(), clips(1, 1)[0]
    rewritten, _ = rewrite_onnx(to_onnx(module, opset=13), "st-add", "aligned", [], [], example)
    assert [o.version for o in rewritten.opset_import if o.domain in ("", "ai.onnx")] == [13]
    onnx.checker.check_model(rewritten)
    with torch.no_grad():
        want = rewrite_model(module, torch.from_numpy(example))[0](torch.from_numpy(example)).numpy()
    assert rel(run(rewritten, example), want) <= 1e-5


def test_a_block_the_models_opset_cannot_hold_is_refused():
    """Opset 9's Slice has no steps: the strided block cannot be written there."""
    with pytest.raises(InputError, match="opset 9"):
        rewrite_onnx(to_onnx(net(), opset=9), "st-add", "aligned", [], [], clips(1, 1)[0])


def test_a_weight_in_a_constant_node_is_replaced_and_dropped():
    model = to_onnx(net())
    weight = next(t for t in model.graph.initializer if t.name == "c1.weight")
    model.graph.node.insert(0, onnx.helper.make_node("Constant", [], ["c1.weight"], value=weight))
    model.graph.initializer.remove(weight)
    rewritten, report = rewrite_onnx(model, "st-add", "aligned", [], [], clips(1, 1)[0])
    assert report.model["replaced_layers"] == 2
    assert "c1.weight" not in {o for n in rewritten.graph.node for o in n.output}
    onnx.checker.check_model(rewritten)


@pytest.mark.parametrize("attrs,reason", [
    ({"kernel_shape": [1, 3, 3]}, "kt = 1"),
    ({"kernel_shape": [3, 1, 1]}, "kh = kw = 1"),
    ({"dilations": [1, 2, 2], "pads": [1] * 6}, "dilated"),
    ({"auto_pad": "SAME_UPPER"}, "padding auto_pad=SAME_UPPER"),
    ({"pads": [1, 1, 1, 0, 0, 0]}, "asymmetric pads"),
    ({"pads": [0] * 6}, "not a 'same'-padded odd kernel"),
    ({"kernel_shape": [3, 2, 2], "pads": [1, 1, 1, 1, 1, 1]}, "not a 'same'-padded odd kernel"),
    ({"pads": [1] * 6}, ""),
])
def test_eligibility_mirrors_the_pytorch_rewrite(attrs, reason):
    node = onnx.helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    kernel = tuple(attrs.get("kernel_shape", (3, 3, 3)))
    found = conv_ineligible(node, (8, 8, *kernel))
    assert found.startswith(reason) if reason else found == ""


def test_bad_inputs_are_refused():
    model = to_onnx(net())
    with pytest.raises(InputError, match="unknown block"):
        rewrite_onnx(model, "nope", "aligned", [], [], clips(1, 1)[0])
    with pytest.raises(InputError, match="does not fit"):
        rewrite_onnx(model, "st-add", "aligned", [], [], np.zeros((1, 3, 4, 8, 9), np.float32))
