"""Classification: the labeled stream, semi-supervised training, features, metrics, baselines."""
