"""A corpus of real third-party 3D model code (random weights, small configurations) for edge3d.

Every entry is built from a pip-installed package's own model classes — nothing is downloaded from
a model hub — and returns what a user would hand to ``edge3d export``: a module in eval mode whose
forward takes tensors and returns a tensor. ``ZOO`` maps a name to its :class:`ZooModel`; a model
whose package is not installed is still listed (``available()`` says so), so the tests skip it.

``tests/test_zoo.py`` exports the corpus through the CLI; ``benchmarks/zoo.py`` measures it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEED = 0
FORMATS = ("torchscript", "pt2", "state_dict")
SUFFIX = {"torchscript": ".pt", "pt2": ".pt2", "state_dict": ".sd.pt"}

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ZooModel:
    """One corpus model.

    ``build()`` -> ``(module, input_shape, extra_input_shapes)``: the module (``build_seeded``
    seeds its weights and puts it in eval mode), the shape of its first (rank-5) input and the
    shapes of any further inputs (``None`` for none); every input is float32. ``formats``: the
    files it is saved as (``state_dict`` only where ``arch`` rebuilds the class from JSON keyword
    arguments, as ``edge3d export --arch`` does)."""

    name: str
    package: str  # import name: the model is skipped where it is missing
    category: str  # "video classifier" | "video transformer" | "3D segmentation" | "video VAE"
    build: Callable[[], tuple[Any, Shape, list[Shape] | None]]
    formats: tuple[str, ...] = ("torchscript", "pt2")
    arch: str | None = None  # package.module:factory for --arch (state_dict)
    arch_kwargs: dict[str, Any] | None = None
    what: str = ""  # one line: the model, and the wrapper if there is one
    not_applicable: dict[str, str] = field(default_factory=dict)  # format -> why it cannot be saved so
    script: bool = False  # save TorchScript with torch.jit.script (trace is tried first otherwise)

    def available(self) -> bool:
        return importlib.util.find_spec(self.package) is not None


def register(registry: dict[str, ZooModel], *models: ZooModel) -> None:
    for model in models:
        assert model.name not in registry, model.name
        registry[model.name] = model


def inputs_for(shapes: list[Shape], seed: int = SEED):
    import torch

    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, generator=generator) for shape in shapes)


def build_seeded(model: ZooModel):
    """``build()`` with the weights seeded, so a state_dict and the reference agree run to run."""
    import torch

    torch.manual_seed(SEED)
    with torch.no_grad():
        module, shape, extra = model.build()
    return module.eval(), [tuple(shape), *[tuple(s) for s in (extra or [])]]


def save(model: ZooModel, fmt: str, path: Path) -> dict[str, Any]:
    """Save ``model`` as ``fmt`` at ``path``; returns ``{"shapes": [...], "how": ...}`` where ``how``
    says which tracer made the file (``trace``, ``script`` where tracing failed, ``export``,
    ``state_dict``)."""
    import torch

    module, shapes = build_seeded(model)
    args = inputs_for(shapes)
    path = Path(path)
    if fmt == "torchscript":
        how = "script" if model.script else "trace"
        try:
            with torch.no_grad():
                if model.script:
                    scripted = torch.jit.script(module)
                else:
                    scripted = torch.jit.trace(module, args, check_trace=False)
            torch.jit.save(scripted, str(path))
        except Exception:  # noqa: BLE001 - trace failed: script is what a user tries next
            if model.script:
                raise
            how = "script"
            torch.jit.save(torch.jit.script(module), str(path))
    elif fmt == "pt2":
        how = "export"
        with torch.no_grad():
            program = torch.export.export(module, args)
        torch.export.save(program, str(path))
    elif fmt == "state_dict":
        assert model.arch, f"{model.name} has no --arch factory"
        how = "state_dict"
        torch.save(module.state_dict(), str(path))
    else:
        raise ValueError(fmt)
    return {"shapes": shapes, "how": how}


def export_args(model: ZooModel, fmt: str, model_path: Path, shapes: list[Shape], out: Path) -> list[str]:
    """The arguments of `edge3d export` for a saved corpus model (after ``export``)."""
    args = ["export", str(model_path), "-o", str(out), "--target", "onnx"]
    if fmt != "pt2":  # a .pt2 records its example inputs
        for shape in shapes:
            args += ["--input-shape", ",".join(map(str, shape))]
    if fmt == "state_dict":
        args += ["--arch", model.arch, "--arch-kwargs", json.dumps(model.arch_kwargs or {})]
    return args


@contextlib.contextmanager
def torchvision_stub() -> Iterator[None]:
    """Lets a package import whose module level names a torchvision symbol its video models never
    use (pytorchvideo's ``torchvision.ops.RoIAlign`` for detection heads; vit-pytorch's
    ``torchvision.transforms`` for its self-supervised trainers). torchvision has no CPU build
    here; where it is installed this does nothing. The stub is removed again afterwards, so
    libraries that probe for torchvision later (transformers, diffusers) do not see it."""
    if importlib.util.find_spec("torchvision") is not None:
        yield
        return

    def unavailable(name):
        def fail(*args, **kwargs):
            raise RuntimeError(f"torchvision.{name} is a stub: torchvision is not installed")

        return fail

    class Stub(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return unavailable(name)

    names = ("torchvision", "torchvision.ops", "torchvision.transforms")
    saved = {name: sys.modules.get(name) for name in names}
    root = Stub("torchvision")
    root.ops, root.transforms = Stub("torchvision.ops"), Stub("torchvision.transforms")
    sys.modules.update({"torchvision": root, "torchvision.ops": root.ops, "torchvision.transforms": root.transforms})
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _collect() -> dict[str, ZooModel]:
    from . import diffusers_models, hf_models, monai_models, nnunet_models, pytorchvideo_models, vit_pytorch_models

    zoo: dict[str, ZooModel] = {}
    for module in (pytorchvideo_models, hf_models, vit_pytorch_models, monai_models, nnunet_models,
                   diffusers_models):
        register(zoo, *module.MODELS)
    return zoo


ZOO: dict[str, ZooModel] = _collect()
