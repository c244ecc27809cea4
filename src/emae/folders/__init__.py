"""Model folders: one loader and one writer per kind (autoencoder, classifier)."""
