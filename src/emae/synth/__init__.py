"""Synthetic EM images with artifacts."""
