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

Reconstruction error alone tends to rank smooth artifacts as normal: a smooth region is easier
to reconstruct than sharp tissue. The last two scores compare with what normal data looks like
to the model instead. The statistics they need are fitted on normal
patches (scikit-learn contract: ``fit`` returns ``self``, learned attributes end in ``_``) and
round-trip exactly through :meth:`~FeatureStatistics.to_arrays` and ``from_arrays`` for the
model folder. :func:`anomaly_maps` is the one entry point for all four; :func:`patch_scores`
reduces maps to one score per image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from torch import Tensor, nn

from emae.errors import EmaeError, NotFittedError
from emae.losses import ssim_map
from emae.models.blocks import center_crop

Reduce = Literal["mean", "max", "p99"]
SCORES: tuple[str, ...] = ("pixel", "ssim", "feature", "error-z")
REDUCTIONS: tuple[str, ...] = ("mean", "max", "p99")
#: Floor of a bin's error standard deviation, relative to the error's overall standard deviation.
STD_FLOOR = 0.01
#: Smallest eigenvalue of a feature covariance relative to its largest, below which it is singular.
MIN_EIGENVALUE = 1e-12


def _images(x: Any, what: str = "x") -> np.ndarray:
    """``x`` as a C-contiguous float32 ``(N, H, W)`` array of finite values."""
    a = np.asarray(x)
    if a.ndim != 3 or a.dtype.kind not in "uif" or 0 in a.shape:
        raise EmaeError(
            f"{what} must be a non-empty (N, H, W) array of numbers, "
            f"got shape {a.shape} dtype {a.dtype}"
        )
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise EmaeError(f"{what} of shape {a.shape} holds NaN or infinite values")
    return a


def _same_shape(x: np.ndarray, recon: np.ndarray) -> None:
    if x.shape != recon.shape:
        raise EmaeError(f"x and recon must have the same shape, got {x.shape} and {recon.shape}")


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd inside the block; the model's previous mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _batched(
    model: nn.Module,
    fn: Callable[[Tensor], Tensor],
    x: np.ndarray,
    *,
    batch_size: int,
    device: str | torch.device | None,
) -> np.ndarray:
    """``fn`` applied to ``(B, 1, H, W)`` batches of ``x``: outputs concatenated, float32, CPU.

    ``device=None`` uses the device of the model's parameters; another device moves the model.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EmaeError(f"batch_size must be a positive int, got {batch_size!r}")
    if device is None:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
    else:
        model.to(device)
    outputs = []
    with _evaluating(model):
        for start in range(0, len(x), batch_size):
            batch = torch.from_numpy(x[start : start + batch_size, None]).to(device)
            outputs.append(fn(batch).float().cpu().numpy())
    return np.concatenate(outputs)


def reconstruct(
    model: nn.Module,
    x: Any,
    *,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Reconstructions of ``x`` by an autoencoder, in eval mode and without autograd.

    Parameters
    ----------
    model
        Maps ``(B, 1, H, W)`` to ``(B, 1, H, W)``; its train/eval mode is restored afterwards.
    x
        ``(N, H, W)`` normalized images, float32 (other real dtypes are converted).
    batch_size
        Images per forward pass.
    device
        Where to compute; ``None`` uses the model's device, another device moves the model.

    Returns
    -------
    numpy.ndarray
        ``(N, H, W)`` float32.
    """
    x = _images(x)
    return _batched(model, model, x, batch_size=batch_size, device=device)[:, 0]


