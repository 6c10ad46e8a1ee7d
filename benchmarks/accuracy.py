"""Accuracy benchmark: an R3D-style Conv3d classifier trained on motion-only video actions.

The dataset (benchmarks/actions.py) has ten classes that differ only in how an actor moves, so a
single frame is at chance and the network has to use its temporal kernels. This script trains
the classifier once — deterministic for a seed, on two CPU threads, about twenty minutes — and
caches the weights and figures under ``$XDG_CACHE_HOME/edge3d/accuracy/`` (else
``~/.cache/edge3d/accuracy/``), keyed by a hash of the configuration, so that later runs load it.
It reports the parameter count, multiply-accumulates per clip, the held-out accuracy of the 3D
model and of a single-frame 2D CNN trained on the same clips, and the training time.

Then, for every block, the rewrite of that trained model: held-out accuracy and top-1 agreement
with the original after (a) projection, (b) least-squares calibration on 64 clips and (c) N
steps of distillation; params, MACs and the lowered model's ONNX Runtime latency against the
lowered original's; with ``--scratch``, each block structure trained from scratch with the same
recipe and budget (the paper's experiment). Results: benchmarks/results/accuracy.{md,json,png}.

    python benchmarks/accuracy.py --train-only
    python benchmarks/accuracy.py --train-only --width 16 --epochs 4    # another cached model
    python benchmarks/accuracy.py --blocks st-add r2plus1d --steps 500
    python benchmarks/accuracy.py --scratch                             # every block, hours on 2 cores
    python benchmarks/accuracy.py --steps 1000 --scratch st-add         # one block from scratch
    python benchmarks/accuracy.py --scratch --device cuda --no-latency  # minutes on a GPU, then:
    python benchmarks/accuracy.py --scratch --device cuda --latency-only  # time the lowered models here

With ``--device cuda`` training, distillation and the accuracy figures run on the GPU (cuDNN's
kernels are not bitwise deterministic, so such weights are cached under their own key). Every
trained model and every rewrite row is cached as it is finished, so an interrupted run resumes
where it stopped. Latency is always the lowered model in ONNX Runtime on this machine's CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.actions import CLASSES, MIRRORED, REVERSED, make_clips, single_frame_accuracy  # noqa: E402
from edge3d.blocks.rewrite import count_macs  # noqa: E402
from examples.models.layers import BasicBlock3d, ClassifierHead, ConvBNAct3d  # noqa: E402

THREADS = 2
BATCH = 32
# Each split has its own generator seed, independent of the training seed: the held-out clips are
# never trained on, and the calibration clips are a separate draw from the training distribution.
SPLIT_SEEDS = {"train": 101, "calibration": 202, "heldout": 303}


@dataclass(frozen=True)
class Config:
    """Everything that decides the trained weights; its hash names the cache entry."""

    classes: int = len(CLASSES)
    frames: int = 8
    size: int = 56
    train_clips: int = 6000
    calibration_clips: int = 64
    heldout_clips: int = 1000
    width: int = 24
    epochs: int = 7
    lr: float = 2e-3
    budget_s: float = 3600.0
    seed: int = 0
    device: str = "cpu"

    def key(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Data:
    train_x: torch.Tensor
    train_y: torch.Tensor
    calibration_x: torch.Tensor
    calibration_y: torch.Tensor
    heldout_x: torch.Tensor
    heldout_y: torch.Tensor


class R3D(nn.Module):
    """R3D-10: a 3×7×7 stem, then four stages of one residual basic block of 3×3×3 Conv3d.

    Stages 2–4 halve the frame size; stages 2 and 3 also halve time (8 frames → 2), so every
    Conv3d still sees more than one frame."""

    def __init__(self, num_classes: int, width: int):
        super().__init__()
        channels = (width, 2 * width, 4 * width, 8 * width)
        strides = (1, (2, 2, 2), (2, 2, 2), (1, 2, 2))
        self.stem = ConvBNAct3d(3, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3))
        stages, cin = [], width
        for cout, stride in zip(channels, strides):
            stages.append(BasicBlock3d(cin, cout, stride))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def build_r3d(num_classes: int, width: int = 24) -> R3D:
    return R3D(num_classes, width)


def make_data(config: Config) -> Data:
    """The three splits, each from its own fixed seed."""
    splits = {}
    for name, n in (("train", config.train_clips), ("calibration", config.calibration_clips),
                    ("heldout", config.heldout_clips)):
        splits[f"{name}_x"], splits[f"{name}_y"] = make_clips(n, config.classes, config.frames, config.size,
                                                              seed=SPLIT_SEEDS[name])
    return Data(**splits)


def set_deterministic(seed: int, device: str = "cpu") -> None:
    torch.manual_seed(seed)
    if device == "cpu":
        torch.set_num_threads(THREADS)
        torch.use_deterministic_algorithms(True)
    else:  # some CUDA backward kernels (adaptive pooling) have no deterministic form: warn, do not stop
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
            classes: int = len(CLASSES)) -> tuple[torch.Tensor, torch.Tensor]:
    """Label-preserving changes: a circular shift of the frames (the scene wraps around anyway),
    and playing backwards or mirroring left to right with the label mapped to the motion shown
    (not done where that motion is not among the first ``classes``)."""
    n, _, _, h, w = x.shape
    shift = torch.randint(0, h, (2,), generator=gen).tolist()
    x = torch.roll(x, shifts=shift, dims=(3, 4))
    reverse, mirror = torch.rand(2, n, generator=gen) < 0.5
    reverse &= torch.tensor(REVERSED)[y] < classes
    mirror &= torch.tensor(MIRRORED)[torch.where(reverse, torch.tensor(REVERSED)[y], y)] < classes
    x = torch.where(reverse[:, None, None, None, None], x.flip(2), x)
    y = torch.where(reverse, torch.tensor(REVERSED)[y], y)
    x = torch.where(mirror[:, None, None, None, None], x.flip(4), x)
    y = torch.where(mirror, torch.tensor(MIRRORED)[y], y)
    return x, y


def predictions(model: nn.Module, x: torch.Tensor, device: str | None = None) -> torch.Tensor:
    """Top-1 class of every clip of ``x``, computed on ``device`` (the model's own where None); the
    model is left where it was. One pass gives a table row both accuracy and agreement."""
    home = _device(model)
    model.eval().to(device or home)
    try:
        with torch.no_grad():
            return torch.cat([model(b.to(device or home)).argmax(1).cpu() for b in x.split(64)])
    finally:
        model.to(home)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (predictions(model, x) == y).float().mean().item()


def train(model: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor, heldout_x: torch.Tensor,
          heldout_y: torch.Tensor, budget_s: float, seed: int, epochs: int = 7, lr: float = 2e-3,
          device: str = "cpu") -> dict:
    """AdamW with a one-cycle schedule over ``epochs``; deterministic for a seed.

    ``budget_s`` caps the wall time: training that runs past it stops at the end of the epoch
    (and says so in the returned figures). The held-out accuracy printed after each epoch is for
    watching only; nothing is chosen by it. The model is trained on ``device`` and returned on the
    CPU."""
    set_deterministic(seed, device)
    model.to(device)
    gen = torch.Generator().manual_seed(seed)
    classes = int(train_y.max()) + 1  # the labels cycle through all of them
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps_per_epoch = math.ceil(len(train_x) / BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.15)
    start = time.perf_counter()
    epochs_run, held = 0, 0.0
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(train_x), generator=gen).split(BATCH):
            x, y = augment(train_x[idx], train_y[idx], gen, classes)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = nn.functional.cross_entropy(model(x), y, label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        epochs_run, held = epoch + 1, accuracy(model, heldout_x, heldout_y)
        elapsed = time.perf_counter() - start
        print(f"epoch {epochs_run}/{epochs}  loss {total / len(train_x):.3f}  held-out {held:.3f}  {elapsed:.0f} s",
              file=sys.stderr)
        if elapsed > budget_s and epochs_run < epochs:
            print(f"stopping: past the {budget_s:.0f} s budget", file=sys.stderr)
            break
    model.eval().cpu()
    return {"heldout_accuracy": held, "epochs_run": epochs_run, "train_seconds": time.perf_counter() - start,
            "device": device}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edge3d" / "accuracy"


def trained_model(config: Config = Config()) -> tuple[R3D, Data, dict]:
    """The trained classifier (in eval mode), its data splits and its figures: from the cache, or
    trained now and cached."""
    data = make_data(config)
    model = build_r3d(config.classes, config.width)
    weights, figures = cache_dir() / f"r3d-{config.key()}.pt", cache_dir() / f"r3d-{config.key()}.json"
    if weights.exists() and figures.exists():
        model.load_state_dict(torch.load(weights, weights_only=True))
        return model.eval(), data, json.loads(figures.read_text())
    metrics = train(model, data.train_x, data.train_y, data.heldout_x, data.heldout_y, config.budget_s,
                    config.seed, config.epochs, config.lr, config.device)
    print("training the single-frame 2D baseline", file=sys.stderr)
    metrics["single_frame_accuracy"] = single_frame_accuracy(data.train_x, data.train_y, data.heldout_x,
                                                             data.heldout_y, seed=config.seed)
    metrics["config"] = dataclasses.asdict(config)
    cache_dir().mkdir(parents=True, exist_ok=True)
    _atomic_write(weights, lambda path: torch.save(model.state_dict(), path))
    _atomic_write(figures, lambda path: path.write_text(json.dumps(metrics, indent=2) + "\n"))
    return model, data, metrics


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file and rename it, so a killed run leaves no half-written entry."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


# -- the rewrite columns ---------------------------------------------------------------------------

STAGES = ("projection", "calibration", "distillation")
# Bumped when the rewrite fits differently, so that cached rows of an older fit are not reused.
FIT = 2
VALIDATION_SEED = 404  # clips the rewrite holds out: least squares vs projection, and the distilled weights kept


def _clips(x: torch.Tensor) -> list[torch.Tensor]:
    return list(x.split(1))


def rewritten(model: nn.Module, block: str, stage: str, data: Data, validation: torch.Tensor, steps: int,
              seed: int, device: str = "cpu") -> tuple[nn.Module, dict]:
    """``model`` rewritten into ``block`` up to ``stage``: (a) projection, (b) + least squares on the
    calibration clips, (c) + ``steps`` of distillation on them (on ``device``)."""
    from edge3d.blocks.rewrite import rewrite_model

    calib = _clips(data.calibration_x) if stage != "projection" else None
    heldout = _clips(validation) if stage != "projection" else None
    module, report = rewrite_model(model, data.calibration_x[:1], block, "aligned", calib, heldout,
                                   finetune_steps=steps if stage == "distillation" else 0, seed=seed,
                                   device=None if device == "cpu" else device)
    return module.eval(), report.to_dict()


def lowered_latency(modules: dict[str, nn.Module], shape: tuple[int, ...], work: Path, iters: int) -> dict[str, float]:
    """Median ONNX Runtime latency (ms) of each module's lowered rank-4 model, all timed round-robin
    in one process (``benchmarks/paired.py``'s ``alternate``) so that machine noise hits them alike."""
    import statistics

    import numpy as np
    import onnxruntime as ort

    from benchmarks.paired import alternate
    from edge3d.api import export
    from edge3d.layouts import clip_to_frames

    frames = clip_to_frames(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    # Sessions alternate: a session's idle workers spinning for work would take the cores from the
    # one being timed, and a graph of many small nodes would pay for it most.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    runs = {}
    for name, module in modules.items():
        bundle = export(module, work / name, input_shape=shape, verify_samples=1, force=True)
        session = ort.InferenceSession(str(bundle.model), options, providers=["CPUExecutionProvider"])
        feeds = {session.get_inputs()[0].name: frames}
        runs[name] = lambda s=session, f=feeds: s.run(None, f)
    times = alternate(runs, warmup=3, iters=iters)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def scratch_model(config: Config, block: str, data: Data) -> tuple[nn.Module, dict]:
    """The paper's own experiment: the R3D with every eligible Conv3d built as ``block`` and trained
    from scratch with the original's recipe and budget (cached like the original)."""
    from edge3d.blocks import BLOCKS, Geometry
    from edge3d.blocks.rewrite import _set_submodule, ineligible

    model = build_r3d(config.classes, config.width)
    torch.manual_seed(config.seed)
    for name, conv in [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv3d)]:
        if not ineligible(conv):
            _set_submodule(model, name, BLOCKS[block](Geometry.of(conv), "aligned"))
    key = f"scratch-{block}-{config.key()}"
    weights, figures = cache_dir() / f"{key}.pt", cache_dir() / f"{key}.json"
    if weights.exists() and figures.exists():
        model.load_state_dict(torch.load(weights, weights_only=True))
        return model.eval(), json.loads(figures.read_text())
    metrics = train(model, data.train_x, data.train_y, data.heldout_x, data.heldout_y, config.budget_s,
                    config.seed, config.epochs, config.lr, config.device)
    cache_dir().mkdir(parents=True, exist_ok=True)
    _atomic_write(weights, lambda path: torch.save(model.state_dict(), path))
    _atomic_write(figures, lambda path: path.write_text(json.dumps(metrics, indent=2) + "\n"))
    return model.eval(), metrics


def _cached_row(key: str, compute) -> dict:
    """A finished table row from the cache, or computed now and cached: a long run resumes."""
    path = cache_dir() / f"row-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    row = compute()
    cache_dir().mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(row, indent=2) + "\n"))
    return row


