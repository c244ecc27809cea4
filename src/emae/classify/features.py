"""Handcrafted image features for the classic baseline: an SVM on features, as in the seed paper.

:func:`handcrafted_features` maps images ``(N, H, W)`` (axes ``"NYX"``) to a feature matrix
``(N, F)`` float64 whose columns are named by :func:`feature_names`; :class:`HandcraftedFeatures`
wraps it as a scikit-learn transformer. Every image is described on its own: no feature depends
on the other images of the batch, so an image gives the same row alone or in any batch, at fit
and at predict time. The feature families, their definitions and their column order are in
:mod:`emae.classify.feature_families` (``bins=16``, ``n_radial=8`` give 74 columns).

Intensity scale
---------------
Intensities are mapped to a fixed unit scale per call, never from the data: integer images by
their dtype's range (``uint8`` 0..255 and ``uint16`` 0..65535 to 0..1), float images kept as
they are (expected in ``[0, 1]``), or both by ``value_range=(low, high)`` when given (useful for
``uint16`` data that fills a small part of its range). The histogram counts values clipped to
``[0, 1]``; all other features use the unclipped values, and the ``StandardScaler`` of the
classifier takes care of their spread. Image moments treat negative values as 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from emae.classify.feature_families import (
    MOMENT_ORDERS,
    OBJECT_FEATURES,
    PERCENTILES,
    edge_features,
    glcm_features,
    intensity_features,
    local_variance_features,
    moment_features,
    object_features,
    ring_index,
    ring_means,
    snr_features,
)
from emae.data.segmentation import segment_object
from emae.errors import EmaeError

MIN_SIDE = 3


def feature_names(*, bins: int = 16, n_radial: int = 8) -> list[str]:
    """Name of each column of :func:`handcrafted_features` for the same ``bins``, ``n_radial``."""
    _check_params(bins, n_radial)
    return [
        *(f"hist_{i:02d}" for i in range(bins)),
        *("intensity_mean", "intensity_std", "intensity_skewness", "intensity_kurtosis"),
        *(f"intensity_p{p:02d}" for p in PERCENTILES),
        *(f"moment_{p}{q}" for p, q in MOMENT_ORDERS),
        *(f"hu_{i}" for i in range(1, 8)),
        *(f"radial_{i:02d}" for i in range(n_radial)),
        *(f"edge_radial_{i:02d}" for i in range(n_radial)),
        "edge_mean",
        "edge_density",
        "snr",
        "noise_std",
        *(f"object_{name}" for name in OBJECT_FEATURES),
        *("glcm_contrast", "glcm_homogeneity", "glcm_energy", "glcm_correlation"),
        *("local_var_mean", "local_var_std", "local_var_p90"),
    ]


def _check_params(bins: int, n_radial: int) -> None:
    for name, value, low in (("bins", bins, 2), ("n_radial", n_radial, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise EmaeError(f"{name} must be an int >= {low}, got {value!r}")


def _to_unit(images: Any, value_range: tuple[float, float] | None) -> np.ndarray:
    """Validated ``(N, H, W)`` float64 images on the unit scale described in the module doc."""
    a = np.asarray(images)
    if a.ndim != 3 or a.dtype.kind not in "buif" or 0 in a.shape:
        raise EmaeError(
            f"images must be a non-empty (N, H, W) array of real numbers, "
            f"got shape {a.shape} dtype {a.dtype}"
        )
    if min(a.shape[1:]) < MIN_SIDE:
        raise EmaeError(f"images must be at least {MIN_SIDE}x{MIN_SIDE}, got {a.shape[1:]}")
    bad = ~np.isfinite(a).reshape(len(a), -1).all(axis=1) if a.dtype.kind == "f" else None
    if bad is not None and bad.any():
        raise EmaeError(f"images {np.flatnonzero(bad)[:5].tolist()} hold NaN or infinite values")
    if value_range is not None:
        low, high = (float(v) for v in value_range)
        if not (np.isfinite(low) and np.isfinite(high) and high > low):
            raise EmaeError(f"value_range must be two finite numbers low < high, got {value_range}")
    elif a.dtype.kind in "iu":
        info = np.iinfo(a.dtype)
        low, high = float(info.min), float(info.max)
    else:
        low, high = 0.0, 1.0
    return (a.astype(np.float64) - low) / (high - low)


def _to_masks(masks: Any, shape: tuple[int, ...]) -> np.ndarray:
    m = np.asarray(masks)
    if m.shape != shape:
        raise EmaeError(f"masks must have the shape of the images {shape}, got {m.shape}")
    if m.dtype != bool:
        if m.dtype.kind not in "uif" or not np.isin(m, (0, 1)).all():
            raise EmaeError(f"masks must be boolean (or 0/1), got dtype {m.dtype}")
        m = m.astype(bool)
    empty = ~m.reshape(len(m), -1).any(axis=1)
    if empty.any():
        raise EmaeError(f"masks {np.flatnonzero(empty)[:5].tolist()} are empty (no True pixel)")
    return m


def _image_features(x: np.ndarray, mask: np.ndarray | None, bins: int, n_radial: int) -> list:
    h, w = x.shape
    if mask is None:
        centre = ((h - 1) / 2, (w - 1) / 2)
        obj = segment_object(x)
    else:
        ys, xs = np.nonzero(mask)
        centre, obj = (ys.mean(), xs.mean()), mask
    rings = ring_index((h, w), centre, n_radial)
    ordered = np.sort(x.ravel())
    return [
        *intensity_features(x, ordered, bins),
        *moment_features(x if mask is None else mask.astype(np.float64)),
        *ring_means(x, rings, n_radial),
        *edge_features(x, rings, n_radial),
        *snr_features(x),
        *object_features(x, obj),
        *glcm_features(x, ordered),
        *local_variance_features(x),
    ]


def handcrafted_features(
    images: Any,
    masks: Any = None,
    *,
    bins: int = 16,
    n_radial: int = 8,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Describe each image by the handcrafted features of :mod:`emae.classify.feature_families`.

    Parameters
    ----------
    images
        ``(N, H, W)`` (axes ``"NYX"``) of real numbers, ``H, W >= 3``, all finite.
    masks
        Optional ``(N, H, W)`` boolean object masks, none empty: moments, ring centre and object
        features then describe the mask instead of the intensities and the Otsu segmentation.
    bins
        Histogram bins over ``[0, 1]``.
    n_radial
        Rings of the radial intensity and edge profiles.
    value_range
        ``(low, high)`` intensities mapped to 0 and 1; by default the dtype's range for integer
        images and ``(0, 1)`` for floats.

    Returns
    -------
    numpy.ndarray
        ``(N, F)`` float64, columns named by ``feature_names(bins=bins, n_radial=n_radial)``.
    """
    _check_params(bins, n_radial)
    x = _to_unit(images, value_range)
    m = None if masks is None else _to_masks(masks, x.shape)
    rows = [
        _image_features(x[n], None if m is None else m[n], bins, n_radial) for n in range(len(x))
    ]
    return np.asarray(rows, dtype=np.float64)