def pixel_error_map(
    x: Any, recon: Any, *, kind: Literal["mse", "l1"] = "mse", smooth_sigma: float = 2.0
) -> np.ndarray:
    """Per-pixel reconstruction error, Gaussian-smoothed within each image.

    Parameters
    ----------
    x, recon
        ``(N, H, W)`` images and their reconstructions.
    kind
        ``"mse"`` for ``(x - recon)**2``, ``"l1"`` for ``|x - recon|``.
    smooth_sigma
        Standard deviation in pixels of the smoothing (reflect at the borders); 0 for none.

    Returns
    -------
    numpy.ndarray
        ``(N, H, W)`` float32, non-negative.
    """
    x, recon = _images(x), _images(recon, "recon")
    _same_shape(x, recon)
    if kind not in ("mse", "l1"):
        raise EmaeError(f"kind must be 'mse' or 'l1', got {kind!r}")
    if not smooth_sigma >= 0:
        raise EmaeError(f"smooth_sigma must be >= 0 pixels, got smooth_sigma={smooth_sigma}")
    diff = x - recon
    error = diff * diff if kind == "mse" else np.abs(diff)
    if smooth_sigma > 0:
        error = ndi.gaussian_filter(error, (0, smooth_sigma, smooth_sigma), mode="reflect")
    return error.astype(np.float32, copy=False)


def ssim_error_map(x: Any, recon: Any) -> np.ndarray:
    """``1 - SSIM`` of each image and its reconstruction (:func:`emae.losses.ssim_map`).

    Parameters
    ----------
    x, recon
        ``(N, H, W)`` images and reconstructions, H and W > 5 (the 11-pixel SSIM window).

    Returns
    -------
    numpy.ndarray
        ``(N, H, W)`` float32 in ``[0, 2]``, 0 where the images agree.
    """
    x, recon = _images(x), _images(recon, "recon")
    _same_shape(x, recon)
    s = ssim_map(torch.from_numpy(x[:, None]), torch.from_numpy(recon[:, None]))
    return (1.0 - s[:, 0]).numpy().astype(np.float32, copy=False)


def local_std(x: Any, sigma: float) -> np.ndarray:
    """Gaussian-weighted local standard deviation of each image: ``(N, H, W)`` float32.

    ``sqrt(G(x**2) - G(x)**2)`` with ``G`` a Gaussian of ``sigma`` pixels (reflect borders).
    """
    x = _images(x).astype(np.float64)
    s = (0, sigma, sigma)
    mean = ndi.gaussian_filter(x, s, mode="reflect")
    var = ndi.gaussian_filter(x * x, s, mode="reflect") - mean * mean
    return np.sqrt(np.maximum(var, 0.0)).astype(np.float32)


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


def _check_fitted(stats: object, attribute: str) -> None:
    if not hasattr(stats, attribute):
        name = type(stats).__name__
        raise NotFittedError(f"this {name} is not fitted yet; call fit(model, patches) first")


def _take(arrays: Mapping[str, np.ndarray], prefix: str, names: tuple[str, ...]) -> list:
    missing = [f"{prefix}.{n}" for n in names if f"{prefix}.{n}" not in arrays]
    if missing:
        raise EmaeError(f"scoring arrays lack {', '.join(missing)}; found {sorted(arrays)}")
    return [np.asarray(arrays[f"{prefix}.{n}"]) for n in names]


