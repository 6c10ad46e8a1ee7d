"""Replace the Conv3d layers of a trained model by 4D blocks, then fit the blocks' weights.

(a) projection from the 3D kernel, (b) closed-form least-squares calibration of each block
against its layer's outputs on calibration clips, (c) optional distillation of the original
model's logits. The result stays an ordinary ``nn.Module`` (5D in, 5D out, 4D inside).
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_files, write_json
from ..clips import calibration_clips
from ..errors import InputError
from . import BLOCKS, STRIDE_MODES, Block, Geometry
from .distill import agreement, distill
from .least_squares import RIDGES, fidelity, normal_equations, solve_, weights


@dataclass
class LayerReport:
    name: str
    kernel: list
    stride: list
    replaced: bool
    reason: str = ""
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    projection: dict | None = None  # layer-output fidelity after (a), on held-out clips
    calibrated: dict | None = None  # the same after (b)
    weights: str = ""  # which fit the block keeps
    ridge: float | None = None  # the least-squares ridge (towards the projection) kept, chosen on held-out clips


@dataclass
class RewriteReport:
    block: str
    stride_mode: str
    calibration: str
    layers: list[LayerReport] = field(default_factory=list)
    model: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"block": self.block, "stride_mode": self.stride_mode, "calibration": self.calibration,
                "model": self.model, "layers": [asdict(layer) for layer in self.layers]}


def ineligible(conv: nn.Conv3d) -> str:
    """Why a Conv3d keeps its form ('' when a block can replace it)."""
    kt, kh, kw = conv.kernel_size
    if kt == kh == kw == 1:
        return "1x1x1 kernel: pointwise, already 4D-friendly (a Conv2d on frames)"
    if kt == 1:
        return "kt = 1: already spatial-only (a Conv2d on frames)"
    if kh == kw == 1:
        return "kh = kw = 1: already temporal-only (a (kt, 1) Conv2d on the time layout)"
    if conv.groups != 1:
        return f"groups = {conv.groups}: the blocks are dense; grouped and depthwise kernels are already cheap"
    if any(d != 1 for d in conv.dilation):
        return "dilated kernel"
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        return f"padding {conv.padding!r} ({conv.padding_mode})"
    if any(k % 2 == 0 or p != k // 2 for k, p in zip(conv.kernel_size, conv.padding)):
        return "not a 'same'-padded odd kernel: the two branches would produce different sizes"
    return ""


def modularize_conv3d(graph_module) -> int:
    """Turn the ``aten.conv3d`` calls of an exported graph (and the ``aten.convolution`` ones of a
    converted TorchScript graph, when 3D and not transposed) into ``nn.Conv3d`` submodules, so an
    ExportedProgram can be rewritten like any module."""
    import torch.fx

    aten = torch.ops.aten
    count = 0
    replaced_weights: set[str] = set()
    for node in list(graph_module.graph.nodes):
        if node.op != "call_function" or node.target not in (aten.conv3d.default, aten.convolution.default):
            continue
        if node.target == aten.convolution.default:  # (x, w, b, stride, padding, dilation, transposed, out_pad, groups)
            x, weight_node, bias_node, stride, padding, dilation, transposed, _, groups = node.args
            if transposed or len(stride) != 3:
                continue
        else:
            args = list(node.args) + [None, [1, 1, 1], [0, 0, 0], [1, 1, 1], 1][len(node.args) - 2:]
            x, weight_node, bias_node, stride, padding, dilation, groups = args[:7]
        fetch = lambda n: None if n is None else _get_attr(graph_module, n.target)  # noqa: E731
        weight, bias = fetch(weight_node), fetch(bias_node)
        if weight is None or (bias_node is not None and bias is None):
            continue
        conv = nn.Conv3d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), tuple(stride),
                         tuple(padding), tuple(dilation), groups, bias=bias is not None)
        with torch.no_grad():
            conv.weight.copy_(weight)
            if bias is not None:
                conv.bias.copy_(bias)
        replaced_weights.update(n.target for n in (weight_node, bias_node) if n is not None)
        name = _module_name(node, count)
        graph_module.add_submodule(name, conv)
        with graph_module.graph.inserting_before(node):
            call = graph_module.graph.call_module(name, (x,))
        node.replace_all_uses_with(call)
        graph_module.graph.erase_node(node)
        count += 1
    graph_module.graph.eliminate_dead_code()
    used = {n.target for n in graph_module.graph.nodes if n.op == "get_attr"}
    for target in replaced_weights - used:  # drop the copies the new Conv3d modules now hold
        parent, _, attr = target.rpartition(".")
        owner = graph_module.get_submodule(parent) if parent else graph_module
        if hasattr(owner, attr):
            delattr(owner, attr)
    graph_module.recompile()
    return count


def _module_name(node, index: int) -> str:
    """A flat, unique submodule name that still says where the layer was in the source model."""
    stack = node.meta.get("nn_module_stack") or {}
    path = next(reversed(stack.values()))[0] if stack else f"conv{index}"
    return "e3d_" + path.replace(".", "_").lstrip("_") + f"_{index}"


def _get_attr(module, target: str):
    obj = module
    for part in target.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj.detach() if isinstance(obj, torch.Tensor) else None


class _Captured(Exception):
    """Raised by a hook once it has what it came for: the rest of the forward pass is not needed."""


def _at_layer(model: nn.Module, name: str, clips: list[torch.Tensor], want: str) -> list[torch.Tensor]:
    """The input (``want="input"``) or output of layer ``name`` on each clip; each forward pass
    stops at that layer."""
    kept: list[torch.Tensor] = []

    def hook(_m, args, out):
        kept.append((args[0] if want == "input" else out).detach())
        raise _Captured

    handle = model.get_submodule(name).register_forward_hook(hook)
    try:
        with torch.no_grad():
            for clip in clips:
                try:
                    model(clip)
                except _Captured:
                    pass
    finally:
        handle.remove()
    return kept


def _call_order(model: nn.Module, names: list[str], example: torch.Tensor) -> list[str]:
    """``names`` in the order a forward pass calls them (a layer never called keeps its place at the end)."""
    order: list[str] = []
    handles = [model.get_submodule(n).register_forward_hook(lambda *_, n=n: order.append(n)) for n in names]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    seen = list(dict.fromkeys(order))
    return seen + [n for n in names if n not in seen]


def count_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of the convs and linear layers inside ``module`` on input ``x``."""
    total = 0

    def hook(m, _args, out):
        nonlocal total
        if isinstance(m, nn.Linear):
            total += out.numel() * m.in_features
        else:
            total += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    counted = (nn.Conv2d, nn.Conv3d, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, counted)]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return total


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)


