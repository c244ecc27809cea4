"""The ``"typicality"`` score: how atypical the reconstruction error is, in either direction.

An autoencoder trained on EM reconstructs busy tissue (membranes, vesicles) worse than smooth
regions. Many artifacts are *smoother* than tissue: a defocused or charged region, a fold's
core, a scratch's flat band. Their reconstruction error is then lower than that of normal
tissue, and every score that ranks by "how badly reconstructed" ranks them as normal (on the
sample data, AUROC below 0.5). What sets them apart is that their error is atypical for what
the region looks like to a microscope.

:class:`TypicalityStatistics` learns, on normal patches, the mean and standard deviation of the
*log* smoothed squared error for each kind of local structure (pixels binned by local standard
deviation, as in :class:`~emae.normal_stats.ErrorStatistics`). A pixel's anomaly is the squared
z-score of its log error, averaged over a Gaussian neighbourhood of ``aggregate_sigma`` pixels::

    z = (log e - mean(structure)) / std(structure)        anomaly = G_sigma * z**2

so both "too hard to reconstruct for its structure" (dust, burnt spots) and "too easy" (defocus,
charging) score high, and isolated noisy pixels are averaged away. The log makes the error's
distribution per bin close to symmetric, so the two directions are weighed alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn

from emae.error_maps import as_images, local_std, pixel_error_map, reconstruct
from emae.errors import EmaeError
from emae.normal_stats import _check_fitted, _NormalStatistics, binned_statistics

#: Added to the squared error before the log, in squared normalized-intensity units.
LOG_EPS = 1e-6


class TypicalityStatistics(_NormalStatistics):
    """Per-structure statistics of the log reconstruction error; anomaly = smoothed z squared.

    Parameters
    ----------
    n_bins
        Number of local-structure bins (equal numbers of normal pixels; fewer when values tie).
    structure_sigma
        Gaussian window in pixels of the local standard deviation.
    smooth_sigma
        Smoothing in pixels of the squared error before the log.
    aggregate_sigma
        Gaussian window in pixels over which the squared z-scores are averaged.

    Attributes
    ----------
    centers_ : numpy.ndarray
        ``(B,)`` float64 median local standard deviation per bin, increasing.
    mean_, std_ : numpy.ndarray
        ``(B,)`` float64 mean and standard deviation of the log error per bin.
    """

    _PREFIX = "typicality_statistics"
    _FITTED = "std_"
    _NAMES = ("centers", "mean", "std", "structure_sigma", "smooth_sigma", "aggregate_sigma")

    def __init__(
        self,
        *,
        n_bins: int = 16,
        structure_sigma: float = 2.0,
        smooth_sigma: float = 2.0,
        aggregate_sigma: float = 6.0,
    ) -> None:
        self.n_bins = n_bins
        self.structure_sigma = structure_sigma
        self.smooth_sigma = smooth_sigma
        self.aggregate_sigma = aggregate_sigma

    def _log_error_and_structure(
        self, model: nn.Module, x: np.ndarray, batch_size: int, device: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        recon = reconstruct(model, x, batch_size=batch_size, device=device)
        error = pixel_error_map(x, recon, kind="mse", smooth_sigma=self.smooth_sigma)
        return np.log(error.astype(np.float64) + LOG_EPS), local_std(x, self.structure_sigma)

    def fit(
        self,
        model: nn.Module,
        patches: Any,
        *,
        batch_size: int = 32,
        device: str | torch.device | None = None,
    ) -> TypicalityStatistics:
        """Learn the log error per structure bin from normal ``patches`` ``(N, H, W)``."""
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, int) or self.n_bins < 1:
            raise EmaeError(f"n_bins must be a positive int, got {self.n_bins!r}")
        if not (self.structure_sigma > 0 and self.aggregate_sigma >= 0):
            raise EmaeError(
                f"structure_sigma must be > 0 and aggregate_sigma >= 0 pixels, got "
                f"{self.structure_sigma!r} and {self.aggregate_sigma!r}"
            )
        patches = as_images(patches, "patches")
        log_error, structure = self._log_error_and_structure(model, patches, batch_size, device)
        self.centers_, self.mean_, self.std_ = binned_statistics(log_error, structure, self.n_bins)
        return self

    def anomaly_map(
        self,
        model: nn.Module,
        x: Any,
        *,
        batch_size: int = 32,
        device: str | torch.device | None = None,
    ) -> np.ndarray:
        """The smoothed squared z-score of the log error: ``(N, H, W)`` float32, >= 0."""
        _check_fitted(self, "std_")
        log_error, structure = self._log_error_and_structure(
            model, as_images(x), batch_size, device
        )
        mean = np.interp(structure, self.centers_, self.mean_)
        std = np.interp(structure, self.centers_, self.std_)
        z2 = ((log_error - mean) / std) ** 2
        if self.aggregate_sigma > 0:
            z2 = ndi.gaussian_filter(z2, (0, self.aggregate_sigma, self.aggregate_sigma))
        return z2.astype(np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "centers": self.centers_,
            "mean": self.mean_,
            "std": self.std_,
            "structure_sigma": np.array(self.structure_sigma, dtype=np.float64),
            "smooth_sigma": np.array(self.smooth_sigma, dtype=np.float64),
            "aggregate_sigma": np.array(self.aggregate_sigma, dtype=np.float64),
        }

    @classmethod
    def _from_state(
        cls,
        centers: np.ndarray,
        mean: np.ndarray,
        std: np.ndarray,
        structure_sigma: np.ndarray,
        smooth_sigma: np.ndarray,
        aggregate_sigma: np.ndarray,
    ) -> TypicalityStatistics:
        if not (centers.ndim == 1 and centers.shape == mean.shape == std.shape and centers.size):
            raise EmaeError(
                f"typicality statistics: centers {centers.shape}, mean {mean.shape} and std "
                f"{std.shape} should be three equal (B,) arrays"
            )
        stats = cls(
            n_bins=centers.size,
            structure_sigma=float(structure_sigma),
            smooth_sigma=float(smooth_sigma),
            aggregate_sigma=float(aggregate_sigma),
        )
        stats.centers_ = centers.astype(np.float64)
        stats.mean_ = mean.astype(np.float64)
        stats.std_ = std.astype(np.float64)
        return stats
