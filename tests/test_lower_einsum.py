"""Einsum on rank-5+ operands (rules.einsum): checked against ONNX Runtime on the original, every
tensor of the lowered graph at rank ≤ 4 (lowering_harness.check_lowering)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from lowering_harness import check_lowering, float_input, make_model
from onnx import TensorProto, helper

from edge3d.passes import LoweringError

SIZES = dict(zip("bcthwkdn", (2, 3, 4, 2, 3, 5, 2, 3), strict=True))


def _model(equation: str, terms: list[str]):
    inputs = [float_input(f"x{i}", [SIZES[c] for c in term]) for i, term in enumerate(terms)]
    node = helper.make_node("Einsum", [f"x{i}" for i in range(len(terms))], ["y"], equation=equation)
    model = make_model([node], inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], opset=17)
    rng = np.random.default_rng(len(equation))
    feeds = {f"x{i}": rng.standard_normal([SIZES[c] for c in term]).astype(np.float32)
             for i, term in enumerate(terms)}
    return model, feeds


@pytest.mark.parametrize("equation", [
    "bcthw,kc->bkthw",        # a 1×1×1 Conv3d written as einsum
    "bcthw,bctnw->bthn",      # attention scores over channels (per frame)
    "bcthw->bthwc",           # a pure permutation (channel-last)
    "bcthw->bc",              # global average pool's sum
    "bcthw,c->bthw",          # a channel-weighted sum
    "...thw,kt->...khw",      # ellipsis over the leading axes, a temporal mix
])
def test_einsum_patterns(equation):
    terms = equation.split("->")[0].split(",")
    spelled = [t.replace("...", "bc") for t in terms]
    model, feeds = _model(equation, spelled)
    _, report = check_lowering(model, feeds)
    assert any("Einsum" in item["rule"] for item in report.lowered)


def test_einsum_of_three_operands_is_refused_with_the_reason():
    model, feeds = _model("bcthw,c,k->bkthw", ["bcthw", "c", "k"])
    with pytest.raises(LoweringError, match="more than two operands"):
        check_lowering(model, feeds)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_random_two_operand_einsums(data):
    """Random splits of 4 to 8 letters into batch/left/right/contracted, in random orders, with
    operands up to rank 5 (graph inputs) and an output up to rank 8: each is lowered exactly or
    refused with a reason, never wrong."""
    letters = data.draw(st.permutations("bcthwkdn"))[:data.draw(st.integers(4, 8))]
    roles = data.draw(st.lists(st.sampled_from(["batch", "left", "right", "inner"]),
                               min_size=len(letters), max_size=len(letters)))
    a = [c for c, r in zip(letters, roles, strict=True) if r in ("batch", "left", "inner")]
    b = [c for c, r in zip(letters, roles, strict=True) if r in ("batch", "right", "inner")]
    out = [c for c, r in zip(letters, roles, strict=True) if r != "inner"]
    assume(0 < len(a) <= 5 and 0 < len(b) <= 5 and max(len(a), len(b), len(out)) >= 5)
    a, b, out = ("".join(data.draw(st.permutations(t))) for t in (a, b, out))
    model, feeds = _model(f"{a},{b}->{out}", [a, b])
    try:
        check_lowering(model, feeds)
    except LoweringError as error:
        assert "rank-4 transposes does it" in str(error), str(error)
