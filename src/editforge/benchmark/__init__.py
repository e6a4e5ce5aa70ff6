"""`editforge bench`: speed and memory of generation and training, at tiny size (CPU) or full size (GPU)."""