def rewrite_model(model: nn.Module, example: torch.Tensor, block: str = "st-add", stride_mode: str = "aligned",
                  calib: list[torch.Tensor] | None = None, heldout: list[torch.Tensor] | None = None,
                  finetune_steps: int = 0, seed: int = 0,
                  device: str | torch.device | None = None) -> tuple[nn.Module, RewriteReport]:
    """``model`` with every eligible Conv3d replaced by ``block``: projected, fitted on ``calib``
    and distilled for ``finetune_steps`` (on ``device`` where one is given); the model returned
    and the one passed stay on the CPU."""
    if block not in BLOCKS:
        raise InputError(f"unknown block {block!r}; choose one of {', '.join(BLOCKS)}")
    if stride_mode not in STRIDE_MODES:
        raise InputError(f"unknown stride mode {stride_mode!r}; choose aligned or paper")
    original = _eval(model)
    with warnings.catch_warnings():  # deep-copying an exported module warns about its pytree specs
        warnings.simplefilter("ignore")
        rewritten = _eval(copy.deepcopy(original))
    report = RewriteReport(block, stride_mode, "least-squares" if calib else "projection")
    convs = dict((n, m) for n, m in original.named_modules() if isinstance(m, nn.Conv3d))
    calib, heldout = calib or [], heldout or []
    clips = calib + heldout + [example]
    n_calib, n_held = len(calib), len(heldout)
    layers = {name: LayerReport(name, list(conv.kernel_size), list(conv.stride), replaced=False,
                                reason=ineligible(conv)) for name, conv in convs.items()}
    report.layers = list(layers.values())
    # Each block is fitted in the order the model runs, on the inputs the rewritten model gives it
    # (the blocks before it already in place) against the original layer's outputs: a block then
    # also corrects what the blocks before it got wrong, instead of errors adding up layer by layer.
    for name in _call_order(original, [n for n, layer in layers.items() if not layer.reason], example):
        conv, layer = convs[name], layers[name]
        inputs = _at_layer(rewritten, name, clips, "input")
        outputs = _at_layer(original, name, clips, "output")
        if not inputs:
            layer.reason = "not called by a forward pass"
            continue
        new = fitted_block(block, stride_mode, Geometry.of(conv), conv.weight.detach(),
                           None if conv.bias is None else conv.bias.detach(), layer, inputs, outputs, n_calib, n_held)
        if new is None:
            continue
        layer.replaced = True
        layer.params_before = sum(p.numel() for p in conv.parameters())
        layer.params_after = sum(p.numel() for p in new.parameters())
        layer.macs_before = count_macs(conv, inputs[-1])
        layer.macs_after = count_macs(new, inputs[-1])
        _set_submodule(rewritten, name, new)
        del inputs, outputs
    distilled = distill(original, rewritten, calib, finetune_steps, heldout, seed=seed, device=device) \
        if finetune_steps and calib else None
    report.model = _model_summary(original, rewritten, example, heldout)
    if distilled:
        report.model["distillation"] = distilled
    report.model["replaced_layers"] = sum(layer.replaced for layer in report.layers)
    return rewritten, report


