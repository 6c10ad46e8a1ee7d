"""Tune the TVM library's heavy kernels by random search over MetaSchedule's design space.

MetaSchedule's own tuner cannot run with the apache-tvm 0.27.0.post1 wheel: its task scheduler
serialises TIR through ``tvm.ir.save_json``, which segfaults there, and so do two of its default
CPU mutators. Its space generator and post-processors work, so every conv and matmul kernel
gets candidate schedules drawn from that design space with fresh random decisions; each is built
and timed on this CPU in this process, and the fastest replaces TVM's default schedule. Random
search, without the evolutionary search and cost model, needs more trials for the same result;
and the kernels are timed here, so only a library for this CPU can be tuned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TUNABLE = ("conv2d", "conv3d", "matmul", "dense")  # conv3d: an original 5D model tuned for comparison


@dataclass
class TuningSummary:
    budget: int = 0
    trials: int = 0
    kernels: int = 0
    default_ms: float = 0.0  # sum over the tuned kernels, one call each
    tuned_ms: float = 0.0
    failed: int = 0  # candidates that did not build or run
    per_kernel: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"method": "random search over MetaSchedule's design space", "budget": self.budget,
                "trials": self.trials, "kernels": self.kernels, "failed_candidates": self.failed,
                "kernel_ms_default": round(self.default_ms, 4), "kernel_ms_tuned": round(self.tuned_ms, 4),
                "per_kernel_ms": self.per_kernel}


def tune(mod, target, trials: int, seed: int = 0):
    """``mod``: a Relax module straight from the ONNX frontend. Returns the module with its
    kernels fused and the tuned ones scheduled, ready for ``tvm.compile``, and a summary."""
    import tvm
    from tvm import relax

    with target:
        mod = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                        relax.transform.CanonicalizeBindings(),
                                        relax.pipeline.zero_pipeline()])(mod)
    tasks = [(gv, func) for gv, func in mod.functions.items()
             if isinstance(func, tvm.tirx.PrimFunc) and any(k in gv.name_hint for k in TUNABLE)]
    summary = TuningSummary(budget=trials, kernels=len(tasks))
    if not tasks:
        return mod, summary
    defaults = {gv: _time(_task(func), target) for gv, func in tasks}
    total = sum(defaults.values()) or 1.0
    for k, (gv, func) in enumerate(tasks):
        # the budget follows each kernel's share of the default time, at least one trial each
        budget = max(1, round(trials * defaults[gv] / total))
        best, best_s, spent, draw = None, defaults[gv], 0, 0
        while spent < budget:
            for candidate in _draw(_task(func), target, seed + 1000 * k + draw):
                if spent >= budget:
                    break
                spent += 1
                try:
                    seconds = _time(candidate, target)
                except Exception:  # noqa: BLE001 - a candidate that does not build or run is skipped
                    summary.failed += 1
                    continue
                if seconds < best_s:
                    best, best_s = candidate["main"], seconds
            draw += 1
            if draw > 4 * budget:  # the space yields nothing that post-processes: stop
                break
        summary.trials += spent
        summary.default_ms += defaults[gv] * 1e3
        summary.tuned_ms += best_s * 1e3
        summary.per_kernel[gv.name_hint] = [round(defaults[gv] * 1e3, 4), round(best_s * 1e3, 4)]
        if best is not None:
            mod[gv] = _restore_attrs(best, func)
    return mod, summary


def _task(func):
    import tvm

    return tvm.IRModule({"main": func.with_attr("global_symbol", "main")})


def _draw(task, target, rand_state: int) -> list:
    """One sample of every sketch in the design space, post-processed (parallel, vectorise, unroll)."""
    from tvm.s_tir import meta_schedule as ms

    mutators = {ms.mutator.MutateTileSize(): 0.9, ms.mutator.MutateUnroll(): 0.03}  # the two that initialise
    space = ms.space_generator.PostOrderApply(mutator_probs=mutators)
    context = ms.TuneContext(mod=task, target=target, space_generator=space, rand_state=rand_state,
                             num_threads=1)
    candidates = []
    for schedule in context.generate_design_space():
        if all(post.apply(schedule) for post in context.space_generator.postprocs):
            candidates.append(schedule.mod)
    return candidates


def _time(task, target) -> float:
    """Mean seconds per call on random inputs (zeros for integer buffers, so indices stay in range)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    library = tvm.tirx.build(task, target=target)
    device = tvm.cpu()
    rng = np.random.default_rng(0)
    args = []
    for info in ms.arg_info.ArgInfo.from_prim_func(task["main"]):
        _, dtype, shape = info.as_json()
        shape, dtype = [int(s) for s in shape], str(dtype)
        data = rng.standard_normal(shape).astype(dtype) if dtype.startswith("float") else np.zeros(shape, dtype)
        args.append(tvm.runtime.tensor(data, device))
    evaluator = library.time_evaluator(library.entry_name, device, number=3, repeat=3, min_repeat_ms=5)
    return float(np.median(evaluator(*args).results))


def _restore_attrs(scheduled, original):
    func = scheduled.with_attr("tir.is_scheduled", True)
    symbol = original.attrs.get("global_symbol") if original.attrs is not None else None
    return func.with_attr("global_symbol", symbol) if symbol is not None else func.without_attr("global_symbol")
