"""Graph passes; ``lower_model`` runs the rank-4 lowering on an ONNX ModelProto."""

from __future__ import annotations

import gc
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .lower_rank import (
    LowerHighRankPass,
    LoweringError,
    LoweringPreconditionError,
    LoweringReport,
    RuleContractError,
    RuleError,
    RuleFailed,
)

if TYPE_CHECKING:
    import onnx
    import onnx_ir as ir

__all__ = [
    "LowerHighRankPass", "LoweringError", "LoweringPreconditionError", "LoweringReport", "RuleContractError",
    "RuleError", "RuleFailed", "lower_model",
]


def lower_model(model: onnx.ModelProto, allow_high_rank: bool = False, conv_strategy: str = "auto",
                shapes_inferred: bool = False, allowed_ops: frozenset[str] | None = None,
                op_limits: Mapping[str, Any] | None = None, weights_dir: str | None = None, save_to: Path | None = None,
                size_threshold: int = 1024, chunk_convs: bool = True) -> tuple[onnx.ModelProto, LoweringReport]:
    """Lower a ModelProto; returns the new ModelProto and the report of what was rewritten.

    ``shapes_inferred``: the model comes from ``frontend.to_onnx.prepare``, which has just run
    the same shape inference, so it is not run again. ``allowed_ops``: the target profile's ops,
    for rules that can build the same result from different ops (Conv3d taps without Gather), and
    ``op_limits`` its per-op limits (Concat only on channels: no chunked Conv3d). ``chunk_convs``:
    whether ``auto`` may chunk a Conv3d to bound memory (a GPU profile says no: see ``conv.py``).
    ``weights_dir``: where the files of the model's external tensors are (``edge3d.model_store``);
    they are read as the rules need them, and the result refers to them in turn. ``save_to``: a
    file the result is written to, tensors of more than ``size_threshold`` bytes beside it in
    ``<stem>.data``; the graph alone is then returned, and the new weights are never held twice
    (as arrays and again as a serialised message)."""
    import onnx
    import onnx_ir as ir
    from onnx_ir.passes.common import RemoveUnusedNodesPass

    inferred = model if shapes_inferred else onnx.shape_inference.infer_shapes(model, data_prop=True)
    ir_model = ir.from_proto(inferred)
    if weights_dir is not None:
        ir.external_data.set_base_dir(ir_model.graph, weights_dir)
    lowering = LowerHighRankPass(allow_high_rank=allow_high_rank, conv_strategy=conv_strategy,
                                 allowed_ops=allowed_ops, op_limits=op_limits, chunk_convs=chunk_convs)
    lowering(ir_model)  # called directly: a PassManager would wrap LoweringError in PassError
    RemoveUnusedNodesPass()(ir_model)
    _drop_stale_value_info(ir_model)
    try:
        if save_to is None:
            result = ir.to_proto(ir_model)
        else:
            ir.save(ir_model, save_to, external_data=f"{Path(save_to).stem}.data", size_threshold_bytes=size_threshold)
            result = onnx.load_model(str(save_to), load_external_data=False)
        # an onnx-ir graph is all reference cycles (values and their nodes): collected now, its
        # rewritten weights go at once rather than at the collector's next pass (123 MB on R3D-18)
        del ir_model
        gc.collect()
        return result, lowering.report
    except ir.serde.SerdeError as exc:  # e.g. a metadata string that is not UTF-8 in a damaged file
        from ..errors import InputError, first_line

        raise InputError(f"the model holds a field that cannot be written back ({first_line(exc, 200)}); "
                         "check the file, or export it again") from None


def _drop_stale_value_info(model: ir.Model) -> None:
    """Shapes recorded before lowering no longer hold for the rewritten values; infer them anew."""
    for node in model.graph.all_nodes() if hasattr(model.graph, "all_nodes") else model.graph:  # onnx-ir < 0.1.2
        for out in node.outputs:
            if not out.is_graph_output():
                out.shape = None