def fitted_block(block: str, stride_mode: str, geometry: Geometry, weight: torch.Tensor, bias: torch.Tensor | None,
                 layer: LayerReport, inputs: list[torch.Tensor], outputs: list[torch.Tensor], n_calib: int,
                 n_held: int) -> Block | None:
    """The block projected from a 3D kernel, then fitted by least squares where that does better
    on held-out clips, with its figures in ``layer``; None (and the reason in ``layer``) where the
    block cannot stand in for the layer. ``inputs``/``outputs``: the layer's, calibration clips
    first, then ``n_held`` held-out ones (shared by the PyTorch and the ONNX rewrite)."""
    fit_in, fit_out = inputs[:n_calib], outputs[:n_calib]
    # Fidelity is measured on clips the fit did not see (the calibration clips if none are held out).
    test_in = inputs[n_calib:n_calib + n_held] or fit_in or inputs[-1:]
    test_out = outputs[n_calib:n_calib + n_held] or fit_out or outputs[-1:]
    try:
        new = BLOCKS[block](geometry, stride_mode).eval()
        new.project_(weight, bias)
        layer.projection = fidelity(new, test_in, test_out)
    except ValueError as exc:  # e.g. the paper's stride on a frame size it cannot handle
        layer.reason = str(exc)
        return None
    layer.weights = "projection"
    if fit_in:
        projected = copy.deepcopy(new.state_dict())
        system = normal_equations(new, fit_in, fit_out)
        prior = weights(system.convs)
        best: tuple[dict, float, dict] | None = None
        for ridge in RIDGES if n_held else RIDGES[:1]:  # without held-out clips nothing can choose
            solve_(system, ridge, prior)
            fid = fidelity(new, test_in, test_out)
            if best is None or fid["rel_l2"] < best[0]["rel_l2"]:
                best = (fid, ridge, copy.deepcopy(new.state_dict()))
        assert best is not None
        layer.calibrated = best[0]
        if layer.calibrated["rel_l2"] <= layer.projection["rel_l2"]:
            new.load_state_dict(best[2])
            layer.weights, layer.ridge = "least-squares", best[1]
        else:  # too few calibration positions for the fit to generalise: keep the projection
            new.load_state_dict(projected)
            layer.weights = "projection (least squares did worse on held-out clips)"
    return new


