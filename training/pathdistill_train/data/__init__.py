"""Training data: tile sources, augmentations, samplers."""
