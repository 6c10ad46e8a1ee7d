"""Real third-party 3D models (tests/zoo: pytorchvideo, transformers, vit-pytorch, MONAI, nnU-Net's
dynamic-network-architectures, diffusers) through `edge3d export`: exit 0, no value above rank 4
in the lowered graph after shape inference, and both verification figures present and passing.

Formats: every corpus model from ``.pt2`` (torch.export, the dynamo exporter) and from TorchScript
(traced, saved and loaded again, so its graph has no tensor types: the TorchScript exporter, with
the types from one run, Split sizes fitted and open shapes filled); a state_dict with ``--arch``
for ``STATE_DICT``. benchmarks/zoo.py runs every model in every
format and reports figures. A model missing its package is skipped (``pytest.mark.zoo(package)``,
tests/conftest.py); one that fails is a failure: none is marked xfail.
"""

from __future__ import annotations

import json

import onnx
import pytest
from conftest import invoke
from golden import check_golden
from lowering_harness import max_rank_after_inference
from zoo import SUFFIX, ZOO, export_args, save

STATE_DICT = ("monai_dynunet",)


def _cases():
    cases = [(name, "pt2") for name, model in ZOO.items() if "pt2" in model.formats]
    cases += [(name, "torchscript") for name, model in ZOO.items() if "torchscript" in model.formats]
    cases += [(name, "state_dict") for name in STATE_DICT]
    for name, fmt in cases:
        assert fmt in ZOO[name].formats, (name, fmt)
        yield pytest.param(name, fmt, id=f"{name}-{fmt}",
                           marks=[pytest.mark.slow, pytest.mark.zoo(ZOO[name].package)])


@pytest.mark.parametrize(("name", "fmt"), list(_cases()))
def test_zoo_model_exports_rank4_and_verifies(name, fmt, tmp_path, update_golden):
    model = ZOO[name]
    path = tmp_path / f"model{SUFFIX[fmt]}"
    saved = save(model, fmt, path)
    out = tmp_path / "bundle"
    result = invoke(*export_args(model, fmt, path, saved["shapes"], out), "-q")
    assert result.exit_code == 0, f"{name} ({fmt}, saved by {saved['how']}): {result.stderr.strip()}"

    lowered = onnx.load(str(out / "model.onnx"))
    assert max_rank_after_inference(lowered) <= 4

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["tensors_above_rank4"] == 0
    verification = manifest["verification"]
    against_5d = verification["lowering"]["outputs"]
    against_torch = verification["outputs"]
    assert against_5d and against_torch, "a verification figure is missing"
    for output in against_5d:  # the lowering's own error, against the 5D ONNX model
        assert output["rel_l2"] <= output["tolerance"], (name, "vs 5D ONNX", output)
    for output in against_torch:  # against PyTorch, within what the plain 5D export itself loses
        assert output["rel_l2"] <= output["tolerance"], (name, "vs PyTorch", output)
    assert verification["passed"] is True, verification["failures"]
    check_golden(f"zoo-{name}-{fmt}", lowered, update_golden)  # op counts at the pinned package versions
