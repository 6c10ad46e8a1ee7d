"""Calibration in call order and distillation (``edge3d.blocks.rewrite`` and ``.distill``) on a
small trained Conv3d classifier."""

from __future__ import annotations

import copy

import pytest
import torch
from test_blocks import moving_dots
from torch import nn

from edge3d.blocks import BLOCKS, Geometry
from edge3d.blocks.distill import distill
from edge3d.blocks.least_squares import fidelity, fit_
from edge3d.blocks.rewrite import rewrite_model


class ThreeConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv3d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm3d(8)
        self.c2 = nn.Conv3d(8, 8, 3, padding=1)
        self.c3 = nn.Conv3d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = torch.relu(self.bn(self.c1(x)))
        x = torch.relu(self.c3(torch.relu(self.c2(x))))
        return self.head(x.mean((2, 3, 4)))


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = ThreeConvNet()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)  # 0.02 leaves c3 dead (all inputs zero)
    x, y = moving_dots(64, 0)
    for _ in range(40):
        loss = nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def _clips(seed, n=16):
    return list(moving_dots(n, seed)[0].split(1))


def test_each_block_is_fitted_on_the_inputs_the_rewritten_model_gives_it(trained):
    """c3's block, fitted after c1's and c2's are in place, fits what reaches it in the rewritten
    model better than a block fitted on the original model's inputs to c3."""
    calib, heldout = _clips(2), _clips(3, 8)
    rewritten, report = rewrite_model(trained, calib[0], "st-add", "aligned", calib, heldout)
    assert [layer.name for layer in report.layers if layer.replaced] == ["c1", "c2", "c3"]

    def at(model, name, clips, want):
        kept = []
        handle = model.get_submodule(name).register_forward_hook(
            lambda _m, args, out: kept.append((args[0] if want == "input" else out).detach()))
        with torch.no_grad():
            for clip in clips:
                model(clip)
        handle.remove()
        return kept

    rewritten_in = at(rewritten, "c3", heldout, "input")
    original_out = at(trained, "c3", heldout, "output")
    on_original_inputs = BLOCKS["st-add"](Geometry.of(trained.c3), "aligned")
    fit_(on_original_inputs, at(trained, "c3", calib, "input"), at(trained, "c3", calib, "output"))
    assert fidelity(rewritten.c3, rewritten_in, original_out)["rel_l2"] < \
        fidelity(on_original_inputs, rewritten_in, original_out)["rel_l2"]


def _projected(trained):
    """The rewritten model after projection only: far enough from the original to distil."""
    return rewrite_model(trained, _clips(2)[0], "rank1", "aligned")[0]


def test_distillation_moves_towards_the_original_and_touches_only_the_blocks(trained):
    student = _projected(trained)
    others = {n: p.detach().clone() for n, p in student.named_parameters() if n.split(".")[0] in ("bn", "head")}
    result = distill(trained, student, _clips(2), steps=30, heldout=_clips(3, 8), progress=False)
    assert result["distance_after"] < result["distance_before"]
    assert result["agreement_after"] >= result["agreement_before"]
    assert result["steps_run"] == 30 and not result["interrupted"] and result["checked_on"] == "held-out clips"
    for name, before in others.items():
        assert torch.equal(dict(student.named_parameters())[name], before), name


def test_distillation_is_deterministic_for_a_seed(trained):
    runs = []
    for _ in range(2):
        student = _projected(trained)
        distill(trained, student, _clips(2), steps=10, heldout=_clips(3, 8), seed=5, progress=False)
        runs.append([p.detach().clone() for p in student.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_ctrl_c_keeps_the_best_weights_so_far(trained, monkeypatch):
    """Interrupted at step 7 with checks every step: the weights kept are those of the best check."""
    student = _projected(trained)
    snapshots = {0: copy.deepcopy(student.state_dict())}
    real_step = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        count = len(snapshots)
        if count == 7:
            raise KeyboardInterrupt
        out = real_step(self, *args, **kwargs)
        snapshots[count] = copy.deepcopy(student.state_dict())
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    result = distill(trained, student, _clips(2), steps=20, heldout=_clips(3, 8), progress=False)
    assert result["interrupted"] and result["steps_run"] == 6
    assert all(torch.equal(student.state_dict()[k], v) for k, v in snapshots[result["kept_step"]].items())
    assert result["agreement_after"] >= result["agreement_before"]


def test_the_rewrite_report_carries_the_distillation_figures(trained):
    calib, heldout = _clips(2), _clips(3, 8)
    _, report = rewrite_model(trained, calib[0], "st-add", "aligned", calib, heldout, finetune_steps=5)
    figures = report.model["distillation"]
    assert figures["steps_run"] == 5 and figures["agreement_after"] >= figures["agreement_before"]
    assert report.model["top1_agreement"] == figures["agreement_after"]  # both measured on the held-out clips


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
])
def test_distillation_on_a_device_matches_and_hands_both_models_back(trained, device):
    """The steps run where ``device`` says and both models end where they were. On the CPU the
    weights equal a run in place; on a GPU (other kernels, so maybe another kept step) the run
    still moves towards the original."""
    in_place, moved = _projected(trained), _projected(trained)
    distill(trained, in_place, _clips(2), steps=8, heldout=_clips(3, 8), seed=1, progress=False)
    figures = distill(trained, moved, _clips(2), steps=8, heldout=_clips(3, 8), seed=1, progress=False,
                      device=device)
    assert figures["device"] == device and figures["steps_run"] == 8
    for model in (trained, moved):
        assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert figures["distance_after"] <= figures["distance_before"]
    if device == "cpu":
        assert all(torch.equal(a, b) for a, b in zip(in_place.parameters(), moved.parameters()))
