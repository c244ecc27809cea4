"""Classic, non-deep baselines that the learned models are compared against."""

from emae.baselines.latent import LatentClassifier
from emae.baselines.svm_features import SVMOnFeatures

__all__ = ["LatentClassifier", "SVMOnFeatures"]
