"""`python -m edge3d`: the same as the `edge3d` command."""

from .entry import main

main()