def evaluate_blocks(config: Config, blocks: list[str], steps: int, scratch: list[str],
                    trained: tuple[R3D, Data, dict] | None = None) -> dict:
    """Every block at every stage: held-out accuracy, top-1 agreement with the original, params and
    MACs; and the blocks in ``scratch`` trained from scratch. Latency is added by ``add_latency``.
    ``trained``: ``trained_model(config)``'s answer where the caller has it already."""
    model, data, metrics = trained or trained_model(config)
    validation, _ = make_clips(32, config.classes, config.frames, config.size, seed=VALIDATION_SEED)
    device = config.device
    reference = predictions(model, data.heldout_x, device)

    def scores(module: nn.Module) -> dict:
        pred = predictions(module, data.heldout_x, device)
        return {"accuracy": (pred == data.heldout_y).float().mean().item(),
                "agreement": (pred == reference).float().mean().item()}

    original = {"block": "original", "stage": "trained", **scores(model),
                "params": sum(p.numel() for p in model.parameters()),
                "macs": count_macs(model.cpu(), data.heldout_x[:1])}

    def rewrite_row(block: str, stage: str) -> dict:
        start = time.perf_counter()
        module, report = rewritten(model, block, stage, data, validation, steps, config.seed, device)
        row = {"block": block, "stage": stage, **scores(module),
               "params": report["model"]["params_after"], "macs": report["model"]["macs_after"],
               "seconds": time.perf_counter() - start}
        if stage == "distillation":
            row["distillation"] = report["model"].get("distillation")
        return row

    def scratch_row(block: str) -> dict:
        trained_block, figures = scratch_model(config, block, data)
        return {"block": block, "stage": "from scratch", "accuracy": figures["heldout_accuracy"],
                "agreement": scores(trained_block)["agreement"],
                "params": sum(p.numel() for p in trained_block.parameters()),
                "macs": count_macs(trained_block, data.heldout_x[:1]), "train_seconds": figures["train_seconds"]}

    rows = []
    for block in blocks:
        for stage in STAGES:
            budget = steps if stage == "distillation" else 0
            row = _cached_row(f"{block}-{stage}-{budget}-fit{FIT}-{config.key()}",
                              partial(rewrite_row, block, stage))
            rows.append(row)
            print(f"{block:9s} {stage:12s} accuracy {row['accuracy']:.1%}  agreement {row['agreement']:.1%}  "
                  f"{row['seconds']:.0f} s", file=sys.stderr)
        if block in scratch:
            rows.append(_cached_row(f"{block}-scratch-{config.key()}", partial(scratch_row, block)))
            print(f"{block:9s} from scratch accuracy {rows[-1]['accuracy']:.1%}", file=sys.stderr)
    return {"config": dataclasses.asdict(config), "trained": metrics, "distillation_steps": steps,
            "heldout_clips": len(data.heldout_x), "calibration_clips": len(data.calibration_x),
            "validation_clips": len(validation), "rows": [original] + rows}


