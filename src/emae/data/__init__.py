"""Data: patches, sampling, validity, normalization, datasets, labels, objects, folds."""
