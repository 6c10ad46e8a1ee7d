"""edge3d: rewrite Conv3d video models into rank-4 graphs and build verified edge artifacts."""

__version__ = "0.1.0"


def rewrite(module, block="st-add", stride_mode="aligned", calib=None, input_shape=None, finetune_steps=0):
    """Replace a model's Conv3d layers by 4D blocks; see ``edge3d.blocks.rewrite.rewrite``."""
    from .blocks.rewrite import rewrite as _rewrite

    return _rewrite(module, block=block, stride_mode=stride_mode, calib=calib, input_shape=input_shape,
                    finetune_steps=finetune_steps)
