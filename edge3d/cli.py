"""The `edge3d` command line.

Only light modules are imported here (no torch, onnx, onnx_ir or numpy), so that `edge3d --help` and
`edge3d lint` start fast (tests/test_lint_startup.py checks it): option choices come from
``edge3d.choices`` and ``edge3d.blocks.names``; each command imports what it runs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
from pathlib import Path

import click

from . import __version__
from .choices import (
    BENCH_FORMATS,
    BENCH_RUNTIMES,
    CONV_STRATEGIES,
    DEFAULT_OPSET,
    LINT_FORMATS,
    MAX_OPSET,
    MIN_OPSET,
    PRECISIONS,
)
from .errors import Edge3dError, InputError, Terminated, first_line

_DEBUG_KEY = "edge3d.debug"


def _set_debug(ctx, _param, value):
    if value:
        ctx.meta[_DEBUG_KEY] = True
        from .log import enable_debug

        ctx.call_on_close(enable_debug())  # debug logging to stderr until the command ends


debug_option = click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug,
                            help="Show full tracebacks and log the lowering's decisions to stderr.")


@contextlib.contextmanager
def _terminate_as_exception():
    """SIGTERM and SIGHUP unwind the stack like Ctrl-C, so scratch folders are removed."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise Terminated(signum)

    wanted = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, handler) for s in wanted}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


