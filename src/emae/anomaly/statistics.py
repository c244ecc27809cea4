"""Statistics of normal data that turn model outputs into anomaly maps (fitted scores).

:class:`FeatureStatistics` (score ``"feature"``) and :class:`ErrorStatistics` (score
``"error-z"``) are fitted on normal patches (scikit-learn contract: ``fit`` returns ``self``,
learned attributes end in ``_``) and round-trip exactly through ``to_arrays`` and
``from_arrays`` for the model folder. They build on :mod:`emae.anomaly.maps`;
:mod:`emae.anomaly.scores` re-exports them and dispatches to them.

The maps are computed in torch, float32, on the model's device, one batch at a time right
after the forward pass (:func:`~emae.anomaly.maps.batched_apply` with ``then``); fitting runs
the same computation and estimates the statistics in numpy, float64.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emae.anomaly.filters import interp, local_std
from emae.anomaly.maps import as_images, batched_apply, pixel_error
from emae.errors import EmaeError, NotFittedError
from emae.models.blocks import center_crop

#: Floor of a bin's error standard deviation, relative to the error's overall standard deviation.
STD_FLOOR = 0.01
#: Smallest eigenvalue of a feature covariance relative to its largest, below which it is singular.
MIN_EIGENVALUE = 1e-12
#: Largest magnitude of an error z-score: its square and sums of squares stay finite in float32.
MAX_Z = 1e15

_S = TypeVar("_S", bound="_NormalStatistics")


def shrunk_covariance(vectors: Any, shrinkage: float | None = None) -> tuple[np.ndarray, float]:
    """Covariance of ``vectors`` shrunk towards ``mu * I``, ``mu = trace(S) / p``.

    ``(1 - a) * S + a * mu * I`` with ``S`` the sample covariance (normalized by n). With
    ``shrinkage=None`` the weight ``a`` is the Ledoit-Wolf estimate (Ledoit & Wolf, 2004), the
    one minimizing the expected squared error: ``a = min(b2, d2) / d2`` with
    ``d2 = ||S - mu I||^2`` and ``b2 = sum_k ||x_k x_k^T - S||^2 / n^2`` over the centered rows.

    Parameters
    ----------
    vectors
        ``(n, p)`` samples, n >= 2.
    shrinkage
        A fixed weight in ``[0, 1]``, or ``None`` for Ledoit-Wolf.

    Returns
    -------
    covariance : numpy.ndarray
        ``(p, p)`` float64.
    shrinkage : float
        The weight ``a`` used.
    """
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=0)
    n, p = x.shape
    cov = x.T @ x / n
    mu = np.trace(cov) / p
    if shrinkage is None:
        d2 = np.sum((cov - mu * np.eye(p)) ** 2)
        # sum_k ||x_k x_k^T||^2 = sum_k |x_k|^4, and sum_k <x_k x_k^T, S> = n ||S||^2.
        b2 = (np.sum(np.sum(x * x, axis=1) ** 2) / n - np.sum(cov * cov)) / n
        shrinkage = 0.0 if d2 == 0 else float(min(max(b2, 0.0), d2) / d2)
    return (1.0 - shrinkage) * cov + shrinkage * mu * np.eye(p), float(shrinkage)


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


def _check_fitted(stats: object, attribute: str) -> None:
    if not hasattr(stats, attribute):
        name = type(stats).__name__
        raise NotFittedError(f"this {name} is not fitted yet; call fit(model, patches) first")


def _take(arrays: Mapping[str, np.ndarray], prefix: str, names: tuple[str, ...]) -> list:
    missing = [f"{prefix}.{n}" for n in names if f"{prefix}.{n}" not in arrays]
    if missing:
        raise EmaeError(f"scoring arrays lack {', '.join(missing)}; found {sorted(arrays)}")
    return [np.asarray(arrays[f"{prefix}.{n}"]) for n in names]


class _NormalStatistics:
    """Shared scaffolding: the learned state as named arrays under ``<_PREFIX>.<name>``."""

    _PREFIX: str
    #: Attribute set by ``fit``: its absence means not fitted.
    _FITTED: str
    #: Names of the arrays, in the order ``_from_state`` takes them.
    _NAMES: tuple[str, ...]

    def _state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @classmethod
    def _from_state(cls: type[_S], *arrays: np.ndarray) -> _S:
        raise NotImplementedError

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The learned state as named arrays (exact) for ``scoring.safetensors``."""
        _check_fitted(self, self._FITTED)
        return {f"{self._PREFIX}.{name}": a for name, a in self._state().items()}

    @classmethod
    def from_arrays(cls: type[_S], arrays: Mapping[str, np.ndarray]) -> _S:
        """A fitted instance from :meth:`to_arrays` output; gives identical anomaly maps."""
        return cls._from_state(*_take(arrays, cls._PREFIX, cls._NAMES))


