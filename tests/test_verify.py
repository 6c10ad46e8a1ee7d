"""edge3d.verify: differential checks of a candidate against a reference on seeded inputs."""

from __future__ import annotations

import numpy as np
import pytest

from edge3d.verify import TOLERANCES, seeded_inputs, torch_runner, verify

SHAPES = [(2, 3, 4, 8, 8)]


def _model(batch: list[np.ndarray]) -> list[np.ndarray]:
    """A deterministic stand-in for a network: features and (batch, classes) logits."""
    x = batch[0].astype(np.float64)
    features = np.tanh(x).astype(np.float32)
    logits = x.reshape(x.shape[0], -1)[:, :10].astype(np.float32) * 3
    return [features, logits]


def _noisy(relative: float, seed: int = 7):
    """The model with Gaussian noise of the given size relative to each output's norm."""
    rng = np.random.default_rng(seed)

    def run(batch):
        outs = []
        for y in _model(batch):
            noise = rng.standard_normal(y.shape)
            noise *= relative * np.linalg.norm(y) / np.linalg.norm(noise)
            outs.append((y + noise).astype(np.float32))
        return outs

    return run


def test_identical_runners_pass():
    result = verify(_model, _model, SHAPES, names=["features", "logits"], samples=3)
    assert result.passed and result.failures == []
    assert result.samples == 3
    assert [o.name for o in result.outputs] == ["features", "logits"]
    for o in result.outputs:
        assert o.rel_l2 == 0.0 and o.max_abs == 0.0
        assert o.cosine == pytest.approx(1.0)
    doc = result.to_dict()
    assert doc["passed"] is True and doc["tolerance"]["rel_l2"] == 1e-4


def test_perturbed_candidate_fails_at_fp32():
    result = verify(_model, _noisy(1e-2), SHAPES, names=["features", "logits"])
    assert not result.passed
    assert len(result.failures) == 2
    for failure in result.failures:
        assert "relative L2" in failure
    assert result.failures[0].startswith("features:")
    for o in result.outputs:
        assert o.rel_l2 == pytest.approx(1e-2, rel=1e-3)


def test_small_noise_passes_at_fp32():
    result = verify(_model, _noisy(1e-6), SHAPES)
    assert result.passed, result.failures
    assert all(o.rel_l2 < 1e-4 for o in result.outputs)


def test_fp16_tolerance():
    assert TOLERANCES["fp16"].rel_l2 == 1e-2
    assert verify(_model, _noisy(1e-3), SHAPES, precision="fp16").passed
    assert not verify(_model, _noisy(1e-3), SHAPES, precision="fp32").passed
    failed = verify(_model, _noisy(5e-2), SHAPES, precision="fp16")
    assert not failed.passed and "relative L2" in failed.failures[0]


def test_top1_agreement_for_classifier_outputs():
    def flip_first_row(batch):
        features, logits = _model(batch)
        logits = logits.copy()
        logits[0] = -logits[0]  # the first clip of every batch gets another top class
        return [features, logits]

    result = verify(_model, flip_first_row, SHAPES, samples=4)
    features, logits = result.outputs
    assert features.top1 is None  # not a (batch, classes) output
    assert logits.top1 == pytest.approx(0.5)  # 4 of 8 rows agree
    assert verify(_model, _model, SHAPES).outputs[1].top1 == 1.0


def test_int8_gates_on_the_cosine_and_warns_on_top1():
    """Shuffled classes fail on the cosine; top-1 flips among near-equal scores (a constant shift
    that reorders the top two) keep a high cosine and are a warning naming the close margin."""
    def shuffle_classes(batch):
        features, logits = _model(batch)
        return [features, np.roll(logits, 1, axis=1)]

    result = verify(_model, shuffle_classes, SHAPES, precision="int8")
    assert not result.passed and any("cosine similarity" in f for f in result.failures)

    def near_ties(batch):
        features, logits = _model(batch)
        logits = np.tile(np.linspace(0, 1, logits.shape[1], dtype=np.float32), (logits.shape[0], 1)) * 100
        logits[:, -2] = logits[:, -1] - 1e-3
        return [features, logits]

    def swapped(batch):
        features, logits = near_ties(batch)
        logits[:, [-2, -1]] = logits[:, [-1, -2]]
        return [features, logits]

    tied = verify(near_ties, swapped, SHAPES, precision="int8")
    assert tied.passed and tied.outputs[1].top1 == 0.0 and tied.outputs[1].cosine > 0.9999
    (warning,) = tied.warnings
    assert "top-1 agreement 0% on 8 clips" in warning and "a median 0.00 standard deviations" in warning
    assert tied.to_dict()["warnings"] == tied.warnings