def _model_summary(original, rewritten, example, heldout) -> dict:
    summary = {
        "params_before": sum(p.numel() for p in original.parameters()),
        "params_after": sum(p.numel() for p in rewritten.parameters()),
        "macs_before": count_macs(original, example),
        "macs_after": count_macs(rewritten, example),
    }
    if heldout:
        summary["heldout_clips"] = len(heldout)
        summary["top1_agreement"] = agreement(original, rewritten, heldout)[0]
    return summary


def rewrite(module: nn.Module, block: str = "st-add", stride_mode: str = "aligned", calib="random",
            input_shape: tuple[int, ...] | None = None, finetune_steps: int = 0, with_report: bool = False):
    """Python API: the rewritten module (with ``with_report``, also its report as a dict).
    ``calib`` is ``"random"`` (the CLI's default), ``None`` (projection only), a folder of
    ``.npy`` clips or a list of clip tensors; ``input_shape`` is needed unless clips are given."""
    clips = list(calib) if isinstance(calib, (list, tuple)) else None
    if clips is None:
        if input_shape is None:
            raise InputError("rewrite needs input_shape=(B, C, T, H, W) or a list of calibration clips")
        clips = calibration_clips(calib, input_shape) if calib is not None else []
    example = clips[0] if clips else torch.randn(*input_shape)
    model, report = rewrite_model(module, example, block, stride_mode, clips or None, None, finetune_steps)
    return (model, report.to_dict()) if with_report else model


def rewrite_loaded(loaded, block: str, stride_mode: str = "aligned", calib: str | None = "random",
                   calib_clips: int = 8, finetune_steps: int = 0):
    """Rewrite a model as the loader gives it; returns (module, report, example clip). An ONNX
    model is rewritten as a graph (``onnx_rewrite``) and comes back as an ``onnx.ModelProto``."""
    if loaded.kind == "onnx":
        return _rewrite_onnx(loaded, block, stride_mode, calib, calib_clips, finetune_steps)
    if loaded.kind in ("state-dict", "pickled-module"):
        module = loaded.module
    elif loaded.kind == "exported-program":
        module = loaded.exported.module()
        modularize_conv3d(module)
    elif loaded.kind == "torchscript":
        if not loaded.input_shapes:
            raise InputError("pass --input-shape B,C,T,H,W: the rewrite needs the clip shape")
        module = script_as_module(loaded.path, loaded.input_shapes)
        modularize_conv3d(module)
    else:
        raise InputError(f"a {loaded.kind} graph cannot be rewritten here; give a .pt2 (torch.export.save), "
                         "TorchScript, ONNX, a state_dict with --arch, or a pickled module with --trust-pickle")
    if not loaded.input_shapes:
        raise InputError("pass --input-shape B,C,T,H,W: the rewrite needs the clip shape")
    clips, heldout, example = _clip_sets(calib, tuple(loaded.input_shapes[0]), calib_clips)
    module, report = rewrite_model(module, example, block, stride_mode, clips or None, heldout, finetune_steps)
    return module, report, example


