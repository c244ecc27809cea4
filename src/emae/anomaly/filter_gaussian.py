"""A non-learned baseline: a Gaussian on ilastik's multi-scale filter features (PaDiM-style).

PaDiM models the features at each position of normal images with a Gaussian and scores a
pixel by its Mahalanobis distance. EM sections are not aligned objects, so one Gaussian serves
every position; the features are not a pretrained network's but ilastik's default filter bank
(:func:`emae.anomaly.filter_bank.filter_features`: smoothed intensity, LoG, gradient magnitude,
Hessian and structure-tensor eigenvalues at 0.7-10 pixels), which is what a microscopist's
pixel classifier sees. Magnitudes are compared on a log scale and signed responses through an
``asinh`` (so halving and doubling the contrast are equally far from normal); the map is the
log squared Mahalanobis distance, Gaussian-averaged over ``aggregate_sigma`` pixels.

It follows the contract of the other detectors (:class:`~emae.anomaly.base.AnomalyDetector`),
so a benchmark can put it beside the autoencoder's scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from emae.anomaly.base import (
    AnomalyDetector,
    baseline_normalizer,
    check_baseline_normalization,
    check_threshold_params,
    held_out_thresholds,
    split_holdout,
)
from emae.anomaly.filter_bank import RESPONSES, SIGMAS, filter_features
from emae.anomaly.filters import gaussian_filter
from emae.anomaly.maps import as_images
from emae.anomaly.statistics import shrunk_covariance
from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError
from emae.runtime import as_generator

#: Responses that are >= 0 (compared as logs); the others are signed (compared through asinh).
MAGNITUDES = ("gradient", "structure_1", "structure_2")
#: Floor added to magnitudes before the log, and the scale of the asinh, normalized units.
EPS = 1e-4
SIGNED_SCALE = 0.01
#: Normal pixels (a seeded subsample) the Gaussian is fitted on.
FIT_PIXELS = 200_000


def transformed_features(x: torch.Tensor) -> torch.Tensor:
    """Filter features of ``(B, H, W)`` normalized images, logs of magnitudes, asinh of the rest.

    Returns ``(B, 7 * len(SIGMAS), H, W)`` float32.
    """
    features = filter_features(x, SIGMAS)
    b, _, h, w = features.shape
    features = features.reshape(b, len(SIGMAS), len(RESPONSES), h, w)
    out = torch.empty_like(features)
    for j, name in enumerate(RESPONSES):
        if name in MAGNITUDES:
            out[:, :, j] = torch.log(features[:, :, j].clamp(min=0) + EPS)
        elif name == "gaussian":
            out[:, :, j] = features[:, :, j]
        else:
            out[:, :, j] = torch.asinh(features[:, :, j] / SIGNED_SCALE)
    return out.reshape(b, -1, h, w)


class FilterGaussianDetector(AnomalyDetector):
    """One Gaussian over the multi-scale filter features of normal pixels; nothing is trained.

    Parameters
    ----------
    normalizer
        Intensity normalization; ``None`` fits one on the images given to :meth:`fit`.
    aggregate_sigma
        Gaussian window in pixels over which the log distances are averaged.
    low, high
        Percentiles mapped to 0 and 1 when the normalizer is fitted here.
    reduce, target_fpr, holdout, seed
        As for :class:`~emae.anomaly.local_stats.LocalStatisticsDetector`.

    Attributes
    ----------
    normalizer_ : PercentileNormalizer
    mean_ : numpy.ndarray
        ``(D,)`` float64 mean of the normal features (``D = 35``).
    precision_ : numpy.ndarray
        ``(D, D)`` float64 inverse of their shrunk covariance.
    threshold_, threshold_record_, pixel_threshold_
        As for the other detectors.
    """

    def __init__(
        self,
        normalizer: PercentileNormalizer | None = None,
        *,
        aggregate_sigma: float = 6.0,
        low: float = 1.0,
        high: float = 99.0,
        reduce: str = "mean",
        target_fpr: float = 0.01,
        holdout: float = 0.25,
        seed: int = 0,
    ) -> None:
        self.normalizer = normalizer
        self.aggregate_sigma = aggregate_sigma
        self.low = low
        self.high = high
        self.reduce = reduce
        self.target_fpr = target_fpr
        self.holdout = holdout
        self.seed = seed

    @property
    def score_name(self) -> str:
        """``"filter-gaussian/<reduce>"``: what the image threshold applies to."""
        return f"filter-gaussian/{self.reduce}"

    def _check_params(self) -> None:
        check_baseline_normalization(self.normalizer, self.low, self.high)
        if not self.aggregate_sigma >= 0:
            raise EmaeError(f"aggregate_sigma must be >= 0 pixels, got {self.aggregate_sigma!r}")
        check_threshold_params(self.reduce, self.target_fpr, self.holdout)

    def _features(self, images: np.ndarray) -> torch.Tensor:
        """``(N, H, W)`` raw images to ``(N, D, H, W)`` float32 features."""
        return transformed_features(torch.from_numpy(self.normalizer_(images).astype(np.float32)))

    def _maps(self, x: Any) -> np.ndarray:
        images = as_images(x)
        mean = torch.from_numpy(self.mean_).float()
        # Whitening: ||L^T (f - mean)||^2 with precision = L L^T.
        whiten = torch.linalg.cholesky(torch.from_numpy(self.precision_)).float()
        out = []
        for i in range(len(images)):  # one image at a time: D feature planes in memory
            f = self._features(images[i : i + 1]).permute(0, 2, 3, 1)  # (1, H, W, D)
            d = ((f - mean) @ whiten).square().sum(-1)  # (1, H, W)
            out.append(gaussian_filter(torch.log(d + EPS), self.aggregate_sigma))
        return torch.cat(out).numpy()

    def fit(self, x: Any, y: Any = None) -> FilterGaussianDetector:
        """Learn the normal features' Gaussian and the thresholds from normal images.

        Parameters
        ----------
        x
            ``(N, H, W)`` raw images of normal data (N >= 2), e.g. a few hundred patches.
        y
            Ignored; present for the scikit-learn contract.
        """
        self._check_params()
        dtype = str(np.asarray(x).dtype)
        x = as_images(x)
        fit_part, held_out = split_holdout(x, self.holdout, self.seed)
        self.normalizer_ = baseline_normalizer(
            self.normalizer, fit_part, low=self.low, high=self.high, dtype=dtype
        )
        features = self._features(fit_part).permute(0, 2, 3, 1).reshape(-1, 7 * len(SIGMAS))
        rng = as_generator(self.seed)
        if len(features) > FIT_PIXELS:
            features = features[torch.from_numpy(rng.choice(len(features), FIT_PIXELS, False))]
        features = features.double().numpy()
        covariance, _ = shrunk_covariance(features)
        self.mean_ = features.mean(axis=0)
        self.precision_ = np.linalg.inv(covariance)
        self.precision_ = 0.5 * (self.precision_ + self.precision_.T)
        record, self.pixel_threshold_ = held_out_thresholds(
            self._maps(held_out),
            reduce=self.reduce,
            target_fpr=self.target_fpr,
            seed=self.seed,
            names=(self.score_name, "filter-gaussian"),
        )
        self._set_threshold(record)
        return self
