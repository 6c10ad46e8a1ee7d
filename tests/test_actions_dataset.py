"""The procedural action dataset of benchmarks/actions.py: deterministic, balanced, normalised,
and with classes that a single frame cannot tell apart."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.actions import CLASSES, MIRRORED, REVERSED, make_clips  # noqa: E402


@pytest.fixture(scope="module")
def clips():
    return make_clips(300, seed=7)


def test_shape_dtype_and_balance(clips):
    x, y = clips
    assert x.shape == (300, 3, 8, 56, 56) and x.dtype == torch.float32
    assert y.shape == (300,) and y.dtype == torch.int64
    assert torch.bincount(y, minlength=len(CLASSES)).tolist() == [30] * len(CLASSES)


def test_normalised(clips):
    x, _ = clips
    assert abs(x.mean().item()) < 0.15
    assert 0.8 < x.std().item() < 1.2


def test_same_seed_same_clips_other_seed_other_clips():
    x1, y1 = make_clips(24, frames=4, size=32, seed=3)
    x2, y2 = make_clips(24, frames=4, size=32, seed=3)
    x3, y3 = make_clips(24, frames=4, size=32, seed=4)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3) and not torch.equal(y1, y3)


def test_fewer_classes_and_sizes():
    x, y = make_clips(25, classes=5, frames=6, size=40, seed=0)
    assert x.shape == (25, 3, 6, 40, 40)
    assert torch.bincount(y).tolist() == [5] * 5
    with pytest.raises(ValueError):
        make_clips(4, classes=len(CLASSES) + 1)


def test_label_maps_are_involutions():
    for mapping in (REVERSED, MIRRORED):
        assert sorted(mapping) == list(range(len(CLASSES)))
        assert all(mapping[mapping[c]] == c for c in range(len(CLASSES)))


def _spread(stat: torch.Tensor, y: torch.Tensor) -> float:
    """Largest distance of a class's mean of ``stat`` from the overall mean, in standard errors of a
    class mean. ``stat`` is per clip and frame; the frames of a clip are far from independent, so
    the clip (its frames averaged) is the unit."""
    per_clip = stat.mean(dim=1)
    per_class = torch.stack([per_clip[y == c].mean() for c in range(len(CLASSES))])
    se = per_clip.std() / (len(per_clip) / len(CLASSES)) ** 0.5
    return ((per_class - per_clip.mean()).abs().max() / se).item()


def test_single_frame_statistics_do_not_separate_classes(clips):
    x, y = clips
    for stat in (x.mean(dim=(1, 3, 4)), x.std(dim=(1, 3, 4)), x.abs().amax(dim=(1, 3, 4))):
        assert _spread(stat, y) < 4.0


def test_motion_statistics_do_separate_classes(clips):
    """The same measure on the change between frames does tell classes apart: the check has teeth."""
    x, y = clips
    motion = (x[:, :, 1:] - x[:, :, :-1]).pow(2).mean(dim=(1, 3, 4))
    assert _spread(motion, y) > 4.5
