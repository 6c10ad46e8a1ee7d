"""Save an example model as TorchScript (.pt), ExportedProgram (.pt2) or state_dict.

    python examples/save_model.py c3d -o c3d.pt
    python examples/save_model.py r3d18 --small -o r3d18.pt2
    python examples/save_model.py x3d --format state-dict -o x3d_weights.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.models import EXAMPLES, build  # noqa: E402


def save(name: str, out: Path, fmt: str | None = None, small: bool = False, seed: int = 0) -> tuple[int, ...]:
    """Build the example with seeded weights and save it; returns its input shape."""
    torch.manual_seed(seed)
    model, shape = build(name, small=small)
    fmt = fmt or {".pt2": "pt2"}.get(out.suffix, "torchscript")
    example = torch.randn(*shape)
    if fmt == "torchscript":
        torch.jit.save(torch.jit.trace(model, (example,)), str(out))
    elif fmt == "pt2":
        torch.export.save(torch.export.export(model, (example,)), str(out))
    elif fmt == "state-dict":
        torch.save(model.state_dict(), str(out))
    else:
        raise ValueError(fmt)
    return shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(EXAMPLES))
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--format", choices=["torchscript", "pt2", "state-dict"],
                        help="default: pt2 for a .pt2 file, else torchscript")
    parser.add_argument("--small", action="store_true", help="the small test configuration")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shape = save(args.name, args.output, args.format, args.small, args.seed)
    print(f"saved {args.name} to {args.output} (input shape {','.join(map(str, shape))})")


if __name__ == "__main__":
    main()
