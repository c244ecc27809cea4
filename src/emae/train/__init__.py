"""Training: the loop, distributed runs, losses, corruptions, TensorBoard logging."""
