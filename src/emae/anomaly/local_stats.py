"""A non-learned baseline detector: local brightness and local contrast against normal tissue.

This is what a microscopist checks by eye: is a region too dark or too bright, too flat
(defocus, charging) or too busy (dust, noise)? :class:`LocalStatisticsDetector` measures, at
every pixel of a normalized image, the mean and the standard deviation of the intensities in a
Gaussian window of ``sigma`` pixels. ``fit`` learns the median and the MAD of both on normal
images; a pixel's anomaly is the length of its two robust z-scores,
``sqrt(z_mean**2 + z_std**2)``. The standard deviation is compared on a log scale, so halving
and doubling the contrast are equally far from normal.

It follows the contract of :class:`emae.anomaly.detector.AutoencoderDetector` (same methods, same
thresholds chosen on held-out normal images), so any benchmark can put it beside the learned
detectors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from emae.anomaly.base import (
    AnomalyDetector,
    baseline_normalizer,
    check_baseline_normalization,
    check_threshold_params,
    held_out_thresholds,
    split_holdout,
)
from emae.anomaly.maps import as_images, local_std
from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError

#: MAD of a normal distribution in units of its standard deviation.
MAD_TO_STD = 1.4826
#: Floor of the local standard deviation (normalized units) before taking its log.
STD_EPS = 1e-3


class LocalStatisticsDetector(AnomalyDetector):
    """Anomaly detector from local mean and local standard deviation; nothing is learned.

    Parameters
    ----------
    normalizer
        Intensity normalization; ``None`` fits one on the images given to :meth:`fit`
        (``low`` and ``high`` percentiles of their pixels).
    sigma
        Gaussian window of the local statistics, in pixels.
    low, high
        Percentiles mapped to 0 and 1 when the normalizer is fitted here.
    reduce
        How a map becomes one score per image: ``"mean"``, ``"max"`` or ``"p99"``.
    target_fpr
        False-positive rate on normal held-out images that ``fit`` sets the thresholds at.
    holdout
        Fraction of the images given to ``fit`` kept apart to choose the thresholds.
    seed
        Seed of the held-out split and the pixel subsample.

    Attributes
    ----------
    normalizer_ : PercentileNormalizer
        The normalization used (``normalizer`` or the one fitted).
    center_, scale_ : numpy.ndarray
        ``(2,)`` float64 median and MAD-based standard deviation of the local mean and of the
        log local standard deviation on the normal images.
    threshold_ : float
        Image scores strictly above it are anomalous (:meth:`predict`).
    threshold_record_ : Threshold
        How ``threshold_`` was chosen.
    pixel_threshold_ : Threshold
        The same rule for single pixels of :meth:`anomaly_map`.
    """

    def __init__(
        self,
        normalizer: PercentileNormalizer | None = None,
        *,
        sigma: float = 4.0,
        low: float = 1.0,
        high: float = 99.0,
        reduce: str = "mean",
        target_fpr: float = 0.01,
        holdout: float = 0.25,
        seed: int = 0,
    ) -> None:
        self.normalizer = normalizer
        self.sigma = sigma
        self.low = low
        self.high = high
        self.reduce = reduce
        self.target_fpr = target_fpr
        self.holdout = holdout
        self.seed = seed

    @property
    def score_name(self) -> str:
        """``"local-stats/<reduce>"``: what the image threshold applies to."""
        return f"local-stats/{self.reduce}"

    def _check_params(self) -> None:
        check_baseline_normalization(self.normalizer, self.low, self.high)
        if isinstance(self.sigma, bool) or not (
            isinstance(self.sigma, (int, float)) and self.sigma > 0
        ):
            raise EmaeError(f"sigma must be > 0 pixels, got sigma={self.sigma!r}")
        check_threshold_params(self.reduce, self.target_fpr, self.holdout)

    def _features(self, images: np.ndarray) -> np.ndarray:
        """Local mean and log local std of normalized ``(N, H, W)``: ``(2, N, H, W)`` float32."""
        mean = ndi.gaussian_filter(images, (0, self.sigma, self.sigma), mode="reflect")
        log_std = np.log(np.maximum(local_std(images, self.sigma), STD_EPS))
        return np.stack([mean, log_std])

    def _maps(self, x: Any) -> np.ndarray:
        features = self._features(self.normalizer_(as_images(x)))
        z = (features - self.center_[:, None, None, None]) / self.scale_[:, None, None, None]
        return np.sqrt(np.sum(z * z, axis=0)).astype(np.float32)

    def fit(self, x: Any, y: Any = None) -> LocalStatisticsDetector:
        """Learn the normal local statistics and the thresholds from normal images.

        Parameters
        ----------
        x
            ``(N, H, W)`` raw images of normal data (N >= 2), e.g. a few hundred random
            64 x 64 patches. A small fraction of artifacts does little harm (median and MAD).
        y
            Ignored; present for the scikit-learn contract.

        Returns
        -------
        LocalStatisticsDetector
            ``self``, fitted.
        """
        self._check_params()
        dtype = str(np.asarray(x).dtype)
        x = as_images(x)
        fit_part, held_out = split_holdout(x, self.holdout, self.seed)
        self.normalizer_ = baseline_normalizer(
            self.normalizer, fit_part, low=self.low, high=self.high, dtype=dtype
        )
        normalizer = self.normalizer_
        features = self._features(normalizer(fit_part)).reshape(2, -1).astype(np.float64)
        center = np.median(features, axis=1)
        mad = np.median(np.abs(features - center[:, None]), axis=1) * MAD_TO_STD
        self.center_ = center
        self.scale_ = np.maximum(mad, np.finfo(np.float32).eps)
        record, self.pixel_threshold_ = held_out_thresholds(
            self._maps(held_out),
            reduce=self.reduce,
            target_fpr=self.target_fpr,
            seed=self.seed,
            names=(self.score_name, "local-stats"),
        )
        self._set_threshold(record)
        return self
