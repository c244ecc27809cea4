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

from emae.anomaly.maps import as_images, batched_apply
from emae.errors import EmaeError, NotFittedError
from emae.models.blocks import center_crop

#: Smallest eigenvalue of a feature covariance relative to its largest, below which it is singular.
MIN_EIGENVALUE = 1e-12

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