class Edge3dGroup(click.Group):
    """Turns user errors into one line on stderr and an exit code; tracebacks only with --debug."""

    def invoke(self, ctx):
        with _terminate_as_exception():
            return self._invoke(ctx)

    def _invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Edge3dError as exc:
            if ctx.meta.get(_DEBUG_KEY):
                raise
            click.echo(f"edge3d: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except click.UsageError as exc:  # a bad flag is bad input too: one line, exit 2
            command = "edge3d " + (exc.ctx.info_name + " " if exc.ctx and exc.ctx.parent else "")
            click.echo(f"edge3d: error: {exc.format_message()} (see '{command}--help')", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("edge3d: interrupted", err=True)
            ctx.exit(130)
        except Terminated as exc:
            click.echo(f"edge3d: terminated by {signal.Signals(exc.signum).name}; nothing was written", err=True)
            ctx.exit(128 + exc.signum)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: still one line unless --debug
            if ctx.meta.get(_DEBUG_KEY):
                raise
            click.echo(f"edge3d: internal error: {type(exc).__name__}: {first_line(exc)}"
                       " (rerun with --debug for the traceback)", err=True)
            ctx.exit(3)


@click.group(cls=Edge3dGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge3d")
@debug_option
def main():
    """Rewrite Conv3d video models into rank-4 graphs and build verified edge artifacts.

    Exit codes: 0 success, 1 a check failed (lint findings, verification, a node with no
    rank-4 rule), 2 bad input.
    """
    from .malloc import return_freed_memory

    return_freed_memory()


def _shape_option(fn):
    return click.option(
        "--input-shape", "input_shapes", multiple=True, metavar="B,C,T,H,W",
        help="Input shape where the file does not record one (repeat for several inputs).",
    )(fn)


def model_options(fn):
    """Options every command that loads a PyTorch model shares."""
    @click.option("--arch", metavar="PKG.MODULE:FACTORY",
                  help="Network factory for a state_dict file; the current folder is importable.")
    @click.option("--arch-kwargs", metavar="JSON", help="Keyword arguments for --arch, as a JSON object.")
    @click.option("--trust-pickle", is_flag=True,
                  help="Trust the model file: allow a pickled nn.Module, TorchScript that calls I/O or "
                       "non-standard operators, and a .pt2 with pickled objects. This runs code from the file.")
    @_shape_option
    @functools.wraps(fn)
    def wrapper(*args, input_shapes, **kwargs):
        from .frontend.load import parse_shape

        return fn(*args, input_shapes=[parse_shape(s) for s in input_shapes], **kwargs)

    return wrapper


@contextlib.contextmanager
def _progress(enabled: bool):
    """On a terminal, a spinner per step and a tick with its time on stderr. Elsewhere (a CI log,
    a pipe) a line on stdout when a step starts and one with its time when it ends, so a log shows
    where a long export is; stderr keeps only the one-line error."""
    import time

    from rich.console import Console

    console = Console(stderr=True)
    terminal = console.is_terminal

    @contextlib.contextmanager
    def step(label: str):
        if not enabled:
            yield
            return
        start = time.perf_counter()
        if terminal:
            with console.status(label + "..."):
                yield
            console.print(f"[green]✓[/] {label} [dim]({time.perf_counter() - start:.1f}s)[/]")
            return
        click.echo(f"{label}...")
        yield
        click.echo(f"{label}: done in {time.perf_counter() - start:.1f} s")

    yield step


def block_options(fn, int8: bool = False):
    """Options of the block rewrite, shared by `rewrite` and `export --block` (``int8``: the clips
    also calibrate INT8 artifacts, as in `export`)."""
    from .blocks.names import BLOCK_NAMES, STRIDE_MODES

    also = " The same clips calibrate INT8 artifacts (--precision int8)." if int8 else ""
    for option in reversed([
        click.option("--stride-mode", type=click.Choice(STRIDE_MODES), default="aligned", show_default=True,
                     help="aligned: keep the spatial branch's pixels; paper: the paper's (s, s²) stride."),
        click.option("--calib", default="random", show_default=True, metavar="PATH|random|none",
                     help="Calibration clips for the least-squares fit: a folder of .npy clips (C, T, H, W), "
                          "'random', or 'none' for projection only." + also),
        click.option("--calib-clips", type=click.IntRange(1), default=8, show_default=True,
                     help="How many calibration clips to use."),
        click.option("--finetune-steps", type=click.IntRange(0), default=0, show_default=True,
                     help="Steps of distilling the original model's outputs after calibration."),
    ]):
        fn = option(fn)
    fn.__doc__ = (fn.__doc__ or "") + "\n\n    Blocks: " + ", ".join(BLOCK_NAMES) + "."
    return fn


def lowering_options(fn):
    """Options shared by `export` and `lower`."""
    for option in reversed([
        click.option("--no-simplify", is_flag=True, help="Skip onnxsim."),
        click.option("--allow-rank5", is_flag=True,
                     help="Keep nodes that have no rank-4 lowering, write the partial result and list them."),
        click.option("--conv-strategy", type=click.Choice(CONV_STRATEGIES), default="auto",
                     show_default=True, help="How a Conv3d's temporal taps become 2D convs."),
        click.option("--verify-samples", type=click.IntRange(1), default=4, show_default=True,
                     help="Seeded inputs the result is checked against the original on."),
        click.option("--seed", type=click.IntRange(0), default=0, show_default=True,
                     help="Seed of the verification inputs."),
        click.option("--force", is_flag=True, help="Replace an existing output."),
        click.option("-q", "--quiet", is_flag=True, help="Print only errors."),
    ]):
        fn = option(fn)
    return fn


def _report(result, quiet: bool, written: str) -> None:
    """What every lowering command prints: where it wrote, the ranks, the verification figures."""
    if quiet:
        return
    from .linting.report import render

    v, lint = result.verification, result.lint
    click.echo(f"wrote {written} (max rank {lint.highest_rank}, {len(result.report.lowered)} nodes lowered)")
    click.echo(v.headline())  # the lowering's error, and against PyTorch beside the plain export's
    for note in result.notes:
        click.echo(f"note: {note}")
    if lint.findings:
        click.echo(render([lint], "text"))


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True,
              help="Bundle folder to write (model.onnx, manifest.json).")
@click.option("--target", default="onnx", show_default=True, metavar="NAME",
              help="Target profile (see `edge3d targets`): which artifacts the bundle carries.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="Precision of the target artifacts (default: the profile's); int8 calibrates on --calib.")
@click.option("--opset", type=click.IntRange(MIN_OPSET, MAX_OPSET), default=DEFAULT_OPSET, show_default=True,
              help="ONNX opset.")
@click.option("--dynamic-batch", is_flag=True,
              help="Keep the batch dim symbolic (T, H, W stay static; not for .pt2 files).")
@click.option("--block", default=None, help="Rewrite eligible Conv3d into this block first (see `edge3d rewrite`).")
@click.option("--tvm-trials", type=click.IntRange(0), default=0, show_default=True, metavar="N",
              help="Tune the TVM library's conv and matmul kernels: about N candidate schedules from "
                   "MetaSchedule's design space (at least one per kernel), timed on this CPU (x86 target); "
                   "0 keeps TVM's defaults.")
@functools.partial(block_options, int8=True)
@lowering_options
@model_options
@debug_option
@click.pass_context
def export(ctx, model, out, target, opset, quiet, **options):
    """Export MODEL (.pt TorchScript, .pt2 ExportedProgram, .onnx, state_dict + --arch) to a
    verified rank-4 ONNX bundle in OUTPUT.

    The bundle's model takes each rank-5 clip (B, C, T, H, W) as frames (B·T, C, H, W);
    manifest.json records every input's and output's layout and original shape.
    """
    from .pipeline import ExportOptions, run_export

    no_simplify = options.pop("no_simplify")
    if options["calib"] == "none":
        options["calib"] = None
    opts = ExportOptions(
        model=model, out=out, target=target, opset=opset,
        opset_explicit=ctx.get_parameter_source("opset") == click.core.ParameterSource.COMMANDLINE,
        simplify=not no_simplify, **options,
    )
    with _progress(not quiet) as step:
        manifest, result = run_export(opts, step)
    _report(result, quiet, f"{out}/model.onnx, manifest.json")
    if not quiet:
        for a in manifest["artifacts"][1:]:
            state = "verified" if a.get("verification") else ("built" if a["built_here"] else "to build on the device")
            click.echo(f"{a['runtime']} ({a['precision']}): {', '.join(a['files'])} — {state}")
            if a.get("slow"):
                click.echo(f"  warning: {a['slow']}")
            for warning in a.get("warnings", []):
                click.echo(f"  warning: {warning}")
            if "vela_estimate" in a.get("meta", {}):
                low, orig = a["meta"]["vela_estimate"]["lowered"], a["meta"]["vela_estimate"]["original_5d"]
                click.echo(f"  Vela: {low['inference_ms']:.2f} ms on the NPU, {low['npu_share']:.0%} of operators "
                           "there; the 5D model: " + (f"{orig['npu_share']:.0%} on the NPU" if orig.get("ok")
                                                      else orig.get("error", "not compiled")))
            if not a["built_here"]:
                for note in a["notes"]:
                    click.echo(f"  note: {note}")
            if "tuning" in a.get("meta", {}):
                t = a["meta"]["tuning"]
                click.echo(f"  tuned {t['kernels']} kernels with {t['trials']} trials: "
                           f"{t['kernel_ms_default']:.2f} ms → {t['kernel_ms_tuned']:.2f} ms per run of each once")
    if "block_rewrite" in manifest and not quiet:
        worst = max(o["rel_l2"] for o in manifest["block_rewrite"]["fidelity_to_original"]["outputs"])
        click.echo(f"{manifest['block_rewrite']['model']['replaced_layers']} Conv3d rewritten into {opts.block}; "
                   f"relative L2 distance to the original model: {worst:.2e} (an approximation by design)")


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(), required=True,
              help="The rank-4 ONNX file to write.")
@lowering_options
@_shape_option
@debug_option
def lower(source, out, quiet, input_shapes, **options):
    """Lower SOURCE, an ONNX file from any framework, to a rank-4 ONNX file OUTPUT.

    The result is verified against SOURCE in ONNX Runtime on seeded inputs.
    """
    from .frontend.load import parse_shape
    from .pipeline import ExportOptions, run_lower

    if out.endswith(("/", os.sep)):  # Path() would drop the slash and write a file of that name
        raise InputError(f"-o {out} names a folder; pass the file to write, e.g. {out}model.onnx")
    out = Path(out)

    no_simplify = options.pop("no_simplify")
    opts = ExportOptions(model=source, out=out, simplify=not no_simplify,
                         input_shapes=[parse_shape(s) for s in input_shapes], **options)
    with _progress(not quiet) as step:
        result = run_lower(source, out, opts, step)
    _report(result, quiet, str(out))


@main.command(name="rewrite")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--block", required=True, help="Block that replaces each eligible Conv3d (listed under Blocks).")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True,
              help="The rewritten model: an ExportedProgram .pt2, or .onnx for an ONNX MODEL; the report goes "
                   "beside it as .json.")
@click.option("--force", is_flag=True, help="Replace existing outputs.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors.")
@block_options
@model_options
@debug_option
def rewrite_cmd(model, block, out, force, quiet, stride_mode, calib, calib_clips, finetune_steps, **load):
    """Replace every eligible Conv3d of MODEL by a 4D block and fit it to the trained kernel.

    Eligible: dense, undilated, 'same'-padded odd kernels with kt > 1 and kh·kw > 1. Others
    (1x1x1, kt = 1, kh = kw = 1, grouped/depthwise) are left as they are, with the reason in
    the report.
    """
    from .atomic import check_files
    from .blocks.rewrite import report_path, rewrite_loaded, write_rewrite
    from .frontend.load import detect_kind, load_model

    onnx_in = Path(model).is_file() and detect_kind(Path(model)) == "onnx"
    wanted = ".onnx" if onnx_in else ".pt2"
    if out.suffix != wanted:
        what = "an ONNX model (the input is ONNX)" if onnx_in else "an ExportedProgram"
        raise InputError(f"-o {out}: rewrite writes {what}, so name it {wanted} (e.g. {out.with_suffix(wanted)}); "
                         f"or run `edge3d export {model} --block {block}` directly")
    check_files([out, report_path(out)], force)
    loaded = load_model(model, **load)
    with _progress(not quiet) as step:
        with step("Rewriting and calibrating"):
            module, report, example = rewrite_loaded(loaded, block, stride_mode, None if calib == "none" else calib,
                                                     calib_clips, finetune_steps)
        with step("Writing the rewritten model"):
            write_rewrite(module, example, report, out, force)
    if not quiet:
        _print_rewrite(report, out, report_path(out))


def _print_rewrite(report, out, report_path) -> None:
    m = report.model
    click.echo(f"wrote {out} and {report_path}: {m['replaced_layers']} Conv3d replaced by {report.block} "
               f"({report.stride_mode}); params {m['params_before'] / 1e6:.2f} M → {m['params_after'] / 1e6:.2f} M, "
               f"MACs {m['macs_before'] / 1e9:.3f} G → {m['macs_after'] / 1e9:.3f} G")
    if m.get("top1_agreement") is not None:
        click.echo(f"top-1 agreement with the original on {m['heldout_clips']} held-out clips: "
                   f"{m['top1_agreement']:.0%}")


@main.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--max-rank", type=click.IntRange(1), default=4, show_default=True,
              help="Highest tensor rank allowed.")
@click.option("--format", "fmt", type=click.Choice(LINT_FORMATS), default="text",
              show_default=True, help="Report format (github: workflow annotations).")
@click.option("--target", metavar="NAME",
              help="Also check against a target profile: its ops and their limits, static shapes, opset "
                   "(its max rank replaces --max-rank; see `edge3d targets`).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the report to a file.")
@debug_option
def lint(models, max_rank, fmt, target, output):
    """Fail on any tensor above --max-rank in the ONNX MODELS.

    Exit 0 when clean, 1 on findings, 2 when a file cannot be read.
    """
    from .atomic import check_files, write_report
    from .linting import lint_file
    from .linting.report import printable, render
    from .targets import load_target

    if output:
        check_files([Path(output)], force=True)
    profile = load_target(target) if target else None
    results = [lint_file(path, max_rank, profile) for path in models]
    text = render(results, fmt)
    if output:
        write_report(Path(output), text + "\n")
    elif text:
        click.echo(text)
    for r in results:  # errors on stderr, in every format; the report (stdout or -o) has the rest
        if r.error:
            click.echo(f"edge3d: error: {printable(r.error)}", err=True)
    sys.exit(max(r.exit_code for r in results))


@main.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="A table for reading, or JSON (every field of every profile) for scripts.")
@debug_option
def targets(fmt):
    """List the target profiles (edge3d/targets/profiles/*.toml)."""
    from .bundle.artifacts import where
    from .targets import all_targets

    profiles = all_targets()
    if fmt == "json":
        click.echo(json.dumps([{**t.to_dict(), "where": where(t)} for t in profiles], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="edge3d targets")
    for col in ("name", "max rank", "opset", "static", "precisions", "ops", "description", "here / on the device"):
        table.add_column(col)
    for t in profiles:
        table.add_row(t.name, str(t.max_rank), str(t.opset), "yes" if t.static_shapes else "no",
                      ", ".join(t.precisions), "any" if t.allowed_ops is None else f"{len(t.allowed_ops)} allowed",
                      t.description, "\n".join(where(t)))
    Console(width=200).print(table)


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path), required=False)
@click.option("--runtime", type=click.Choice(BENCH_RUNTIMES), default="ort", show_default=True,
              help="Runtime to time on this machine.")
