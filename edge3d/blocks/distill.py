"""Distillation of a rewritten model towards the original: step (c) of the rewrite.

What it trains, and why:
- only the new blocks' weights: the rest of the model already is the original, and freeing it
  lets a few calibration clips pull shared layers (BatchNorm, the classifier) off the original;
- on each block's output as well as the model's: the original layer's output on the same clip
  is a dense target at every layer, where logits alone give a handful of numbers per clip;
- with BatchNorm in inference mode: its statistics are the original's and must stay so;
- on mixtures of two calibration clips (label-free mixup) as well as the clips: the original
  model labels any input, so a few dozen clips stand for many more.
The held-out clips pick the weights kept: their top-1 agreement with the original (then their
output distance) is measured every few steps, the start included, so distillation never ends
below where it began on them. Ctrl-C stops early and keeps the best weights so far.
On a GPU (``device``) the same steps run there, and both models come back to where they were.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from .structures import Block


def _blocks(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, Block)}


def agreement(teacher, student, clips) -> tuple[float | None, float]:
    """Top-1 agreement (None for outputs that are not class scores) and relative L2 distance of
    the student's outputs to the teacher's."""
    agree = rows = 0
    diff = ref = 0.0
    with torch.no_grad():
        for clip in clips:
            a, b = teacher(clip), student(clip)
            diff += float(((a - b).double() ** 2).sum())
            ref += float((a.double() ** 2).sum())
            if a.ndim == 2:
                agree += int((a.argmax(1) == b.argmax(1)).sum())
                rows += a.shape[0]
    return (agree / rows if rows else None), (diff / ref) ** 0.5 if ref else 0.0


class _Outputs:
    """Forward hooks that keep the outputs of the named modules during one forward pass."""

    def __init__(self, model: nn.Module, names: list[str]):
        self.values: dict[str, torch.Tensor] = {}
        self._handles = [model.get_submodule(n).register_forward_hook(self._keep(n)) for n in names]

    def _keep(self, name):
        def hook(_module, _args, out):
            self.values[name] = out
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _batch(clips: list[torch.Tensor], generator: torch.Generator, size: int) -> list[torch.Tensor]:
    """``size`` clips, each a calibration clip or, half of the time, a mixture of two. They stay
    separate (gradients add up over them): an exported model keeps the batch size it was
    exported with."""
    picks = []
    for _ in range(size):
        i, j = torch.randint(len(clips), (2,), generator=generator).tolist()
        lam = float(torch.rand((), generator=generator))
        picks.append(clips[i] if lam < 0.5 else lam * clips[i] + (1 - lam) * clips[j])
    return picks


def distill(teacher: nn.Module, student: nn.Module, clips: list[torch.Tensor], steps: int,
            heldout: list[torch.Tensor] | None = None, seed: int = 0, lr: float = 3e-4, batch: int = 4,
            progress: bool = True, device: str | torch.device | None = None) -> dict:
    """Train ``student``'s blocks towards ``teacher`` for up to ``steps`` steps; ``student`` ends
    with the best weights seen on ``heldout`` (the calibration clips where none are held out).
    ``device`` (e.g. ``"cuda"``) runs the steps there. Returns the figures for the rewrite report."""
    if device is None or steps <= 0 or not clips:
        return _distill(teacher, student, clips, steps, heldout, seed, lr, batch, progress)
    home = next(student.parameters()).device
    teacher.to(device), student.to(device)
    try:
        moved = [c.to(device) for c in clips]
        figures = _distill(teacher, student, moved, steps, heldout and [c.to(device) for c in heldout], seed, lr,
                           batch, progress)
    finally:
        teacher.to(home), student.to(home)
    figures["device"] = str(torch.device(device))
    return figures


def _distill(teacher, student, clips, steps, heldout, seed, lr, batch, progress) -> dict:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    blocks = _blocks(student)
    names = [n for n in blocks if isinstance(teacher.get_submodule(n), nn.Conv3d)]
    params = [p for n in names for p in blocks[n].parameters()]
    if not params or not clips or steps <= 0:
        return {"steps": 0, "note": "nothing to distil"}
    checked = heldout or clips
    every = max(1, min(50, steps // 20))
    frozen = {p: p.requires_grad for p in student.parameters()}
    for p in student.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    teacher_out, student_out = _Outputs(teacher, names), _Outputs(student, names)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    start_agree, start_dist = agreement(teacher, student, checked)
    best = (_score(start_agree, start_dist), 0, [p.detach().clone() for p in params])
    losses: list[float] = []
    interrupted, step, began = False, 0, time.perf_counter()
    console = Console(stderr=True)
    columns = [TextColumn("Distilling"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
               TimeRemainingColumn()]
    try:
        with torch.random.fork_rng(), Progress(*columns, console=console, transient=True,
                                               disable=not (progress and console.is_terminal)) as bar:
            torch.manual_seed(seed)
            task = bar.add_task("distil", total=steps, status="")
            for step in range(1, steps + 1):
                optimiser.zero_grad()
                total = 0.0
                for x in _batch(clips, generator, batch):
                    with torch.no_grad():
                        target = teacher(x)
                        targets = {n: teacher_out.values[n] for n in names}
                    out = student(x)
                    loss = _relative(out, target) + sum(_relative(student_out.values[n], targets[n])
                                                        for n in names) / len(names)
                    (loss / batch).backward()
                    total += float(loss.detach()) / batch
                optimiser.step()
                schedule.step()
                losses.append(total)
                if step % every == 0 or step == steps:
                    agree, dist = agreement(teacher, student, checked)
                    if _score(agree, dist) > best[0]:
                        best = (_score(agree, dist), step, [p.detach().clone() for p in params])
                    shown = f"agreement {agree:.1%}, " if agree is not None else ""
                    bar.update(task, status=f"loss {losses[-1]:.3g}, {shown}distance {dist:.3g}")
                bar.advance(task)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        teacher_out.remove()
        student_out.remove()
        with torch.no_grad():
            for p, kept in zip(params, best[2]):
                p.copy_(kept)
        for p, flag in frozen.items():
            p.requires_grad_(flag)
    end_agree, end_dist = agreement(teacher, student, checked)
    return {"steps": steps, "steps_run": step if not interrupted else step - 1, "interrupted": interrupted,
            "kept_step": best[1], "seed": seed, "lr": lr, "batch": batch,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "checked_on": "held-out clips" if heldout else "calibration clips",
            "agreement_before": start_agree, "agreement_after": end_agree,
            "distance_before": start_dist, "distance_after": end_dist,
            "seconds": time.perf_counter() - began}


def _relative(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared error relative to the target's energy: every layer weighs alike, whatever its scale."""
    return ((a - b) ** 2).sum() / (b ** 2).sum().clamp_min(1e-12)


def _score(agree: float | None, dist: float) -> tuple[float, float]:
    """Higher is better: agreement first, then a smaller distance."""
    return (agree if agree is not None else 0.0, -dist)
