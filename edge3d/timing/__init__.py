"""`edge3d bench`: latency reports for a bundle, lowered vs original, in one run."""
