"""The encoder + 1x1-conv head as a scikit-learn classifier of raw patches.

:class:`PatchClassifier` is :func:`emae.classify.training.train_classifier` behind the
estimator contract: ``__init__`` stores its keyword arguments, ``fit(X, y) -> self`` trains,
``predict_proba`` / ``predict`` / ``dense_probabilities`` use what was learned (attributes
ending in ``_``), ``sklearn.base.clone`` gives an unfitted copy, and calling it before ``fit``
raises :class:`~emae.errors.NotFittedError`. ``emae compare`` fits it side by side with the
SVM and latent baselines, which follow the same contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from emae.classify.config import FinetuneConfig
from emae.classify.training import train_classifier
from emae.errors import EmaeError, NotFittedError


class PatchClassifier(ClassifierMixin, BaseEstimator):
    """A pretrained (or from-scratch) encoder with a classifier head, trained on patches.

    Parameters
    ----------
    encoder
        Model folder of a pretrained autoencoder, or None for the same architecture from
        random weights (the "CNN from scratch"). With an autoencoder, ``config.view`` says
        what the classifier reads: the patch through the encoder (``"image"``), or what the
        autoencoder could not reconstruct, through a CNN trained on the labels (``"residual"``,
        and ``"auto"``, the default, for these patches); residual views take patches with
        ``config.context`` pixels of surroundings on every side
        (``fitted_.model.input_size``).
    config
        Training options (:class:`~emae.classify.config.FinetuneConfig`); default options
        when None.
    classes
        All class labels, in order, when ``y`` may lack some of them (a small label budget):
        the probabilities then have one column per entry. Default: the labels in ``y``.
    class_names
        A name per entry of ``classes`` when the labels are indices (the clean class is found
        by name for ``balance="artificial"``). Default: the labels as text.
    source_dtype
        Pixel dtype of the images the patches were read from, checked against the encoder's
        normalization (see :func:`~emae.classify.training.train_classifier`).

    Attributes
    ----------
    classes_ : numpy.ndarray
        ``(K,)`` the class labels, the columns of :meth:`predict_proba`.
    fitted_ : FittedClassifier
        The trained model with its normalization.
    summary_ : dict
        The training summary (history, seconds, ...).
    """

    def __init__(
        self,
        encoder: str | Path | None = None,
        config: FinetuneConfig | None = None,
        classes: Sequence[Any] | None = None,
        class_names: Sequence[str] | None = None,
        source_dtype: str | None = None,
    ) -> None:
        self.encoder = encoder
        self.config = config
        self.classes = classes
        self.class_names = class_names
        self.source_dtype = source_dtype

    def fit(
        self,
        images: Any,
        y: Any,
        features: Any = None,
        unlabeled: Any = None,
    ) -> PatchClassifier:
        """Train on raw patches.

        Parameters
        ----------
        images
            ``(N, P, P)`` raw patches, ``P`` the encoder's patch size.
        y
            ``(N,)`` class labels (ints or strings).
        features
            ``(N, F)`` extra numeric features fused with the image code, or None.
        unlabeled
            ``(M, P, P)`` raw unlabeled patches for semi-supervised training, or None.

        Returns
        -------
        PatchClassifier
            ``self``, fitted.
        """
        y = np.asarray(y)
        classes = np.unique(y) if self.classes is None else np.asarray(list(self.classes))
        unknown = sorted(set(y.tolist()) - set(classes.tolist()))
        if unknown:
            raise EmaeError(f"labels {unknown} are not among the classes {classes.tolist()}")
        names = tuple(str(c) for c in (classes if self.class_names is None else self.class_names))
        if len(names) != len(classes):
            raise EmaeError(f"give one class name per class: {len(names)} for {len(classes)}")
        index = {c: i for i, c in enumerate(classes.tolist())}
        self.fitted_, self.summary_ = train_classifier(
            np.asarray(images),
            np.array([index[c] for c in y.tolist()], dtype=np.int64),
            names,
            self.config or FinetuneConfig(),
            encoder=self.encoder,
            extra=None if features is None else np.asarray(features, dtype=np.float64),
            unlabeled=None if unlabeled is None else np.asarray(unlabeled),
            source_dtype=self.source_dtype,
        )
        self.classes_ = classes
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "fitted_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(patches, labels) first"
            )

    def predict_proba(self, images: Any, features: Any = None) -> np.ndarray:
        """``(N, K)`` float32 class probabilities of raw patches ``(N, P, P)``."""
        self._check_fitted()
        return self.fitted_.predict_proba(images, features)

    def predict(self, images: Any, features: Any = None) -> np.ndarray:
        """``(N,)`` the most probable class label of each patch."""
        return self.classes_[self.predict_proba(images, features).argmax(axis=1)]

    def dense_probabilities(self, image: Any) -> np.ndarray:
        """Per-class probability map of one raw 2D image ``(H, W)``: ``(K, h', w')`` float32."""
        self._check_fitted()
        return self.fitted_.dense_probabilities(image)