@click.option("--baseline", default="original", show_default=True, metavar="original|none|PATH",
              help="What to compare with: the bundle's source model exported as 5D ONNX, nothing, or a 5D ONNX file.")
@click.option("--warmup", type=click.IntRange(0), default=5, show_default=True,
              help="Untimed runs of each model first (allocations, caches, lazy kernel choice).")
@click.option("--iters", type=click.IntRange(1), default=50, show_default=True, help="Timed runs of each model.")
@click.option("--duration", type=click.FloatRange(0, min_open=True), default=None,
              help="Time for this many seconds instead of --iters.")
@click.option("--threads", type=click.IntRange(1), default=None, help="Intra-op threads (default: the runtime's).")
@click.option("--stream", is_flag=True, help="Report streaming: clips of --window frames every --hop new frames.")
@click.option("--window", type=click.IntRange(1), default=None, help="Frames per clip (default: the model's T).")
@click.option("--hop", type=click.IntRange(1), default=None, help="New frames between clips (default: the window).")
@click.option("--camera-fps", type=click.FloatRange(0, min_open=True), default=30.0, show_default=True,
              help="With --stream: the camera's frame rate, so the report says whether inference keeps up.")
@click.option("--rpc", metavar="HOST:PORT", help="Time the bundle's TVM library on a board from this TVM RPC tracker.")
@click.option("--key", "rpc_key", metavar="NAME", help="The tracker key of the board (with --rpc).")
@click.option("--import-trtexec", "trtexec_log", type=click.Path(path_type=Path),
              help="Make the report from a trtexec log measured on the device instead of timing here "
                   "(with BUNDLE, or the log's folder: its frames per clip and build_engine.sh's profile.json).")