def test_one_top1_flip_in_eight_is_chance_and_not_said():
    """One clip of eight with another top class (88%) is within the 95% interval of 90%: nothing
    is said; half the clips flipped (50%, interval up to 78%) is a warning, not a failure."""
    from edge3d.verify import OutputMetrics, Tolerance, _check, _top1_warning, wilson_interval

    lo, hi = wilson_interval(7, 8)
    assert 0.5 < lo < 0.6 and 0.97 < hi < 0.99
    assert wilson_interval(8, 8)[1] == 1.0 and wilson_interval(0, 8)[0] == 0.0
    tol = Tolerance(cosine=0.98, top1=0.9)
    one_flip = OutputMetrics("logits", 0.1, 0.01, 0.99997, 7 / 8, top1_rows=8, top1_ci95=(lo, hi), top1_margin=2.0)
    assert _check(one_flip, tol) == [] and _top1_warning(one_flip, tol) == []
    half = OutputMetrics("logits", 0.1, 0.01, 0.99997, 4 / 8, top1_rows=8, top1_ci95=wilson_interval(4, 8),
                         top1_margin=2.0)
    assert _check(half, tol) == []
    (warning,) = _top1_warning(half, tol)
    assert "top-1 agreement 50% on 8 clips (95% interval up to 78%) below 90% at cosine 1.0000" in warning
    assert "a median 2.00 standard deviations" in warning


def test_shape_mismatch_is_a_failure():
    def wrong_shape(batch):
        features, logits = _model(batch)
        return [features, logits[:, :5]]

    result = verify(_model, wrong_shape, SHAPES)
    assert not result.passed
    assert len(result.failures) == 1 and "shape" in result.failures[0]
    assert "(2, 5)" in result.failures[0] and "(2, 10)" in result.failures[0]


def test_squeezed_size_one_axes_are_not_a_mismatch():
    def squeezed(batch):
        features, logits = _model(batch)
        return [features, logits[:, None, :]]

    assert verify(_model, squeezed, SHAPES).passed


def test_output_count_mismatch_is_a_failure():
    result = verify(_model, lambda batch: _model(batch)[:1], SHAPES)
    assert not result.passed and "outputs" in result.failures[0]


def test_non_finite_candidate_fails():
    def nan(batch):
        features, logits = _model(batch)
        logits = logits.copy()
        logits[0, 0] = np.nan
        return [features, logits]

    result = verify(_model, nan, SHAPES)
    assert not result.passed
    assert any("non-finite" in f for f in result.failures)


def test_worst_sample_counts():
    """One bad sample among many fails the check; errors are not averaged away."""
    calls = {"n": 0}

    def one_bad(batch):
        calls["n"] += 1
        return _noisy(1e-2)(batch) if calls["n"] == 5 else _model(batch)

    result = verify(_model, one_bad, SHAPES, samples=8)
    assert calls["n"] == 8
    assert not result.passed


def test_seeded_inputs_are_reproducible():
    a = seeded_inputs(SHAPES, [np.float32], seed=3)
    b = seeded_inputs(SHAPES, [np.float32], seed=3)
    c = seeded_inputs(SHAPES, [np.float32], seed=4)
    assert a[0].dtype == np.float32 and a[0].shape == SHAPES[0]
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


def test_explicit_inputs_replace_seeded_ones():
    seen = []

    def record(batch):
        seen.append(batch[0])
        return _model(batch)

    clips = [[np.full(SHAPES[0], 0.5, np.float32)], [np.full(SHAPES[0], -0.5, np.float32)]]
    result = verify(record, _model, SHAPES, inputs=clips)
    assert result.passed and result.samples == 2
    assert [float(x.flat[0]) for x in seen] == [0.5, -0.5]


def test_torch_runner_against_itself():
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5)).eval()
    with torch.no_grad():
        net(torch.zeros(*SHAPES[0]))
    result = verify(torch_runner(net), torch_runner(net), SHAPES, samples=2)
    assert result.passed and result.outputs[0].rel_l2 == 0.0 and result.outputs[0].top1 == 1.0


