"""What edge3d repairs or bounds in an exporter's output before lowering it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from lowering_harness import float_input
from onnx import TensorProto, helper, numpy_helper

from edge3d.frontend import to_onnx
from edge3d.frontend.run_shapes import fill_open_shapes, open_values


def _model(nodes, inputs, inits, outputs=("y",)):
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                                   for o in outputs], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_open_shapes_are_filled_from_one_run():
    """A Reshape target computed through Ceil: ONNX shape inference cannot follow it."""
    nodes = [
        helper.make_node("Ceil", ["target_f"], ["target_c"]),
        helper.make_node("Cast", ["target_c"], ["target"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["x", "target"], ["r"]),
        helper.make_node("Relu", ["r"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.asarray([1, 3, 4, 8, 7.5], np.float32), "target_f")]
    model = onnx.shape_inference.infer_shapes(_model(nodes, [float_input("x", (1, 3, 4, 8, 8))], inits))
    assert "r" in open_values(model)
    filled = fill_open_shapes(model)
    assert not open_values(filled)
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(filled.graph.value_info) + list(filled.graph.output)}
    assert dims["r"] == dims["y"] == [1, 3, 4, 8, 8]


def test_split_sizes_are_fitted_to_the_known_dim():
    """``x.split(8)`` of 7 frames in an untyped TorchScript graph: the exporter writes [8]."""
    nodes = [helper.make_node("Split", ["x", "sizes"], ["y"], axis=0)]
    inits = [numpy_helper.from_array(np.asarray([8], np.int64), "sizes")]
    model, changed = to_onnx.fix_split_sizes(_model(nodes, [float_input("x", (7, 3, 4, 4))], inits))
    assert changed
    node = model.graph.node[0]
    fitted = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}[node.input[1]]
    assert fitted.tolist() == [7]
    assert to_onnx.fix_split_sizes(model)[1] is False  # fitted once: nothing left to change


@pytest.mark.slow
def test_the_converter_is_stopped_after_its_time(tmp_path, monkeypatch):
    class Net(torch.nn.Module):
        def forward(self, x):
            return x.flatten(2).unflatten(2, (4, 64)) * 2

    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(Net()), str(path))
    monkeypatch.setattr(to_onnx, "CONVERTER_SECONDS", 0.05)
    with pytest.raises(to_onnx.ConverterTimeout):
        to_onnx._export_converted_in_child(path, [(1, 3, 4, 8, 8)])
    monkeypatch.setattr(to_onnx, "CONVERTER_SECONDS", 300)
    model = to_onnx._export_converted_in_child(path, [(1, 3, 4, 8, 8)])
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 3, 4, 64]


def test_rms_norm_exports_below_opset_23():
    """``nn.RMSNorm`` through the TorchScript exporter at opset 17 (torch has a symbolic only from
    23): written as its definition, and equal to PyTorch in ONNX Runtime."""
    import onnxruntime as ort

    from edge3d.frontend.load import LoadedModel

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(3, 8, 1)
            self.norm = torch.nn.RMSNorm(8, eps=1e-6)

        def forward(self, x):
            return self.norm(self.conv(x).movedim(1, -1))

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        net.norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 4, 8, 8)
    traced = torch.jit.trace(net, (x,))
    loaded = LoadedModel(path=None, kind="torchscript", module=traced, input_shapes=[tuple(x.shape)])
    export = to_onnx.export_to_onnx(loaded)
    assert export.exporter == "torchscript" and export.opset == 17
    session = ort.InferenceSession(export.model.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert np.allclose(got, net(x).detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("how", ["size", "scale"])
def test_nearest_exact_upsampling_exports_equal_to_pytorch(dims, how):
    """``mode="nearest-exact"`` (Wan's VAE upsampler) has no TorchScript symbolic in torch: Resize
    with half_pixel coordinates and round_prefer_ceil picks exactly PyTorch's source pixels."""
    import onnxruntime as ort

    from edge3d.frontend.load import LoadedModel

    shape = (1, 2, 3, 5, 7)[:dims + 2]
    size = (4, 9, 13)[-dims:]

    class Up(torch.nn.Module):
        def forward(self, x):
            if how == "size":
                return torch.nn.functional.interpolate(x, size=size, mode="nearest-exact")
            return torch.nn.functional.interpolate(x, scale_factor=2.5, mode="nearest-exact")

    x = torch.randn(*shape)
    loaded = LoadedModel(path=None, kind="torchscript", module=torch.jit.trace(Up(), (x,)),
                         input_shapes=[shape])
    export = to_onnx.export_to_onnx(loaded)
    assert export.exporter == "torchscript"
    session = ort.InferenceSession(export.model.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_array_equal(got, Up()(x).numpy())


def test_a_loaded_torchscript_graph_is_typed_from_one_run(tmp_path):
    """A saved and loaded trace has no types on its values; one run gives each its dtype and rank
    (sizes stay open, so nothing of the example's shape is baked in)."""
    from edge3d.frontend.script_types import type_graph

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(3, 4, 1)

        def forward(self, x):
            y = self.conv(x).flatten(-2)
            return (y.argmax(1), y.movedim(-1, 1))

    x = torch.randn(1, 3, 2, 4, 4)
    torch.jit.save(torch.jit.trace(Net().eval(), (x,)), tmp_path / "net.pt")
    loaded = torch.jit.load(tmp_path / "net.pt")
    graph = loaded.inlined_graph

    def tensors():
        return [v for n in graph.nodes() if n.kind() != "prim::GetAttr" for v in n.outputs()
                if isinstance(v.type(), torch._C.TensorType)]

    assert any(v.type().dim() is None for v in tensors())
    assert type_graph(graph, (loaded._c, x), None) == len(tensors())
    ranks = {v.type().dim() for v in tensors()}
    assert None not in ranks and {4, 5} <= ranks
    assert {str(v.type().scalarType()) for v in tensors()} == {"Float", "Long"}
    assert all(v.type().sizes() is None or None in v.type().sizes() for v in tensors() if v.type().dim())


def test_a_model_above_protobufs_limit_is_refused_by_name(monkeypatch):
    """A 2 GB+ export used to end in "the ONNX model is invalid: Failed to serialize proto"."""
    from edge3d.errors import InputError

    model = _model([helper.make_node("Relu", ["x"], ["y"])], [float_input("x", (1, 3, 4, 8, 8))], [])
    monkeypatch.setattr(to_onnx, "PROTOBUF_LIMIT", model.ByteSize())  # this model is "too large"
    with pytest.raises(InputError, match="above protobuf's 2 GiB limit"):
        to_onnx.prepare(model)


def test_a_message_protobuf_will_not_measure_is_sized_by_its_weights():
    """Above 2 GiB, ``ByteSize()`` itself raises (upb's EncodeError): the initializers' sizes,
    from their dims, stand for the model's."""
    import types

    weights = numpy_helper.from_array(np.zeros((4, 8), np.float32), "w")

    def refuse():
        raise RuntimeError("Failed to serialize proto")

    model = types.SimpleNamespace(ByteSize=refuse, graph=types.SimpleNamespace(initializer=[weights, weights]))
    assert to_onnx.message_size(model) == to_onnx.PROTOBUF_LIMIT  # at least the limit
    assert to_onnx.message_size(_model([], [float_input("x", (1,))], [], outputs=())) < 1000
