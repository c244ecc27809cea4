"""The ``"error-z"`` score: the reconstruction error z-scored by what normal data shows for the
same local structure.

:class:`ErrorStatistics` bins pixels by the local standard deviation of the input
(:func:`binned_statistics`) and learns the error's mean and standard deviation per bin on
normal patches; the map is computed in torch, float32, on the model's device, one batch at a
time right after the forward pass. :class:`~emae.anomaly.typicality.TypicalityStatistics`
builds on it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from emae.anomaly.filters import interp, local_std
from emae.anomaly.maps import as_images, batched_apply, pixel_error
from emae.anomaly.statistics import _check_fitted, _NormalStatistics
from emae.errors import EmaeError

#: Floor of a bin's error standard deviation, relative to the error's overall standard deviation.
STD_FLOOR = 0.01
#: Largest magnitude of an error z-score: its square and sums of squares stay finite in float32.
MAX_Z = 1e15


def binned_statistics(
    values: np.ndarray, structure: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std of ``values`` per bin of ``structure`` (equal-count bins, fewer on ties).

    Returns ``(centers, means, stds)``, ``(B,)`` float64 each: the median structure of each
    bin, increasing, and the values' mean and standard deviation there (at least
    :data:`STD_FLOOR` times the values' overall standard deviation).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    structure = np.asarray(structure, dtype=np.float64).ravel()
    edges = np.unique(np.quantile(structure, np.linspace(0, 1, n_bins + 1)))
    bins = np.clip(np.searchsorted(edges, structure, side="right") - 1, 0, len(edges) - 2)
    used = np.unique(bins) if len(edges) > 1 else np.zeros(1, dtype=np.intp)
    floor = STD_FLOOR * values.std() + np.finfo(np.float64).tiny
    centers, means, stds = [], [], []
    for b in used:
        inside = bins == b
        centers.append(np.median(structure[inside]))
        means.append(values[inside].mean())
        stds.append(max(values[inside].std(), floor))
    return np.asarray(centers), np.asarray(means), np.asarray(stds)


class ErrorStatistics(_NormalStatistics):
    """The reconstruction error normal data shows for each kind of local structure.

    Pixels are binned by the local standard deviation of the input (flat regions to busy
    membranes; ``n_bins`` bins with equal numbers of normal pixels). For each bin the mean and
    standard deviation of the smoothed squared error
    (:func:`~emae.anomaly.maps.pixel_error_map`) on normal patches are learned. A pixel's
    anomaly is its error z-scored by these, interpolated linearly in the local standard
    deviation between the bins' medians (constant beyond the outer ones): high where the error
    is high *for that kind of structure*, e.g. a charged region: flat, but brighter and harder
    to reconstruct than normal flat cytoplasm. A defocused region is flat *and* easy to
    reconstruct, so neither this score nor the reconstruction error sees it.

    Parameters
    ----------
    n_bins
        Number of local-structure bins (fewer when many pixels share a value).
    structure_sigma
        Gaussian window in pixels of the local standard deviation.
    smooth_sigma
        Smoothing in pixels of the squared error (see :func:`~emae.anomaly.maps.pixel_error_map`).

    Attributes
    ----------
    centers_ : numpy.ndarray
        ``(B,)`` float64 median local standard deviation of each bin, increasing.
    mean_, std_ : numpy.ndarray
        ``(B,)`` float64 mean and standard deviation of the error in each bin; ``std_`` is at
        least :data:`STD_FLOOR` times the error's overall standard deviation.
    """

    _PREFIX = "error_statistics"
    _FITTED = "std_"
    _NAMES = ("centers", "mean", "std", "structure_sigma", "smooth_sigma")

    def __init__(
        self, *, n_bins: int = 16, structure_sigma: float = 2.0, smooth_sigma: float = 2.0
    ) -> None:
        self.n_bins = n_bins
        self.structure_sigma = structure_sigma
        self.smooth_sigma = smooth_sigma

    def _error_and_structure(self, x: Tensor, recon: Tensor) -> tuple[Tensor, Tensor]:
        """The error that is z-scored and the local structure it is binned by.

        ``x`` and ``recon`` are ``(B, H, W)`` float32 on one device; returns two tensors of
        that shape: the smoothed squared error and the local standard deviation of ``x``.
        """
        error = pixel_error(x, recon, kind="mse", smooth_sigma=self.smooth_sigma)
        return error, local_std(x, self.structure_sigma)

    def _map(self, x: Tensor, recon: Tensor) -> Tensor:
        """The anomaly map of a batch: ``(B, H, W)`` float32 tensors in, one out."""
        error, structure = self._error_and_structure(x, recon)
        mean, std = interp(structure, self.centers_, np.stack([self.mean_, self.std_]))
        # The std floor of a model that reconstructs normal data exactly is float64's tiny,
        # 0 in float32: keep z finite (and its square, and sums of squares).
        z = (error - mean) / std.clamp_(min=torch.finfo(std.dtype).tiny)
        return z.clamp_(-MAX_Z, MAX_Z)

    def fit(
        self,
        model: nn.Module,
        patches: Any,
        *,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        precision: str = "fp32",
    ) -> ErrorStatistics:
        """Learn the error per structure bin from normal ``patches``: ``(N, H, W)`` float32."""
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, int) or self.n_bins < 1:
            raise EmaeError(f"n_bins must be a positive int, got {self.n_bins!r}")
        if not self.structure_sigma > 0:
            raise EmaeError(f"structure_sigma must be > 0 pixels, got {self.structure_sigma!r}")
        patches = as_images(patches, "patches")

        def error_and_structure(inputs: Tensor, recon: Tensor) -> Tensor:
            return torch.stack(self._error_and_structure(inputs[:, 0], recon[:, 0]), dim=1)

        both = batched_apply(
            model,
            "forward",
            patches,
            batch_size=batch_size,
            device=device,
            precision=precision,
            then=error_and_structure,
        )  # (N, 2, H, W)
        self.centers_, self.mean_, self.std_ = binned_statistics(
            both[:, 0], both[:, 1], self.n_bins
        )
        return self

    def anomaly_map(
        self,
        model: nn.Module,
        x: Any,
        *,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        precision: str = "fp32",
    ) -> np.ndarray:
        """The z-scored reconstruction error of ``x``: ``(N, H, W)`` float32."""
        _check_fitted(self, "std_")
        return batched_apply(
            model,
            "forward",
            as_images(x),
            batch_size=batch_size,
            device=device,
            precision=precision,
            then=lambda inputs, recon: self._map(inputs[:, 0], recon[:, 0]),
        )

    def _state(self) -> dict[str, np.ndarray]:
        """The learned state and the two window sizes, float64."""
        return {
            "centers": self.centers_,
            "mean": self.mean_,
            "std": self.std_,
            "structure_sigma": np.array(self.structure_sigma, dtype=np.float64),
            "smooth_sigma": np.array(self.smooth_sigma, dtype=np.float64),
        }

    @classmethod
    def _from_state(
        cls,
        centers: np.ndarray,
        mean: np.ndarray,
        std: np.ndarray,
        structure_sigma: np.ndarray,
        smooth_sigma: np.ndarray,
    ) -> ErrorStatistics:
        if not (centers.ndim == 1 and centers.shape == mean.shape == std.shape and centers.size):
            raise EmaeError(
                f"error statistics: centers {centers.shape}, mean {mean.shape} and "
                f"std {std.shape} should be three equal (B,) arrays"
            )
        stats = cls(
            n_bins=centers.size,
            structure_sigma=float(structure_sigma),
            smooth_sigma=float(smooth_sigma),
        )
        stats.centers_ = centers.astype(np.float64)
        stats.mean_ = mean.astype(np.float64)
        stats.std_ = std.astype(np.float64)
        return stats