def test_samples_are_made_one_at_a_time(monkeypatch):
    """--verify-samples N must not hold N inputs in memory: each is made when it is compared."""
    import edge3d.verify as verify_module

    made = []
    real = verify_module.seeded_inputs
    monkeypatch.setattr(verify_module, "seeded_inputs", lambda *a: made.append(1) or real(*a))
    seen = []

    def reference(batch):
        seen.append(len(made))
        return [batch[0] * 2]

    result = verify(reference, lambda batch: [batch[0] * 2], [(2, 3)], samples=5)
    assert result.passed and result.samples == 5
    assert seen == [1, 2, 3, 4, 5]


def test_a_candidate_that_runs_many_at_once_is_called_once():
    """A simulator rebuilds its model on every call: given the inputs, verify runs them all in
    one ``many`` call (through the layout adapter too), not one call per clip."""
    from edge3d.layouts import adapt_runner

    calls = []

    def candidate(batch):
        raise AssertionError("called one clip at a time")

    def many(batches):
        calls.append(len(batches))
        return [_model(b) for b in batches]

    candidate.many = many
    inputs = [seeded_inputs(SHAPES, [np.float32], seed) for seed in range(5)]
    result = verify(_model, adapt_runner(candidate, ["plain"], ["plain", "plain"]), SHAPES, inputs=inputs)
    assert result.passed and calls == [5]


class _Tracked(np.ndarray):
    """An array that can be referenced weakly, to see what verification still holds."""


def _owning(y: np.ndarray) -> _Tracked:
    """A _Tracked array that owns its data: every view of it keeps it alive (a view's ``base``
    is the array that owns the memory)."""
    owner = _Tracked(y.shape, y.dtype)
    owner[...] = y
    return owner


def test_no_sample_is_held_while_the_next_one_runs():
    """One sample's outputs of the three models are freed before the next sample is drawn and
    run: on a 200 MB clip, holding them over (with the input) doubled the export's peak."""
    import weakref

    held: list[weakref.ref] = []

    def tracked(run, first: bool = False):
        def wrapped(batch):
            if first:  # the candidate runs first in each sample: by then the last one must be gone
                assert all(ref() is None for ref in held), "an earlier sample's outputs are still alive"
            outs = [_owning(y) for y in run(batch)]
            held.extend(weakref.ref(y) for y in outs)
            return outs
        return wrapped

    result = verify(tracked(_model), tracked(_model, first=True), SHAPES, samples=3, plain=tracked(_model))
    assert result.passed and len(held) == 3 * 3 * 2  # samples × models × outputs


def test_seeded_float32_inputs_are_drawn_as_float32():
    (x,) = seeded_inputs([(1, 2, 3)], [np.float32], 0)
    assert x.dtype == np.float32
    (y,) = seeded_inputs([(1, 2, 3)], [np.float16], 0)
    assert y.dtype == np.float16 and np.allclose(y, x, atol=1e-2)


@pytest.mark.parametrize("order", [(0, 2, 1, 3, 4), (1, 0, 2, 3, 4), (4, 3, 2, 1, 0)])
def test_a_transposed_view_compares_as_its_copy_piece_by_piece(order, monkeypatch):
    """Frames turned back into a clip are a transposed view; the figures over it equal those
    over a contiguous copy, with pieces small enough that the whole is never copied."""
    from edge3d import verify as module

    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 3, 4, 5, 6)).astype(np.float32)
    b = np.ascontiguousarray((a + 1e-3 * rng.standard_normal(a.shape)).astype(np.float32).transpose(order))
    view = b.transpose(np.argsort(order))
    assert not view.flags.c_contiguous
    monkeypatch.setattr(module._Accumulator, "CHUNK", 7)
    pieces = list(module._blocks(a, view, 7))
    assert max(x.size for x, _ in pieces) <= 30 and sum(x.size for x, _ in pieces) == a.size
    piecewise, whole = module._Accumulator(), module._Accumulator()
    piecewise.add(a, view)
    whole.add(a, np.ascontiguousarray(view))
    assert piecewise.rel == pytest.approx(whole.rel) and piecewise.max_abs == pytest.approx(whole.max_abs)
    assert piecewise.cos == pytest.approx(whole.cos)