class HandcraftedFeatures(TransformerMixin, BaseEstimator):
    """scikit-learn transformer: images ``(N, H, W)`` to :func:`handcrafted_features` ``(N, F)``.

    Stateless: ``fit`` only checks the parameters, and ``transform`` works on any batch. Pipelines
    and ``GridSearchCV`` pass the ``(N, H, W)`` arrays through unchanged, so it can be their first
    step. Masks are not supported here; call :func:`handcrafted_features` for them.

    Parameters
    ----------
    bins, n_radial, value_range
        As in :func:`handcrafted_features`.
    """

    def __init__(
        self,
        *,
        bins: int = 16,
        n_radial: int = 8,
        value_range: tuple[float, float] | None = None,
    ) -> None:
        self.bins = bins
        self.n_radial = n_radial
        self.value_range = value_range

    def fit(self, X: Any, y: Any = None) -> HandcraftedFeatures:
        """Check the parameters and return ``self``; nothing is learned."""
        _check_params(self.bins, self.n_radial)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """``(N, H, W)`` images to ``(N, F)`` float64 features."""
        return handcrafted_features(
            X, bins=self.bins, n_radial=self.n_radial, value_range=self.value_range
        )

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The column names, as an object array (scikit-learn's convention)."""
        return np.asarray(feature_names(bins=self.bins, n_radial=self.n_radial), dtype=object)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        return tags