def add_latency(results: dict, iters: int, work: Path) -> None:
    """Each structure's lowered latency, and its ratio to the original's, into ``results``' rows.
    Timing depends on the structure alone, so the blocks are projected from a freshly built R3D:
    this runs on any machine, without the trained weights."""
    from edge3d.blocks.rewrite import rewrite_model

    config = results["config"]
    model = build_r3d(config["classes"], config["width"]).eval()
    shape = (1, 3, config["frames"], config["size"], config["size"])
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    timed = {"original": model}
    for block in dict.fromkeys(r["block"] for r in results["rows"] if r["block"] != "original"):
        timed[block] = rewrite_model(model, example, block)[0].eval()
    latency = lowered_latency(timed, shape, work, iters)
    for row in results["rows"]:
        row["latency_ms"] = latency[row["block"]]
        row["latency_ratio"] = row["latency_ms"] / latency["original"]
    results["latency_iters"] = iters


def write_results(results: dict, out: Path) -> None:
    """Markdown table, JSON and a plot of accuracy against latency (per block and stage)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| block | stage | held-out accuracy | top-1 agreement | params M | GMACs | lowered ms | vs original |",
             "|---|---|---|---|---|---|---|---|"]
    timed = all("latency_ms" in r for r in results["rows"])
    for r in results["rows"]:
        latency = f"{r['latency_ms']:.1f} | {r['latency_ratio']:.2f}×" if timed else "not timed | —"
        lines.append(f"| {r['block']} | {r['stage']} | {r['accuracy']:.1%} | {r['agreement']:.1%} | "
                     f"{r['params'] / 1e6:.2f} | {r['macs'] / 1e9:.3f} | {latency} |")
    cfg = results["config"]
    trained = results["trained"]
    where = "a CUDA GPU" if cfg.get("device", "cpu") != "cpu" else "the CPU"
    out.with_suffix(".md").write_text(
        f"# Accuracy of the blocks on a trained model\n\nR3D-10 (width {cfg['width']}) trained on {cfg['train_clips']} "
        f"procedural motion clips ({cfg['classes']} classes, {cfg['frames']}×{cfg['size']}×{cfg['size']}); "
        f"accuracy and agreement on {results['heldout_clips']} held-out clips; calibration on "
        f"{results['calibration_clips']} clips, {results['validation_clips']} validation clips held out by the "
        f"rewrite; distillation {results['distillation_steps']} steps. Training (original: "
        f"{trained['train_seconds'] / 60:.1f} min, {trained['epochs_run']} epochs; a single-frame 2D CNN on the "
        f"same clips: {trained['single_frame_accuracy']:.1%}) and distillation ran on {where}; latency: the lowered "
        f"rank-4 model in ONNX Runtime (CPU, {THREADS} threads), medians of {results.get('latency_iters', 0)} "
        f"round-robin runs.\n\n" + "\n".join(lines) + "\n")
    if not timed:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"trained": "*", "projection": "x", "calibration": "o", "distillation": "s", "from scratch": "^"}
    for r in results["rows"]:
        ax.scatter(r["latency_ratio"], 100 * r["accuracy"], marker=markers[r["stage"]],
                   color=f"C{sorted({x['block'] for x in results['rows']}).index(r['block']) % 10}")
    for i, block in enumerate(sorted({x["block"] for x in results["rows"]})):
        ax.scatter([], [], color=f"C{i % 10}", label=block)
    for stage, m in markers.items():
        ax.scatter([], [], marker=m, color="grey", label=stage)
    ax.set_xlabel("lowered latency / original's")
    ax.set_ylabel("held-out accuracy (%)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-only", action="store_true", help="train (or load) and report the trained model")
    defaults = Config()
    for name in ("width", "epochs", "train_clips", "seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    parser.add_argument("--budget", type=float, default=defaults.budget_s, help="wall-time cap on training, s")
    parser.add_argument("--blocks", nargs="+", default=None, help="blocks to evaluate (default: all)")
    parser.add_argument("--steps", type=int, default=2000, help="distillation steps")
    parser.add_argument("--scratch", nargs="*", default=None, metavar="BLOCK",
                        help="also train these blocks (all of --blocks when none are named) from scratch with the "
                             "original's recipe and budget (slow: as long as the original's training each)")
    parser.add_argument("--iters", type=int, default=20, help="timed ONNX Runtime runs per model")
    parser.add_argument("--device", default="cpu", help="where training and distillation run: cpu or cuda")
    timing = parser.add_mutually_exclusive_group()
    timing.add_argument("--no-latency", action="store_true", help="write the accuracy table without timing")
    timing.add_argument("--latency-only", action="store_true",
                        help="time the structures of the table already in --out and rewrite it")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "accuracy",
                        help="results: .md, .json and .png")
    args = parser.parse_args()
    if args.device != "cpu" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here")
    if args.latency_only:
        results = json.loads(args.out.with_suffix(".json").read_text())
        with tempfile.TemporaryDirectory(prefix="edge3d-accuracy-") as work:
            add_latency(results, args.iters, Path(work))
        write_results(results, args.out)
        print(args.out.with_suffix(".md").read_text())
        return

    config = dataclasses.replace(defaults, width=args.width, epochs=args.epochs, train_clips=args.train_clips,
                                 seed=args.seed, budget_s=args.budget, device=args.device)
    model, data, metrics = trained_model(config)
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, data.heldout_x[:1])
    print(f"cache entry:                 {cache_dir() / f'r3d-{config.key()}.pt'}")
    print(f"parameters:                  {params / 1e6:.2f} M")
    print(f"MACs per clip:               {macs / 1e9:.3f} G  (3×{config.frames}×{config.size}×{config.size})")
    print(f"held-out accuracy, 3D model: {metrics['heldout_accuracy']:.1%}  ({config.heldout_clips} clips, "
          f"chance {1 / config.classes:.0%})")
    print(f"held-out accuracy, 1 frame:  {metrics['single_frame_accuracy']:.1%}")
    print(f"train time:                  {metrics['train_seconds'] / 60:.1f} min, {metrics['epochs_run']} epochs")
    if args.train_only:
        return
    from edge3d.blocks import BLOCK_NAMES

    blocks = args.blocks or list(BLOCK_NAMES)
    scratch = [] if args.scratch is None else args.scratch or blocks
    results = evaluate_blocks(config, blocks, args.steps, scratch, (model, data, metrics))
    if not args.no_latency:
        with tempfile.TemporaryDirectory(prefix="edge3d-accuracy-") as work:
            add_latency(results, args.iters, Path(work))
    write_results(results, args.out)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
