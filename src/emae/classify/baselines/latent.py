"""Linear and nearest-neighbour classifiers on the frozen latent space of an autoencoder.

The simplest use of a pretrained encoder: average its feature map over the patch into one
vector (``(N, C)``), standardize, and fit logistic regression (class-weighted) or k-nearest
neighbours from scikit-learn. If these already separate the classes, the latent space carries
the information; the 1x1-conv head of :mod:`emae.commands.finetune` is the same idea, trained with
the
loop (augmentation, balancing, optional fine-tuning).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from emae.anomaly.maps import as_images
from emae.errors import EmaeError, NotFittedError
from emae.folders.autoencoder import load_bundle


def latent_vectors(model: torch.nn.Module, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Globally averaged features of normalized images ``(N, H, W)``: ``(N, C)`` float32."""
    out = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size, None]))
            out.append(F.adaptive_avg_pool2d(model.features(x).float(), 1)[:, :, 0, 0].numpy())
    return np.concatenate(out)


class LatentClassifier(ClassifierMixin, BaseEstimator):
    """Logistic regression or k-NN on the pooled latent vectors of a frozen autoencoder.

    Parameters
    ----------
    encoder
        Model folder of a pretrained autoencoder (``emae pretrain``).
    kind
        ``"logreg"`` (multinomial, balanced class weights) or ``"knn"`` (distance-weighted,
        ``k = min(n_neighbors, smallest class)``).
    n_neighbors
        Neighbours for ``"knn"``.

    Attributes
    ----------
    classes_ : numpy.ndarray
        The class labels seen in ``fit``.
    model_ : sklearn.pipeline.Pipeline
        Scaler and classifier, fitted on the latent vectors.
    """

    def __init__(
        self, encoder: str | Path, kind: Literal["logreg", "knn"] = "logreg", n_neighbors: int = 5
    ) -> None:
        self.encoder = encoder
        self.kind = kind
        self.n_neighbors = n_neighbors

    def _vectors(self, images: Any) -> np.ndarray:
        if not hasattr(self, "bundle_"):
            self.bundle_ = load_bundle(self.encoder)
        x = self.bundle_.normalizer(as_images(images))
        return latent_vectors(self.bundle_.model, x)

    def fit(self, images: Any, y: Any) -> LatentClassifier:
        """Fit on raw patches ``(N, H, W)`` and labels ``(N,)``."""
        if self.kind not in ("logreg", "knn"):
            raise EmaeError(f"kind must be 'logreg' or 'knn', got {self.kind!r}")
        y = np.asarray(y)
        if len(np.unique(y)) < 2:
            raise EmaeError("a classifier needs samples of at least 2 classes")
        vectors = self._vectors(images)
        if self.kind == "logreg":
            head: Any = LogisticRegression(class_weight="balanced", max_iter=5000)
        else:
            k = max(1, min(self.n_neighbors, int(np.unique(y, return_counts=True)[1].min())))
            head = KNeighborsClassifier(n_neighbors=k, weights="distance")
        self.model_ = make_pipeline(StandardScaler(), head).fit(vectors, y)
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, images: Any) -> np.ndarray:
        """Class probabilities ``(N, K)`` in the order of :attr:`classes_`."""
        if not hasattr(self, "model_"):
            raise NotFittedError("this LatentClassifier is not fitted yet; call fit first")
        return self.model_.predict_proba(self._vectors(images))

    def predict(self, images: Any) -> np.ndarray:
        """The most probable class of each patch, ``(N,)``."""
        proba = self.predict_proba(images)
        return self.classes_[proba.argmax(axis=1)]