@click.option("--format", "fmt", type=click.Choice(BENCH_FORMATS), default="text", show_default=True,
              help="text (the console), json (every figure), md or html (the report with its plots).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the report here.")
@click.option("--trust-pickle", is_flag=True,
              help="Load the bundle's source model even if that runs code from it (as `export --trust-pickle`).")
@debug_option
def bench(bundle, runtime, baseline, warmup, iters, duration, threads, stream, window, hop, camera_fps,
          rpc, rpc_key, trtexec_log, fmt, output, trust_pickle):
    """Time BUNDLE's model and its original 5D model in one run, alternating, and report
    latency percentiles, throughput, the ratio with a bootstrap interval, per-op time,
    memory and the environment. Ctrl-C stops and still reports what was measured."""
    from .atomic import check_files, write_report
    from .timing.report import render
    from .timing.run import BenchOptions, rpc_target, run_bench, stream_spec

    if output:
        check_files([output], force=True)
    if trtexec_log is not None:
        from .timing.trtexec import import_bundle_log

        report = import_bundle_log(trtexec_log, bundle)
    else:
        if bundle is None:
            raise InputError("give a BUNDLE folder (or --import-trtexec LOG)")
        opts = BenchOptions(bundle, runtime, baseline, warmup, None if duration else iters, duration, threads,
                            stream_spec(bundle, window, hop, camera_fps) if stream else None,
                            rpc=rpc_target(rpc, rpc_key), rpc_key=rpc_key, trust_pickle=trust_pickle)
        report = _bench_with_progress(opts, run_bench, None if duration else iters)
        if not report["complete"]:
            click.echo("edge3d: interrupted; reporting the runs measured so far", err=True)
    text = render(report, fmt)
    if output:
        write_report(output, text)
        click.echo(f"wrote {output}")
    else:
        click.echo(text)


