"""Example video models that ship with edge3d: the corpus its lowering is tested on."""