def _clip_sets(calib: str | None, shape: tuple[int, ...], count: int):
    """Calibration clips, held-out clips (for the agreement and for picking distilled weights) and
    the example clip."""
    clips = calibration_clips(calib, shape, count) if calib else []
    if calib == "random":
        heldout = calibration_clips("random", shape, max(2, count // 2), seed=10_000)
    else:  # a folder: its last quarter is held out for the top-1 agreement
        cut = max(1, len(clips) * 3 // 4) if len(clips) > 1 else len(clips)
        clips, heldout = clips[:cut], clips[cut:]
    example = clips[0] if clips else torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    return clips, heldout, example


def _rewrite_onnx(loaded, block: str, stride_mode: str, calib: str | None, calib_clips: int, finetune_steps: int):
    """The rewrite of an ONNX graph: the same blocks and fits, each layer's inputs and outputs
    from ONNX Runtime. Nothing there is trainable, so distillation is not run (the report says so)."""
    from ..frontend.to_onnx import export_to_onnx
    from ..onnx_tensors import graph_inputs
    from .onnx_rewrite import rewrite_onnx

    model = export_to_onnx(loaded).model  # with --input-shape applied to the graph
    inputs = graph_inputs(model.graph)
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim] if len(inputs) == 1 else []
    if len(dims) != 5 or not all(d > 0 for d in dims):
        raise InputError("the rewrite takes an ONNX model with one clip input of fixed size; pass --input-shape "
                         "B,C,T,H,W")
    clips, heldout, example = _clip_sets(calib, tuple(dims), calib_clips)
    rewritten, report = rewrite_onnx(model, block, stride_mode, [c.numpy() for c in clips],
                                     [c.numpy() for c in heldout], example.numpy())
    if finetune_steps:
        report.model["distillation"] = {"steps": 0, "note": "not run: an ONNX model has no trainable module here "
                                        "(calibration only); rewrite the PyTorch model to distil"}
    return rewritten, report, example


def script_as_module(path: Path, shapes: list[tuple[int, ...]]) -> nn.Module:
    """A TorchScript file as the module of an ExportedProgram (torch's TorchScript converter), so
    its Conv3d layers can become trainable modules: converted in a child process stopped after
    the converter's time limit, saved as .pt2 and loaded back through the same checks as any .pt2."""
    import tempfile

    from ..frontend.to_onnx import CONVERTER_SECONDS, ConverterTimeout, convert_in_child
    from ..frontend.trust_pt2 import load_exported_program

    with tempfile.TemporaryDirectory(prefix="edge3d-script-") as scratch:
        out = Path(scratch) / "converted.pt2"
        try:
            convert_in_child(path, shapes, out, "pt2")
        except ConverterTimeout:
            raise InputError(f"torch's TorchScript converter did not finish on {path} in {CONVERTER_SECONDS} s; "
                             "save the model with torch.export.save (.pt2) and rewrite that") from None
        except RuntimeError:
            raise InputError(f"torch's TorchScript converter cannot convert {path}; save the model with "
                             "torch.export.save (.pt2) and rewrite that") from None
        module = load_exported_program(out).module()
    # loaded weights are views of one storage (non-leaf, as_strided): the rewrite deep-copies the
    # module, which such tensors refuse, so each becomes a tensor of its own
    with torch.no_grad():
        for sub in module.modules():
            for name, param in list(sub._parameters.items()):
                if param is not None:
                    sub._parameters[name] = nn.Parameter(param.detach().clone(), requires_grad=param.requires_grad)
            for name, buffer in list(sub._buffers.items()):
                if buffer is not None:
                    sub._buffers[name] = buffer.detach().clone()
            for name, value in list(vars(sub).items()):
                if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
                    setattr(sub, name, value.detach().clone())
    return module


def save_exported(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Save as an ExportedProgram: loads later without unpickling any code."""
    torch.export.save(torch.export.export(_eval(module), (example,)), str(path))


def report_path(out: Path) -> Path:
    """Where `edge3d rewrite` writes the report of a rewrite saved at ``out``."""
    return out.with_suffix(".json")


def write_rewrite(module, example: torch.Tensor, report: RewriteReport, out: Path, force: bool = False) -> None:
    """The rewritten model (``out``: a .pt2, or a .onnx for a rewritten ONNX graph) and its report
    (``.json`` beside it), both or neither."""
    with atomic_files(out, force) as scratch:
        if isinstance(module, nn.Module):
            save_exported(module, example, scratch / out.name)
        else:
            from ..pipeline import save_onnx

            save_onnx(module, scratch / out.name)
        write_json(scratch / report_path(out).name, report.to_dict())


def _eval(module: nn.Module) -> nn.Module:
    """eval() where the module allows it (an ExportedProgram's module() is already inference-only)."""
    try:
        module.eval()
    except NotImplementedError:
        for child in module.children():
            _eval(child)
    return module