def _bench_with_progress(opts, run_bench, total):
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("timing (alternating)", total=total)
        return run_bench(opts, tick=lambda i: progress.update(task, completed=i))


@main.command()
@click.argument("backend", type=click.Choice(["rknn", "tflite"]))
@debug_option
def setup(backend):
    """Prepare a backend that needs its own interpreter.

    rknn: creates a virtual environment for rknn-toolkit2 (which pins numpy ≤ 1.26.4 and
    onnx ≤ 1.18) at $EDGE3D_RKNN_VENV, default ~/.cache/edge3d/rknn.

    tflite: one for TensorFlow, onnx2tf, the LiteRT interpreter and Arm's Vela (the tflite and
    ethos-u targets; about 2.7 GB) at $EDGE3D_TFLITE_VENV, default ~/.cache/edge3d/tflite.
    """
    import importlib
    import subprocess

    from .runtimes.base import runtime

    module, label = {"rknn": ("rknn_runtime", "rknn-toolkit2"),
                     "tflite": ("tflite_runtime", "onnx2tf, LiteRT and Vela")}[backend]
    backend_module = importlib.import_module(f".runtimes.{module}", __package__)
    try:
        interpreter = backend_module.setup(echo=click.echo)  # progress on stdout: stderr keeps only an error line
    except subprocess.CalledProcessError as exc:
        said = [line for line in (exc.stderr or "").splitlines() if line.startswith("ERROR:")]
        raise InputError(f"setting up {label} failed ({' '.join(map(str, exc.cmd[-2:]))}"
                         + (f": {said[-1][7:].strip()}" if said else "")
                         + "); check the network to the package registry and rerun") from None
    if not runtime(backend).is_available():
        raise InputError(f"{label} installed in {backend_module.venv_dir()} but does not import; see its log above")
    click.echo(f"{label} ready: {interpreter}")


