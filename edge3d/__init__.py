"""edge3d: rewrite Conv3d video models into rank-4 graphs and build verified edge artifacts."""

__version__ = "0.1.0"
