"""What every anomaly detector shares: the scikit-learn contract, maps, scores and thresholds.

A detector subclasses :class:`AnomalyDetector` and implements ``fit(x)`` (learning its
statistics, then calling :meth:`~AnomalyDetector._set_thresholds` with what
:func:`held_out_thresholds` chose on held-out normal images) and ``_maps(x)`` (raw images to
anomaly maps). Everything else is here, once:

- ``anomaly_map(x)`` ``(N, H, W)`` and ``anomaly_score(x)`` ``(N,)``, larger = more anomalous;
- ``predict(x)``: ``(N,)`` bool, True where the image score is above ``threshold_`` (a bool
  rather than scikit-learn's -1/+1, which reads backwards next to "anomaly");
- the scikit-learn outlier-detector scores: ``score_samples(x) = -anomaly_score(x)`` (larger =
  more normal, as scikit-learn's detectors) and ``decision_function(x) = threshold_ -
  anomaly_score(x)`` (negative for anomalies);
- ``get_params`` / ``set_params`` / ``sklearn.base.clone`` through :class:`BaseEstimator`, and a
  :class:`~emae.errors.NotFittedError` before ``fit``;
- thresholds by hand (:meth:`set_threshold`) or from labels (:meth:`threshold_from_labels`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from emae.anomaly.scores import REDUCTIONS, patch_scores
from emae.anomaly.thresholds import Threshold
from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError, NotFittedError
from emae.runtime import as_generator

#: Pixels of the held-out maps used to choose the pixel threshold (a seeded subsample).
MAX_THRESHOLD_PIXELS = 2_000_000


def check_threshold_params(reduce: str, target_fpr: float, holdout: float) -> None:
    """The parameters every detector's thresholds use, each refused with its bad value."""
    if reduce not in REDUCTIONS:
        raise EmaeError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
    if not 0.0 <= target_fpr < 1.0:
        raise EmaeError(f"target_fpr must be a rate in [0, 1), got {target_fpr!r}")
    if not 0.0 < holdout < 1.0:
        raise EmaeError(f"holdout must be a fraction in (0, 1), got {holdout!r}")


def check_baseline_normalization(
    normalizer: PercentileNormalizer | None, low: float, high: float
) -> None:
    """A baseline's own normalizer (or None, to fit one) and its percentiles, checked."""
    if normalizer is not None and not isinstance(normalizer, PercentileNormalizer):
        raise EmaeError(f"normalizer must be None or a PercentileNormalizer, got {normalizer!r}")
    if not 0.0 <= low < high <= 100.0:
        raise EmaeError(f"percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")


def baseline_normalizer(
    normalizer: PercentileNormalizer | None,
    fit_part: np.ndarray,
    *,
    low: float,
    high: float,
    dtype: str,
) -> PercentileNormalizer:
    """``normalizer``, or one fitted on the ``low`` and ``high`` percentiles of ``fit_part``
    ``(N, H, W)`` raw images of dtype ``dtype``."""
    if normalizer is not None:
        return normalizer
    return PercentileNormalizer.from_array(
        fit_part, low=low, high=high, source_dtype=dtype, what="the fit images"
    )


def split_holdout(x: np.ndarray, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split normal images ``(N, H, W)`` into a part that fits a score and a held-out part
    that sets its thresholds (a ``holdout`` fraction, drawn with ``seed``)."""
    n_holdout = round(holdout * len(x))
    if len(x) < 2 or not 0 < n_holdout < len(x):
        raise EmaeError(
            f"fit needs normal images for both the statistics and the held-out threshold "
            f"choice; got {len(x)} image(s) with holdout={holdout}"
        )
    order = as_generator(seed).permutation(len(x))
    return x[order[n_holdout:]], x[order[:n_holdout]]


def held_out_thresholds(
    maps: np.ndarray, *, reduce: str, target_fpr: float, seed: int, names: tuple[str, str]
) -> tuple[Threshold, Threshold]:
    """Image and pixel thresholds at ``target_fpr`` from the anomaly maps ``(N, H, W)`` of
    held-out normal images; pixels are subsampled to :data:`MAX_THRESHOLD_PIXELS` (seed + 1).
    ``names`` are the recorded score names of the image and the pixel threshold."""
    record = Threshold.at_fpr(patch_scores(maps, reduce=reduce), target_fpr, score=names[0])
    pixels = maps.ravel()
    if pixels.size > MAX_THRESHOLD_PIXELS:
        rng = as_generator(seed + 1)
        pixels = pixels[rng.choice(pixels.size, MAX_THRESHOLD_PIXELS, replace=False)]
    return record, Threshold.at_fpr(pixels, target_fpr, score=names[1])


class AnomalyDetector(BaseEstimator):
    """Base of emae's anomaly detectors (see the module docstring).

    Subclasses store their keyword arguments unchanged in ``__init__`` (the scikit-learn
    rule), define :attr:`score_name`, ``fit`` and ``_maps``, and have a ``reduce`` parameter.
    """

    reduce: str

    @property
    def score_name(self) -> str:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _maps(self, x: Any) -> np.ndarray:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_record_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(normal_images) first"
            )

    def _set_threshold(self, record: Threshold) -> None:
        self.threshold_record_ = record
        self.threshold_ = record.value

    def anomaly_map(self, x: Any) -> np.ndarray:
        """Per-pixel anomaly of raw images ``(N, H, W)``: ``(N, H, W)`` float32, larger = worse."""
        self._check_fitted()
        return self._maps(x)

    def reduce_maps(self, maps: Any) -> np.ndarray:
        """Anomaly maps ``(N, H, W)`` to image scores ``(N,)`` float32, as :meth:`anomaly_score`."""
        return patch_scores(maps, reduce=self.reduce)

    def anomaly_score(self, x: Any) -> np.ndarray:
        """One anomaly score per image: ``(N,)`` float32, larger = more anomalous."""
        return self.reduce_maps(self.anomaly_map(x))

    def predict(self, x: Any) -> np.ndarray:
        """``(N,)`` bool: whether each image's score is above :attr:`threshold_`."""
        return self.anomaly_score(x) > self.threshold_

    def score_samples(self, x: Any) -> np.ndarray:
        """scikit-learn's outlier score: ``-anomaly_score(x)``, larger = more normal."""
        return -self.anomaly_score(x)

    def decision_function(self, x: Any) -> np.ndarray:
        """scikit-learn's decision: ``threshold_ - anomaly_score(x)``, negative = anomalous."""
        return self.threshold_ - self.anomaly_score(x)

    def threshold_from_labels(self, x: Any, y: Any) -> AnomalyDetector:
        """Replace the image threshold by the F1-optimal one on labeled images.

        Parameters
        ----------
        x
            ``(N, H, W)`` raw images.
        y
            ``(N,)`` labels, 1 (or True) for anomalous.
        """
        record = Threshold.best_f1(self.anomaly_score(x), y, score=self.score_name)
        self._set_threshold(record)
        return self

    def set_threshold(self, value: float) -> AnomalyDetector:
        """Use a fixed image threshold chosen by hand."""
        self._check_fitted()
        self._set_threshold(Threshold.fixed(value, score=self.score_name))
        return self
