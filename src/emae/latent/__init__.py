"""The latent space: vectors of patches, their map, clusters and novelty, and generation."""
