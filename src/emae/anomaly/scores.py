"""Anomaly maps of an autoencoder: where an image departs from the normal tissue it learned.

Every score maps normalized images ``(N, H, W)`` float32 (axes ``"NYX"``) to an anomaly map
``(N, H, W)`` float32 of the same size, larger = more anomalous:

``"pixel"``
    Squared reconstruction error, Gaussian-smoothed (:func:`pixel_error_map`).
``"ssim"``
    ``1 - SSIM`` of input and reconstruction (:func:`ssim_error_map`).
``"feature"``
    Squared Mahalanobis distance of the encoder's feature vector at each position to the
    feature statistics of normal patches (:class:`FeatureStatistics`).
``"error-z"``
    Reconstruction error z-scored by the error normal patches show for the same local
    structure (:class:`ErrorStatistics`).
``"typicality"``
    The squared z-score of the *log* error for the local structure, averaged over a
    neighbourhood (:class:`~emae.anomaly.typicality.TypicalityStatistics`): high where the error is
    atypically high *or low*, which catches the smooth artifacts the others rank as normal.
``"discriminative"``
    The logit of a small segmenter that reads the image and its reconstruction, trained on
    artifacts drawn onto normal patches (:class:`~emae.anomaly.discriminative.DiscriminativeHead`,
    DRAEM-style).

Reconstruction error alone tends to rank smooth artifacts as normal: a smooth region is easier
to reconstruct than sharp tissue. The last two scores compare with what normal data looks like
to the model instead. The statistics they need are fitted on normal
patches (scikit-learn contract: ``fit`` returns ``self``, learned attributes end in ``_``) and
round-trip exactly through :meth:`~FeatureStatistics.to_arrays` and ``from_arrays`` for the
model folder. :func:`anomaly_maps` is the one entry point for all five; :func:`patch_scores`
reduces maps to one score per image.

Every map is computed in torch, float32, on the model's device, batch by batch right after the
forward pass; only the finished maps come back to the CPU.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from emae.anomaly.discriminative import DiscriminativeHead
from emae.anomaly.error_statistics import STD_FLOOR, ErrorStatistics
from emae.anomaly.maps import (
    as_images,
    batched_apply,
    local_std,
    pixel_error,
    pixel_error_map,
    reconstruct,
    ssim_error,
    ssim_error_map,
)
from emae.anomaly.statistics import MIN_EIGENVALUE, FeatureStatistics, shrunk_covariance
from emae.anomaly.typicality import TypicalityStatistics
from emae.errors import EmaeError

__all__ = [
    "MIN_EIGENVALUE",
    "REDUCTIONS",
    "SCORES",
    "STATISTICS",
    "STD_FLOOR",
    "ErrorStatistics",
    "FeatureStatistics",
    "Reduce",
    "TypicalityStatistics",
    "anomaly_maps",
    "local_std",
    "patch_scores",
    "pixel_error_map",
    "reconstruct",
    "shrunk_covariance",
    "ssim_error_map",
]

Reduce = Literal["mean", "max", "p99"]
SCORES: tuple[str, ...] = ("pixel", "ssim", "feature", "error-z", "typicality", "discriminative")
REDUCTIONS: tuple[str, ...] = ("mean", "max", "p99")


#: The scores that need fitted statistics, and their class.
STATISTICS: dict[str, Any] = {
    "feature": FeatureStatistics,
    "error-z": ErrorStatistics,
    "typicality": TypicalityStatistics,
    "discriminative": DiscriminativeHead,
}


def anomaly_maps(
    model: nn.Module,
    x: Any,
    *,
    score: str,
    stats: Any = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Anomaly maps of ``x`` under one of :data:`SCORES`.

    Parameters
    ----------
    model
        The autoencoder (``(B, 1, H, W) -> (B, 1, H, W)``, with ``features``).
    x
        ``(N, H, W)`` normalized images, float32.
    score
        ``"pixel"`` or ``"ssim"`` (no statistics), ``"feature"``, ``"error-z"``,
        ``"typicality"`` or ``"discriminative"`` (``stats`` must be a fitted instance of the
        class in :data:`STATISTICS`).
    stats
        Fitted statistics for the scores that need them; must be ``None`` for the others.
    batch_size, device, precision
        See :func:`~emae.anomaly.maps.batched_apply`.

    Returns
    -------
    numpy.ndarray
        ``(N, H, W)`` float32, larger = more anomalous.
    """
    if score not in SCORES:
        raise EmaeError(f"unknown score {score!r}; known scores: {', '.join(SCORES)}")
    expected = STATISTICS.get(score)
    if expected is None and stats is not None:
        raise EmaeError(f"score {score!r} uses no statistics, got a {type(stats).__name__}")
    if expected is not None:
        if not isinstance(stats, expected):
            got = "none" if stats is None else f"a {type(stats).__name__}"
            raise EmaeError(f"score {score!r} needs a fitted {expected.__name__}, got {got}")
        return stats.anomaly_map(
            model, x, batch_size=batch_size, device=device, precision=precision
        )
    error = pixel_error if score == "pixel" else ssim_error
    return batched_apply(
        model,
        "forward",
        as_images(x),
        batch_size=batch_size,
        device=device,
        precision=precision,
        then=lambda inputs, recon: error(inputs[:, 0], recon[:, 0]),
    )


def patch_scores(maps: Any, *, reduce: Reduce = "mean") -> np.ndarray:
    """One anomaly score per map.

    Parameters
    ----------
    maps
        ``(N, H, W)`` anomaly maps.
    reduce
        ``"mean"``, ``"max"`` or ``"p99"`` (99th percentile, linear interpolation) over each map.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float32, larger = more anomalous.
    """
    maps = as_images(maps, "maps")
    maps = maps.reshape(maps.shape[0], -1)  # (N, H*W)
    if reduce == "mean":
        out = maps.mean(axis=1, dtype=np.float64)
    elif reduce == "max":
        out = maps.max(axis=1)
    elif reduce == "p99":
        out = np.percentile(maps, 99, axis=1)
    else:
        raise EmaeError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
    return out.astype(np.float32)