class FeatureStatistics:
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

    def __init__(self, *, shrinkage: float | None = None) -> None:
        self.shrinkage = shrinkage

    def fit(
        self,
        model: nn.Module,
        patches: Any,
        *,
        batch_size: int = 32,
        device: str | torch.device | None = None,
    ) -> FeatureStatistics:
        """Estimate the statistics from normal ``patches``: ``(N, H, W)`` normalized float32."""
        if self.shrinkage is not None and not 0.0 <= self.shrinkage <= 1.0:
            raise EmaeError(f"shrinkage must be None or in [0, 1], got {self.shrinkage!r}")
        patches = _images(patches, "patches")
        features = _batched(model, model.features, patches, batch_size=batch_size, device=device)
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
    ) -> np.ndarray:
        """Squared Mahalanobis distance of the features, bilinearly upsampled: ``(N, H, W)``.

        The ``(N, h, w)`` distances sit at the centres of the ``m x m`` cells of the padded
        input (``m = model.downsample_factor``); they are upsampled to ``(N, h*m, w*m)`` and
        cropped like the model crops its reconstruction, so they align with ``x``.
        """
        _check_fitted(self, "precision_")
        x = _images(x)
        features = _batched(model, model.features, x, batch_size=batch_size, device=device)
        if features.shape[1] != self.mean_.size:
            raise EmaeError(
                f"the model gives {features.shape[1]} feature channels; these "
                f"statistics were fitted on {self.mean_.size}"
            )
        d = features.transpose(0, 2, 3, 1).astype(np.float64) - self.mean_  # (N, h, w, C)
        distance = np.einsum("...i,ij,...j->...", d, self.precision_, d, optimize=True)
        m = model.downsample_factor
        coarse = torch.from_numpy(distance.astype(np.float32)[:, None])  # (N, 1, h, w)
        fine = F.interpolate(coarse, scale_factor=m, mode="bilinear", align_corners=False)
        return center_crop(fine, x.shape[-2:])[:, 0].numpy().copy()

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The learned state as named arrays (float64, exact) for ``scoring.safetensors``."""
        _check_fitted(self, "precision_")
        p = self._PREFIX
        return {
            f"{p}.mean": self.mean_,
            f"{p}.precision": self.precision_,
            f"{p}.shrinkage": np.array(self.shrinkage_, dtype=np.float64),
            f"{p}.n_vectors": np.array(self.n_vectors_, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> FeatureStatistics:
        """A fitted instance from :meth:`to_arrays` output; gives identical anomaly maps."""
        names = ("mean", "precision", "shrinkage", "n_vectors")
        mean, precision, shrinkage, n_vectors = _take(arrays, cls._PREFIX, names)
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


class ErrorStatistics:
    """The reconstruction error normal data shows for each kind of local structure.

    Pixels are binned by the local standard deviation of the input (flat regions to busy
    membranes; ``n_bins`` bins with equal numbers of normal pixels). For each bin the mean and
    standard deviation of the smoothed squared error (:func:`pixel_error_map`) on normal patches
    are learned. A pixel's anomaly is its error z-scored by these, interpolated linearly in the
    local standard deviation between the bins' medians (constant beyond the outer ones): high
    where the error is high *for that kind of structure*, e.g. a charged region: flat, but
    brighter and harder to reconstruct than normal flat cytoplasm. A defocused region is flat
    *and* easy to reconstruct, so neither this score nor the reconstruction error sees it.

    Parameters
    ----------
    n_bins
        Number of local-structure bins (fewer when many pixels share a value).
    structure_sigma
        Gaussian window in pixels of the local standard deviation.
    smooth_sigma
        Smoothing in pixels of the squared error (see :func:`pixel_error_map`).

    Attributes
    ----------
    centers_ : numpy.ndarray
        ``(B,)`` float64 median local standard deviation of each bin, increasing.
    mean_, std_ : numpy.ndarray
        ``(B,)`` float64 mean and standard deviation of the error in each bin; ``std_`` is at
        least :data:`STD_FLOOR` times the error's overall standard deviation.
    """

    _PREFIX = "error_statistics"

    def __init__(
        self, *, n_bins: int = 16, structure_sigma: float = 2.0, smooth_sigma: float = 2.0
    ) -> None:
        self.n_bins = n_bins
        self.structure_sigma = structure_sigma
        self.smooth_sigma = smooth_sigma

    def _error_and_structure(
        self, model: nn.Module, x: np.ndarray, batch_size: int, device: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        recon = reconstruct(model, x, batch_size=batch_size, device=device)
        error = pixel_error_map(x, recon, kind="mse", smooth_sigma=self.smooth_sigma)
        return error, local_std(x, self.structure_sigma)

    def fit(
        self,
        model: nn.Module,
        patches: Any,
        *,
        batch_size: int = 32,
        device: str | torch.device | None = None,
    ) -> ErrorStatistics:
        """Learn the error per structure bin from normal ``patches``: ``(N, H, W)`` float32."""
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, int) or self.n_bins < 1:
            raise EmaeError(f"n_bins must be a positive int, got {self.n_bins!r}")
        if not self.structure_sigma > 0:
            raise EmaeError(f"structure_sigma must be > 0 pixels, got {self.structure_sigma!r}")
        patches = _images(patches, "patches")
        error, structure = self._error_and_structure(model, patches, batch_size, device)
        error, structure = error.ravel().astype(np.float64), structure.ravel().astype(np.float64)
        edges = np.unique(np.quantile(structure, np.linspace(0, 1, self.n_bins + 1)))
        bins = np.clip(np.searchsorted(edges, structure, side="right") - 1, 0, len(edges) - 2)
        used = np.unique(bins) if len(edges) > 1 else np.zeros(1, dtype=np.intp)
        floor = STD_FLOOR * error.std() + np.finfo(np.float64).tiny
        centers, means, stds = [], [], []
        for b in used:
            inside = bins == b
            centers.append(np.median(structure[inside]))
            means.append(error[inside].mean())
            stds.append(max(error[inside].std(), floor))
        self.centers_ = np.asarray(centers)
        self.mean_ = np.asarray(means)
        self.std_ = np.asarray(stds)
        return self

    def anomaly_map(
        self,
        model: nn.Module,
        x: Any,
        *,
        batch_size: int = 32,
        device: str | torch.device | None = None,
    ) -> np.ndarray:
        """The z-scored reconstruction error of ``x``: ``(N, H, W)`` float32."""
        _check_fitted(self, "std_")
        error, structure = self._error_and_structure(model, _images(x), batch_size, device)
        mean = np.interp(structure, self.centers_, self.mean_)
        std = np.interp(structure, self.centers_, self.std_)
        return ((error - mean) / std).astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The learned state and the two window sizes as named float64 arrays."""
        _check_fitted(self, "std_")
        p = self._PREFIX
        return {
            f"{p}.centers": self.centers_,
            f"{p}.mean": self.mean_,
            f"{p}.std": self.std_,
            f"{p}.structure_sigma": np.array(self.structure_sigma, dtype=np.float64),
            f"{p}.smooth_sigma": np.array(self.smooth_sigma, dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ErrorStatistics:
        """A fitted instance from :meth:`to_arrays` output; gives identical anomaly maps."""
        names = ("centers", "mean", "std", "structure_sigma", "smooth_sigma")
        centers, mean, std, structure_sigma, smooth_sigma = _take(arrays, cls._PREFIX, names)
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


#: The scores that need fitted statistics, and their class.
STATISTICS: dict[str, type[FeatureStatistics] | type[ErrorStatistics]] = {
    "feature": FeatureStatistics,
    "error-z": ErrorStatistics,
}


def anomaly_maps(
    model: nn.Module,
    x: Any,
    *,
    score: str,
    stats: FeatureStatistics | ErrorStatistics | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Anomaly maps of ``x`` under one of :data:`SCORES`.

    Parameters
    ----------
    model
        The autoencoder (``(B, 1, H, W) -> (B, 1, H, W)``, with ``features``).
    x
        ``(N, H, W)`` normalized images, float32.
    score
        ``"pixel"`` or ``"ssim"`` (no statistics), ``"feature"`` or ``"error-z"`` (``stats``
        must be a fitted instance of the class in :data:`STATISTICS`).
    stats
        Fitted statistics for the scores that need them; must be ``None`` for the others.
    batch_size, device
        See :func:`reconstruct`.

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
        return stats.anomaly_map(model, x, batch_size=batch_size, device=device)
    x = _images(x)
    recon = reconstruct(model, x, batch_size=batch_size, device=device)
    return pixel_error_map(x, recon) if score == "pixel" else ssim_error_map(x, recon)


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
    maps = _images(maps, "maps")
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
