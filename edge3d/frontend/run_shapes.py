"""Shapes ONNX shape inference leaves open, read off one run in ONNX Runtime.

Exporters write shape arithmetic (``Shape`` → ``Slice`` → ``Concat`` → ``Reshape``, ``Split``
with computed sizes) that ``onnx.shape_inference`` cannot always follow, even when every input
shape is fixed — TorchScript exports of video VAEs with chunked norms do this. The lowering
needs every rank-5 value's dims, so when inference leaves some open and the inputs are static,
the model runs once on seeded inputs with those values as extra outputs, and their shapes are
written into ``value_info``. Nothing else of the model changes.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def _static(value) -> bool:
    dims = value.type.tensor_type.shape.dim if value.type.HasField("tensor_type") else None
    return dims is not None and value.type.tensor_type.HasField("shape") and all(
        d.HasField("dim_value") for d in dims)


def open_values(model) -> list[str]:
    """Names of node outputs whose shape inference left a dim (or the rank) open."""
    known = {v.name: v for v in list(model.graph.value_info) + list(model.graph.output)}
    return [out for node in model.graph.node for out in node.output
            if out and (out not in known or not _static(known[out]))]


def fill_open_shapes(model, store=None):
    """``model`` with the open shapes of its values filled in from one run; unchanged when
    nothing is open, an input is not static, or the model does not run here. ``store``: where
    ``model``'s weights are (``edge3d.model_store``); the probe is stored beside them."""
    import onnx
    import onnxruntime as ort

    from ..model_store import MemoryStore
    from ..onnx_tensors import graph_inputs
    from ..verify import seeded_inputs

    missing = open_values(model)
    inputs = graph_inputs(model.graph)
    if not missing or not all(_static(v) for v in inputs):
        return model
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    declared = {o.name for o in probe.graph.output}
    for name in missing:
        if name not in declared:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    shapes = [tuple(d.dim_value for d in v.type.tensor_type.shape.dim) for v in inputs]
    dtypes = [onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type) for v in inputs]
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every value
        store = store or MemoryStore()
        session = ort.InferenceSession(store.loadable(store.put(probe, "probe")), options,
                                       providers=["CPUExecutionProvider"])
        results = session.run(missing, dict(zip([v.name for v in inputs], seeded_inputs(shapes, dtypes, 0))))
    except Exception as exc:  # noqa: BLE001 - a model ORT cannot run keeps its open shapes
        log.debug("open shapes left as they are: the model does not run in ONNX Runtime (%s)", exc)
        return model
    by_name = {v.name: v for v in list(model.graph.value_info) + list(model.graph.output)}
    for name, array in zip(missing, results):
        array = np.asarray(array)
        info = onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(array.dtype),
                                                  list(array.shape))
        if name in by_name:  # a declared output keeps its entry, now with its shape
            by_name[name].type.CopyFrom(info.type)
        else:
            model.graph.value_info.append(info)
    log.debug("filled the shapes of %d value(s) from one run in ONNX Runtime", len(missing))
    return onnx.shape_inference.infer_shapes(model, data_prop=True)
