"""The anomaly detector: a trained autoencoder, a score, and a threshold, scikit-learn style.

:class:`AutoencoderDetector` wraps any registered model (the conv AE, denoising AE, VAEs and the
PCA linear autoencoder alike) with the intensity normalization it was trained with. ``fit`` learns
what normal data looks like to the model (the statistics of the chosen score) and a decision
threshold from normal images; then::

    detector.anomaly_map(x)    # (N, H, W) float32, larger = more anomalous
    detector.anomaly_score(x)  # (N,) float32, the maps reduced per image
    detector.predict(x)        # (N,) bool, anomaly_score(x) > threshold_

All three take raw images ``(N, H, W)`` (axes ``"NYX"``) in the units of the microscope, of any
size the model accepts; the detector normalizes them itself. The fitted detector is stored in
the model folder (:meth:`bundle_parts`) and rebuilt from it (:meth:`from_bundle`) with
identical scores.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emae.anomaly.base import (
    AnomalyDetector,
    check_threshold_params,
    held_out_thresholds,
    split_holdout,
)
from emae.anomaly.maps import as_images
from emae.anomaly.scores import SCORES, STATISTICS, anomaly_maps
from emae.anomaly.thresholds import Threshold
from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError
from emae.folders.autoencoder import load_bundle

#: The default score, chosen by measurement: on ISBI 2012 with drawn artifacts it has a pooled
#: pixel AUROC of 0.861 (AUPRO 0.662) against 0.42 or less for the other scores
#: (docs/benchmarks.md, "Real EM").
DEFAULT_SCORE = "typicality"


class AutoencoderDetector(AnomalyDetector):
    """Anomaly detector from a trained autoencoder.

    Parameters
    ----------
    model
        A registered model (``(B, 1, H, W) -> (B, 1, H, W)`` with ``features``), trained.
    normalizer
        The intensity normalization the model was trained with.
    score
        One of :data:`emae.anomaly.scores.SCORES`: ``"pixel"``, ``"ssim"``, ``"feature"``,
        ``"error-z"`` or ``"typicality"`` (the default, :data:`DEFAULT_SCORE`).
    reduce
        How a map becomes one score per image: ``"mean"``, ``"max"`` or ``"p99"``.
    target_fpr
        False-positive rate on normal held-out images that ``fit`` sets the thresholds at.
    holdout
        Fraction of the images given to ``fit`` kept apart to choose the thresholds; the rest
        fit the score's statistics. Thresholds chosen on the statistics' own data would flag
        fewer normal images than the target rate on new data.
    batch_size
        Images per forward pass.
    device
        Where to compute; ``None`` keeps the model where it is.
    seed
        Seed of the held-out split and the pixel subsample.
    precision
        Of the forward passes: ``"fp32"`` (default), ``"bf16"`` or ``"auto"`` (see
        :func:`emae.anomaly.maps.batched_apply`).
    score_params
        Keyword arguments of the score's statistics class (:data:`STATISTICS`), e.g.
        ``{"smooth_sigma": 2.0, "aggregate_sigma": 6.0}`` for typicality; ``None`` keeps its
        defaults. A detector loaded by :meth:`from_bundle` keeps the windows it was fitted with
        in ``stats_``.

    Attributes
    ----------
    stats_ : FeatureStatistics | ErrorStatistics | None
        Fitted statistics of the score (``None`` for ``"pixel"`` and ``"ssim"``).
    threshold_ : float
        Image scores strictly above it are anomalous (:meth:`predict`).
    threshold_record_ : Threshold
        How ``threshold_`` was chosen (method, rate, number of scores).
    pixel_threshold_ : Threshold
        The same rule for single pixels of :meth:`anomaly_map`, used to outline anomalous regions.
    model_config : dict
        The run configuration of a detector loaded by :meth:`from_bundle` (empty otherwise).
    """

    def __init__(
        self,
        model: nn.Module,
        normalizer: PercentileNormalizer,
        *,
        score: str = DEFAULT_SCORE,
        reduce: str = "mean",
        target_fpr: float = 0.01,
        holdout: float = 0.25,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        seed: int = 0,
        precision: str = "fp32",
        score_params: Mapping[str, float] | None = None,
    ) -> None:
        self.model = model
        self.normalizer = normalizer
        self.score = score
        self.reduce = reduce
        self.target_fpr = target_fpr
        self.holdout = holdout
        self.batch_size = batch_size
        self.device = device
        self.seed = seed
        self.precision = precision
        self.score_params = score_params
        self.model_config: dict[str, Any] = {}

    @property
    def score_name(self) -> str:
        """``"score/reduce"``, e.g. ``"error-z/mean"``: what the image threshold applies to."""
        return f"{self.score}/{self.reduce}"

    def _check_params(self) -> None:
        if self.score not in SCORES:
            raise EmaeError(f"unknown score {self.score!r}; known scores: {', '.join(SCORES)}")
        check_threshold_params(self.reduce, self.target_fpr, self.holdout)
        if not isinstance(self.normalizer, PercentileNormalizer):
            raise EmaeError(f"normalizer must be a PercentileNormalizer, got {self.normalizer!r}")
        if self.precision not in ("fp32", "bf16", "auto"):
            raise EmaeError(f"precision must be fp32, bf16 or auto, got {self.precision!r}")
        if self.score_params:
            stats_class = STATISTICS.get(self.score)
            if stats_class is None:
                raise EmaeError(f"score {self.score!r} takes no score_params")
            known = set(inspect.signature(stats_class).parameters)
            unknown = sorted(set(self.score_params) - known)
            if unknown:
                raise EmaeError(
                    f"score {self.score!r} takes no parameters {unknown}; "
                    f"known: {', '.join(sorted(known))}"
                )

    def _maps(self, x: Any) -> np.ndarray:
        """Anomaly maps of raw images: ``(N, H, W)`` float32."""
        self.normalizer.check_dtype(np.asarray(x).dtype, "x", "this detector", strict=False)
        return self._normalized_maps(self.normalizer(as_images(x)))

    def _normalized_maps(self, images: np.ndarray) -> np.ndarray:
        """Anomaly maps of normalized images ``(N, H, W)`` float32."""
        return anomaly_maps(
            self.model,
            images,
            score=self.score,
            stats=self.stats_,
            batch_size=self.batch_size,
            device=self.device,
            precision=self.precision,
        )

    def fit(self, x: Any, y: Any = None) -> AutoencoderDetector:
        """Learn the score's statistics and the thresholds from normal images.

        Parameters
        ----------
        x
            ``(N, H, W)`` raw images of normal data (N >= 2; a few hundred patches of the
            model's patch size are typical). A small fraction of artifacts does little harm.
        y
            Ignored; present for the scikit-learn contract. Use :meth:`threshold_from_labels`
            to choose the threshold from labeled images.

        Returns
        -------
        AutoencoderDetector
            ``self``, fitted.
        """
        self._check_params()
        self.normalizer.check_dtype(
            np.asarray(x).dtype, "x", "this detector's normalizer", strict=False
        )
        x = as_images(x)
        fit_part, held_out = split_holdout(x, self.holdout, self.seed)
        stats_class = STATISTICS.get(self.score)
        self.stats_ = None
        if stats_class is not None:
            self.stats_ = stats_class(**(self.score_params or {})).fit(
                self.model,
                self.normalizer(fit_part),
                batch_size=self.batch_size,
                device=self.device,
                precision=self.precision,
            )
        record, self.pixel_threshold_ = held_out_thresholds(
            self._normalized_maps(self.normalizer(held_out)),
            reduce=self.reduce,
            target_fpr=self.target_fpr,
            seed=self.seed,
            names=(self.score_name, self.score),
        )
        self._set_threshold(record)
        return self

    def bundle_parts(self) -> dict[str, Any]:
        """The ``scoring``, ``arrays`` and ``threshold`` arguments of :func:`save_bundle`."""
        self._check_fitted()
        scoring = {
            "score": self.score,
            "reduce": self.reduce,
            "target_fpr": self.target_fpr,
            "holdout": self.holdout,
            "seed": self.seed,
            "pixel_threshold": self.pixel_threshold_.to_dict(),
        }
        arrays = self.stats_.to_arrays() if self.stats_ is not None else {}
        return {"scoring": scoring, "arrays": arrays, "threshold": self.threshold_record_}

    @classmethod
    def from_bundle(
        cls,
        path: str | Path,
        *,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        precision: str = "fp32",
    ) -> AutoencoderDetector:
        """The fitted detector saved in a model folder (by ``emae pretrain``).

        ``precision`` is that of the forward passes (the statistics were fitted in fp32).

        Raises
        ------
        EmaeError
            When the folder holds no fitted scoring (a model saved without it).
        """
        bundle = load_bundle(path)
        scoring = bundle.scoring
        if "score" not in scoring or bundle.threshold is None:
            raise EmaeError(
                f"{path}: the model folder holds no fitted anomaly score or threshold "
                f"(scoring.json, threshold.json); fit an AutoencoderDetector and save it"
            )
        detector = cls(
            bundle.model,
            bundle.normalizer,
            score=scoring["score"],
            reduce=scoring.get("reduce", "mean"),
            target_fpr=scoring.get("target_fpr", 0.01),
            holdout=scoring.get("holdout", 0.25),
            batch_size=batch_size,
            device=device,
            seed=scoring.get("seed", 0),
            precision=precision,
        )
        detector._check_params()
        detector.model_config = dict(bundle.config)
        stats_class = STATISTICS.get(detector.score)
        detector.stats_ = stats_class.from_arrays(bundle.arrays) if stats_class else None
        detector.pixel_threshold_ = Threshold.from_dict(scoring["pixel_threshold"])
        detector._set_threshold(Threshold.from_dict(bundle.threshold))
        return detector
