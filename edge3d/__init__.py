"""edge3d: rewrite Conv3d video models into rank-4 graphs and build verified edge artifacts.

The Python API mirrors the CLI: ``export``, ``lower``, ``lint``, ``bench`` (``edge3d.api``) and
``rewrite``; ``edge3d.layouts`` converts clips to frames and back, for numpy arrays and torch
tensors alike.
"""

__version__ = "0.1.0"

from .api import Bundle, LoweredFile, bench, export, lint, lower  # noqa: E402 - after the version


def rewrite(module, block="st-add", stride_mode="aligned", calib="random", input_shape=None, finetune_steps=0,
            with_report=False):
    """Replace a model's Conv3d layers by 4D blocks and fit them, as `edge3d rewrite` does (the
    same defaults: ``calib="random"``); see ``edge3d.blocks.rewrite.rewrite``. With
    ``with_report``, returns (module, report) where the report is what `rewrite` writes as JSON."""
    from .blocks.rewrite import rewrite as _rewrite

    return _rewrite(module, block=block, stride_mode=stride_mode, calib=calib, input_shape=input_shape,
                    finetune_steps=finetune_steps, with_report=with_report)


__all__ = ["Bundle", "LoweredFile", "bench", "export", "lint", "lower", "rewrite"]