@main.command(name="inspect")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="A table for reading, or JSON for scripts.")
@model_options
@debug_option
def inspect_cmd(model, fmt, **load):
    """Summarise MODEL: its 3D ops, parameters, MACs, rank-5 tensors and I/O shapes."""
    from .inspect_model import inspect_file

    kind, stats = inspect_file(model, **load)
    if fmt == "json":
        click.echo(json.dumps({"model": str(model), "kind": kind, **stats.to_dict()}, indent=2))
        return
    _print_stats(model, kind, stats)


def _print_stats(path, kind, stats) -> None:
    from rich.console import Console
    from rich.table import Table

    from .linting.report import shape_text

    console = Console()
    summary = Table(title=f"{path} ({kind})", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    summary.add_row("parameters", f"{stats.params:,}")
    summary.add_row("MACs", f"{stats.macs / 1e9:.3f} G")
    summary.add_row("MACs in 3D ops", f"{stats.macs_3d / 1e9:.3f} G")
    summary.add_row("tensors above rank 4", str(stats.above_rank4))
    summary.add_row("highest rank", str(stats.max_rank))
    summary.add_row("opset", str(stats.opset))
    for t in stats.inputs:
        summary.add_row(f"input {t.name}", f"{shape_text(t.shape)} {t.dtype}")
    for t in stats.outputs:
        summary.add_row(f"output {t.name}", f"{shape_text(t.shape)} {t.dtype}")
    console.print(summary)
    ops = Table(title="ops", title_justify="left")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    ops.add_column("on rank ≥ 5", justify="right")
    for op, count in stats.ops.most_common():
        ops.add_row(op, str(count), str(stats.ops_3d.get(op, 0)))
    console.print(ops)


if __name__ == "__main__":
    main()