class FeatureStatistics(_NormalStatistics):
    """Gaussian model of the encoder's features on normal data; anomaly = Mahalanobis distance.

    Every spatial position of ``model.features(x)`` (``(N, C, h, w)``) gives one C-vector. EM
    texture is stationary, so one mean and covariance are shared by all positions and any image
    size can be scored. The covariance is shrunk towards a multiple of the identity, by the
    Ledoit-Wolf weight or a fixed one (:func:`shrunk_covariance`), so its inverse stays stable
    when the features are many or correlated.

    Features must describe their neighbourhood only. A model with per-image normalization
    (``norm="group"``) normalizes each feature map over the whole input: a local artifact then
    shifts the features everywhere, and an image's overall brightness and contrast are
    normalized away, so charging or a washed-out region barely moves them. Models with
    ``norm="batch"`` (running statistics in eval mode) or ``norm="none"`` keep features local.

    Parameters
    ----------
    shrinkage
        Weight in ``[0, 1]`` of ``trace(S) / C * I`` in the covariance; ``None`` (default)
        estimates it with Ledoit-Wolf.

    Attributes
    ----------
    mean_ : numpy.ndarray
        ``(C,)`` float64 mean feature vector.
    precision_ : numpy.ndarray
        ``(C, C)`` float64 inverse of the shrunk covariance.
    shrinkage_ : float
        The shrinkage weight used.
    n_vectors_ : int
        Feature vectors the statistics were estimated from (patches times positions).
    """

    _PREFIX = "feature_statistics"
    _FITTED = "precision_"
    _NAMES = ("mean", "precision", "shrinkage", "n_vectors")

    def __init__(self, *, shrinkage: float | None = None) -> None:
        self.shrinkage = shrinkage

    def fit(
        self,
        model: nn.Module,
        patches: Any,
        *,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        precision: str = "fp32",
    ) -> FeatureStatistics:
        """Estimate the statistics from normal ``patches``: ``(N, H, W)`` normalized float32."""
        if self.shrinkage is not None and not 0.0 <= self.shrinkage <= 1.0:
            raise EmaeError(f"shrinkage must be None or in [0, 1], got {self.shrinkage!r}")
        patches = as_images(patches, "patches")
        features = batched_apply(
            model, "features", patches, batch_size=batch_size, device=device, precision=precision
        )
        vectors = features.transpose(0, 2, 3, 1).reshape(-1, features.shape[1])  # (N*h*w, C)
        if len(vectors) < 2:
            raise EmaeError(f"need at least 2 feature vectors to fit, got {len(vectors)}")
        cov, shrinkage = shrunk_covariance(vectors, self.shrinkage)
        eigenvalues, eigenvectors = np.linalg.eigh(cov)
        if not eigenvalues[0] > MIN_EIGENVALUE * eigenvalues[-1]:
            raise EmaeError(
                f"the covariance of {len(vectors)} feature vectors is singular "
                f"(shrinkage={shrinkage}); use more patches or shrinkage > 0"
            )
        precision = (eigenvectors / eigenvalues) @ eigenvectors.T
        self.mean_ = vectors.mean(axis=0, dtype=np.float64)
        self.precision_ = (precision + precision.T) / 2
        self.shrinkage_ = shrinkage
        self.n_vectors_ = len(vectors)
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
        """Squared Mahalanobis distance of the features, bilinearly upsampled: ``(N, H, W)``.

        The ``(N, h, w)`` distances sit at the centres of the ``m x m`` cells of the padded
        input (``m = model.downsample_factor``); they are upsampled to ``(N, h*m, w*m)`` and
        cropped like the model crops its reconstruction, so they align with ``x``.
        """
        _check_fitted(self, "precision_")
        x = as_images(x)
        channels, m = self.mean_.size, model.downsample_factor
        # precision_ = W W^T, so d^T precision_ d = |d W|^2: a sum of squares, which float32
        # computes with less cancellation than d^T (precision_ d).
        eigenvalues, eigenvectors = np.linalg.eigh(self.precision_)
        whitening = eigenvectors * np.sqrt(np.maximum(eigenvalues, 0.0))  # (C, C)

        def distance(inputs: Tensor, features: Tensor) -> Tensor:
            if features.shape[1] != channels:
                raise EmaeError(
                    f"the model gives {features.shape[1]} feature channels; these "
                    f"statistics were fitted on {channels}"
                )
            mean = torch.as_tensor(self.mean_, dtype=torch.float32, device=features.device)
            w = torch.as_tensor(whitening, dtype=torch.float32, device=features.device)
            d = features.movedim(1, -1) - mean  # (B, h, w, C)
            coarse = (d @ w).square().sum(dim=-1)  # (B, h, w)
            fine = F.interpolate(
                coarse[:, None], scale_factor=m, mode="bilinear", align_corners=False
            )  # (B, 1, h*m, w*m)
            return center_crop(fine, inputs.shape[-2:])[:, 0]

        return batched_apply(
            model,
            "features",
            x,
            batch_size=batch_size,
            device=device,
            precision=precision,
            then=distance,
        )

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "mean": self.mean_,
            "precision": self.precision_,
            "shrinkage": np.array(self.shrinkage_, dtype=np.float64),
            "n_vectors": np.array(self.n_vectors_, dtype=np.int64),
        }

    @classmethod
    def _from_state(
        cls, mean: np.ndarray, precision: np.ndarray, shrinkage: np.ndarray, n_vectors: np.ndarray
    ) -> FeatureStatistics:
        if mean.ndim != 1 or precision.shape != (mean.size, mean.size):
            raise EmaeError(
                f"feature statistics: mean {mean.shape} and precision "
                f"{precision.shape} should be (C,) and (C, C)"
            )
        stats = cls()
        stats.mean_ = mean.astype(np.float64)
        stats.precision_ = precision.astype(np.float64)
        stats.shrinkage_ = float(shrinkage)
        stats.n_vectors_ = int(n_vectors)
        return stats


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
