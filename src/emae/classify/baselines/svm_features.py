"""The seed paper's classic baseline: an RBF support vector machine on handcrafted features.

:class:`SVMOnFeatures` computes :func:`emae.classify.features.handcrafted_features` once per call,
optionally appends the numeric ``feat_*`` columns of the labels CSV, standardizes the columns and
fits ``SVC(kernel="rbf", class_weight="balanced")``. ``C`` and ``gamma`` are chosen by a grid
search on the feature matrix (not on the images, so the features are never recomputed) with
stratified inner folds scored by macro F1.

Probabilities come from Platt scaling (a sigmoid per class on the SVM's decision values,
fitted on cross-validated decisions), through ``CalibratedClassifierCV(..., ensemble=False)``:
``SVC(probability=True)`` is deprecated since scikit-learn 1.9. ``predict`` is the most probable
class, so it always agrees with ``predict_proba``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from emae.classify.features import feature_names, handcrafted_features
from emae.errors import EmaeError, NotFittedError

logger = logging.getLogger(__name__)

#: Inner folds of the grid search, at most (fewer when the smallest class is smaller).
SEARCH_FOLDS = 3
#: Folds of the Platt calibration, at most.
CALIBRATION_FOLDS = 5
#: Used when the smallest class is too small to cross-validate.
DEFAULT_PARAMS: dict[str, Any] = {"C": 1.0, "gamma": "scale"}


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and value > 0


def _check_grid(Cs: Any, gammas: Any) -> None:
    if len(Cs) == 0 or not all(_positive(c) for c in Cs):
        raise EmaeError(f"Cs must be a non-empty sequence of positive numbers, got {Cs!r}")
    if len(gammas) == 0 or not all(g in ("scale", "auto") or _positive(g) for g in gammas):
        raise EmaeError(f"gammas must hold 'scale', 'auto' or positive numbers, got {gammas!r}")


def _groups(groups: Any, n: int) -> np.ndarray | None:
    """``groups`` as an ``(n,)`` array, or None when not given or fewer than 2 groups."""
    if groups is None:
        return None
    g = np.asarray([str(v) for v in groups])
    if g.shape != (n,):
        raise EmaeError(f"groups must be ({n},), one group per image, got shape {g.shape}")
    if len(np.unique(g)) < 2:
        logger.warning("only one group: the grid search splits images, not groups")
        return None
    return g


class SVMOnFeatures(ClassifierMixin, BaseEstimator):
    """RBF SVM on :func:`~emae.classify.features.handcrafted_features`, tuned by an inner grid
    search.

    Parameters
    ----------
    Cs
        Values of the SVM's ``C`` searched.
    gammas
        Values of the RBF ``gamma`` searched: ``"scale"``, ``"auto"`` or positive numbers.
    bins, n_radial, value_range
        Feature parameters, as in :func:`~emae.classify.features.handcrafted_features`.
    seed
        Seed of the inner folds and the SVM.
    n_jobs
        Parallel jobs of the grid search (None: one).

    Attributes
    ----------
    classes_ : numpy.ndarray
        ``(n_classes,)`` sorted class labels (ints or strings, as given to ``fit``), the column
        order of :meth:`predict_proba`.
    best_params_ : dict
        ``{"C": ..., "gamma": ...}`` chosen by the grid search (``DEFAULT_PARAMS`` when skipped).
    best_score_ : float
        Mean inner-fold macro F1 of ``best_params_``; NaN when the search was skipped because
        the smallest class has fewer than 2 samples.
    model_ : sklearn.pipeline.Pipeline
        ``StandardScaler`` then the calibrated SVM, fitted on all the features.
    feature_names_ : list of str
        Name of each column the SVM sees: handcrafted, then ``extra_00..`` for ``features``.
    n_extra_features_ : int
        Number of columns of ``features`` given to ``fit`` (0 when none).
    """

    def __init__(
        self,
        *,
        Cs: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0),
        gammas: tuple[str | float, ...] = ("scale", 0.01, 0.1),
        bins: int = 16,
        n_radial: int = 8,
        value_range: tuple[float, float] | None = None,
        seed: int = 0,
        n_jobs: int | None = None,
    ) -> None:
        self.Cs = Cs
        self.gammas = gammas
        self.bins = bins
        self.n_radial = n_radial
        self.value_range = value_range
        self.seed = seed
        self.n_jobs = n_jobs

    def _design(self, images: Any, features: Any, n_extra: int | None) -> np.ndarray:
        """``(N, F)`` handcrafted features of ``images``, then the extra ``features`` columns."""
        x = handcrafted_features(
            images, bins=self.bins, n_radial=self.n_radial, value_range=self.value_range
        )
        if features is None:
            if n_extra:
                raise EmaeError(f"features with {n_extra} columns are required, as given to fit")
            return x
        extra = np.asarray(features)
        if extra.ndim == 1:
            extra = extra[:, None]
        if extra.ndim != 2 or len(extra) != len(x) or extra.dtype.kind not in "buif":
            raise EmaeError(
                f"features must be a numeric ({len(x)}, F) array, one row per image, "
                f"got shape {extra.shape} dtype {extra.dtype}"
            )
        if n_extra is not None and extra.shape[1] != n_extra:
            raise EmaeError(f"features must have {n_extra} columns as in fit, got {extra.shape[1]}")
        if not np.isfinite(extra).all():
            raise EmaeError("features hold NaN or infinite values")
        return np.concatenate([x, extra.astype(np.float64)], axis=1)

    def _svm(self, params: dict[str, Any]) -> SVC:
        return SVC(kernel="rbf", class_weight="balanced", random_state=self.seed, **params)

    def _search(
        self, x: np.ndarray, y: np.ndarray, n_splits: int, groups: np.ndarray | None
    ) -> None:
        pipeline = Pipeline([("scale", StandardScaler()), ("svm", self._svm({}))])
        cv: StratifiedKFold | StratifiedGroupKFold
        cv = StratifiedKFold(n_splits, shuffle=True, random_state=self.seed)
        if groups is not None:
            n_splits = min(n_splits, len(np.unique(groups)))
            cv = StratifiedGroupKFold(n_splits, shuffle=True, random_state=self.seed)
        search = GridSearchCV(
            pipeline,
            {"svm__C": [float(c) for c in self.Cs], "svm__gamma": list(self.gammas)},
            scoring="f1_macro",
            cv=cv,
            n_jobs=self.n_jobs,
            refit=False,
            error_score="raise",
        )
        search.fit(x, y, groups=groups)
        self.best_params_ = {k.removeprefix("svm__"): v for k, v in search.best_params_.items()}
        self.best_score_ = float(search.best_score_)
        logger.info(
            "SVM grid search (%d folds): best %s, macro F1 %.3f",
            n_splits,
            self.best_params_,
            self.best_score_,
        )

    def fit(self, images: Any, y: Any, features: Any = None, groups: Any = None) -> SVMOnFeatures:
        """Compute the features once, choose ``C`` and ``gamma``, fit the calibrated SVM.

        Parameters
        ----------
        images
            ``(N, H, W)`` images, e.g. the patches of :func:`emae.data.labels.read_labeled_patches`.
        y
            ``(N,)`` class labels, ints or strings, at least two classes.
        features
            Optional ``(N, F)`` extra numeric columns (the CSV's ``feat_*``), appended to the
            handcrafted features; then :meth:`predict` needs them too.
        groups
            Optional ``(N,)`` group of each image (e.g. the section or the source image):
            the grid search then never validates on a group it trained on, so near-duplicates
            do not make a setting look better than it is. Needs at least 2 groups.

        Returns
        -------
        SVMOnFeatures
            ``self``, fitted.
        """
        _check_grid(self.Cs, self.gammas)
        x = self._design(images, features, None)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x):
            raise EmaeError(f"y must be ({len(x)},), one label per image, got shape {y.shape}")
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise EmaeError(f"need at least 2 classes to fit, got only {classes.tolist()}")
        smallest = int(counts.min())
        if smallest < 2:
            logger.warning(
                "class %r has %d sample: no grid search, using %s and calibrating on the "
                "training samples",
                classes[np.argmin(counts)].item(),
                smallest,
                DEFAULT_PARAMS,
            )
            self.best_params_, self.best_score_ = dict(DEFAULT_PARAMS), float("nan")
        else:
            self._search(x, y, min(SEARCH_FOLDS, smallest), _groups(groups, len(y)))
        scaler = StandardScaler().fit(x)
        scaled = scaler.transform(x)
        if smallest >= 2:
            folds = StratifiedKFold(
                min(CALIBRATION_FOLDS, smallest), shuffle=True, random_state=self.seed
            )
        else:  # one "fold" testing on the training samples: the sigmoid is overconfident
            folds = [(np.arange(len(y)), np.arange(len(y)))]
        calibrated = CalibratedClassifierCV(self._svm(self.best_params_), cv=folds, ensemble=False)
        calibrated.fit(scaled, y)
        self.model_ = Pipeline([("scale", scaler), ("svm", calibrated)])
        self.classes_ = calibrated.classes_
        names = feature_names(bins=self.bins, n_radial=self.n_radial)
        self.n_extra_features_ = x.shape[1] - len(names)
        self.feature_names_ = names + [f"extra_{i:02d}" for i in range(self.n_extra_features_)]
        return self

    def _fitted_design(self, images: Any, features: Any) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise NotFittedError("SVMOnFeatures is not fitted yet; call fit(images, y) first")
        return self._design(images, features, self.n_extra_features_)

    def predict_proba(self, images: Any, features: Any = None) -> np.ndarray:
        """``(N, n_classes)`` calibrated class probabilities, columns in :attr:`classes_` order."""
        x = self._fitted_design(images, features)
        return self.model_.predict_proba(x)

    def predict(self, images: Any, features: Any = None) -> np.ndarray:
        """``(N,)`` most probable class of each image, labels as in :attr:`classes_`."""
        proba = self.predict_proba(images, features)
        return self.classes_[np.argmax(proba, axis=1)]
