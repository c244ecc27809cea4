"""Classic, non-deep baselines that the learned models are compared against."""

from emae.classify.baselines.latent import LatentClassifier
from emae.classify.baselines.svm_features import SVMOnFeatures

__all__ = ["LatentClassifier", "SVMOnFeatures"]
