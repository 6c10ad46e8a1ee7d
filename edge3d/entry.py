"""The `edge3d` console script. Ctrl-C while the command line is still importing (torch and
onnx take seconds to import) ends with one line, like Ctrl-C during a command, not a traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from .cli import main as cli
    except KeyboardInterrupt:
        sys.stderr.write("edge3d: interrupted\n")
        sys.exit(130)
    cli()
