"""Handcrafted image features for the classic baseline: an SVM on features, as in the seed paper.

:func:`handcrafted_features` maps images ``(N, H, W)`` (axes ``"NYX"``) to a feature matrix
``(N, F)`` float64 whose columns are named by :func:`feature_names`. Every image is described on
its own: no feature depends on the other images of the batch, so an image gives the same row
alone or in any batch, at fit and at predict time.

Intensity scale
---------------
Intensities are mapped to a fixed unit scale per call, never from the data: integer images by
their dtype's range (``uint8`` 0..255 and ``uint16`` 0..65535 to 0..1), float images kept as
they are (expected in ``[0, 1]``), or both by ``value_range=(low, high)`` when given (useful for
``uint16`` data that fills a small part of its range). The histogram counts values clipped to
``[0, 1]``; all other features use the unclipped values, and the ``StandardScaler`` of the
classifier takes care of their spread. Image moments treat negative values as 0.

Features, in column order (``bins=16``, ``n_radial=8`` give 74 columns)
-----------------------------------------------------------------------
- ``hist_00..``: fraction of pixels in each of ``bins`` equal bins over ``[0, 1]``.
- ``intensity_mean, _std, _skewness, _kurtosis`` (excess), ``intensity_p05 .. _p95``.
- ``moment_20 .. moment_03``: normalized central moments ``eta_pq`` (``p`` the power of x, the
  column) of order 2 and 3, and ``hu_1 .. hu_7``: Hu's invariants as
  ``sign(h) * log10(1 + |h| / 1e-12)``, a log scale that stays finite and stable at ``h = 0``.
  Of the intensities, or of the binary mask when one is given.
- ``radial_00..``: mean intensity in ``n_radial`` rings of equal width around the image centre
  (the mask's centroid when given), out to half the shorter side; an empty ring takes the value
  interpolated from its neighbours.
- ``edge_radial_00..``: mean Sobel gradient magnitude (intensity per pixel) in the same rings,
  ``edge_mean`` over the image, ``edge_density``: fraction of pixels above the Otsu threshold of
  the gradient magnitude (0 for a flat image).
- ``snr``, ``noise_std``: the noise is ``1.4826 * MAD`` of the image filtered with the kernel
  ``[[1, -2, 1], [-2, 4, -2], [1, -2, 1]] / 6`` (Immerkaer's estimator made robust: it cancels
  planes and, being a MAD, ignores the few pixels on edges; it equals sigma for white Gaussian
  noise). The signal is the standard deviation of the image smoothed by a Gaussian of sigma 2;
  ``snr = signal / max(noise, 1e-3)``.
- ``object_*``: the object is the mask when given, else the largest 8-connected component of
  the Otsu-thresholded image (smoothed with sigma 1), taking as object the side of the threshold
  that holds fewer border pixels, so dark and bright objects are both found. ``area`` (pixels),
  ``max_width`` and ``min_width`` (Feret diameters over 16 directions, pixel centres' extent
  plus one pixel), ``equiv_diameter``, ``major_axis`` and ``minor_axis`` (4 sigma of the second
  moments), ``eccentricity`` and ``contrast`` (object mean minus background mean). All 0 when no
  object is found (a flat image).
- ``glcm_contrast, _homogeneity, _energy, _correlation``: grey-level co-occurrence at distance 1
  in 4 directions (0, 45, 90, 135 degrees), symmetric, averaged over the directions, on the
  image quantized to 8 levels between its own 1st and 99th percentiles.
- ``local_var_mean, _std, _p90``: statistics of the variance in 5 x 5 windows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi
from sklearn.base import BaseEstimator, TransformerMixin

from emae.errors import EmaeError

PERCENTILES = (5, 25, 50, 75, 95)
#: ``(p, q)`` of the normalized central moments kept: powers of x (column) and y (row).
MOMENT_ORDERS = ((2, 0), (1, 1), (0, 2), (3, 0), (2, 1), (1, 2), (0, 3))
HU_SCALE = 1e-12
N_ANGLES = 16
GLCM_LEVELS = 8
GLCM_OFFSETS = ((0, 1), (1, 1), (1, 0), (1, -1))
SEGMENT_SIGMA = 1.0
SIGNAL_SIGMA = 2.0
NOISE_FLOOR = 1e-3
MAD_TO_STD = 1.4826
LOCAL_WINDOW = 5
MIN_SIDE = 3
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64) / 6.0
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_OBJECT = (
    "area",
    "max_width",
    "min_width",
    "equiv_diameter",
    "major_axis",
    "minor_axis",
    "eccentricity",
    "contrast",
)


def feature_names(*, bins: int = 16, n_radial: int = 8) -> list[str]:
    """Name of each column of :func:`handcrafted_features` for the same ``bins``, ``n_radial``."""
    _check_params(bins, n_radial)
    return [
        *(f"hist_{i:02d}" for i in range(bins)),
        *("intensity_mean", "intensity_std", "intensity_skewness", "intensity_kurtosis"),
        *(f"intensity_p{p:02d}" for p in PERCENTILES),
        *(f"moment_{p}{q}" for p, q in MOMENT_ORDERS),
        *(f"hu_{i}" for i in range(1, 8)),
        *(f"radial_{i:02d}" for i in range(n_radial)),
        *(f"edge_radial_{i:02d}" for i in range(n_radial)),
        "edge_mean",
        "edge_density",
        "snr",
        "noise_std",
        *(f"object_{name}" for name in _OBJECT),
        *("glcm_contrast", "glcm_homogeneity", "glcm_energy", "glcm_correlation"),
        *("local_var_mean", "local_var_std", "local_var_p90"),
    ]


def _check_params(bins: int, n_radial: int) -> None:
    for name, value, low in (("bins", bins, 2), ("n_radial", n_radial, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise EmaeError(f"{name} must be an int >= {low}, got {value!r}")


def _to_unit(images: Any, value_range: tuple[float, float] | None) -> np.ndarray:
    """Validated ``(N, H, W)`` float64 images on the unit scale described in the module doc."""
    a = np.asarray(images)
    if a.ndim != 3 or a.dtype.kind not in "buif" or 0 in a.shape:
        raise EmaeError(
            f"images must be a non-empty (N, H, W) array of real numbers, "
            f"got shape {a.shape} dtype {a.dtype}"
        )
    if min(a.shape[1:]) < MIN_SIDE:
        raise EmaeError(f"images must be at least {MIN_SIDE}x{MIN_SIDE}, got {a.shape[1:]}")
    bad = ~np.isfinite(a).reshape(len(a), -1).all(axis=1) if a.dtype.kind == "f" else None
    if bad is not None and bad.any():
        raise EmaeError(f"images {np.flatnonzero(bad)[:5].tolist()} hold NaN or infinite values")
    if value_range is not None:
        low, high = (float(v) for v in value_range)
        if not (np.isfinite(low) and np.isfinite(high) and high > low):
            raise EmaeError(f"value_range must be two finite numbers low < high, got {value_range}")
    elif a.dtype.kind in "iu":
        info = np.iinfo(a.dtype)
        low, high = float(info.min), float(info.max)
    else:
        low, high = 0.0, 1.0
    return (a.astype(np.float64) - low) / (high - low)


def _to_masks(masks: Any, shape: tuple[int, ...]) -> np.ndarray:
    m = np.asarray(masks)
    if m.shape != shape:
        raise EmaeError(f"masks must have the shape of the images {shape}, got {m.shape}")
    if m.dtype != bool:
        if m.dtype.kind not in "uif" or not np.isin(m, (0, 1)).all():
            raise EmaeError(f"masks must be boolean (or 0/1), got dtype {m.dtype}")
        m = m.astype(bool)
    empty = ~m.reshape(len(m), -1).any(axis=1)
    if empty.any():
        raise EmaeError(f"masks {np.flatnonzero(empty)[:5].tolist()} are empty (no True pixel)")
    return m


def otsu_threshold(values: np.ndarray, n_bins: int = 256) -> float | None:
    """Otsu's threshold of ``values`` (``values > t`` is the upper class); None if all equal."""
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return None
    counts, edges = np.histogram(values, n_bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    # The first bin holds the minimum and the last the maximum: both classes are never empty.
    w0 = np.cumsum(counts)[:-1]
    w1 = counts.sum() - w0
    s0 = np.cumsum(counts * centres)[:-1]
    m0, m1 = s0 / w0, ((counts * centres).sum() - s0) / w1
    return float(edges[1 + np.argmax(w0 * w1 * (m0 - m1) ** 2)])


def _quantiles(ordered: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Quantiles ``q`` in ``[0, 1]`` of sorted 1D values, linear as ``np.quantile``, but cheap."""
    position = q * (len(ordered) - 1)
    below = np.floor(position).astype(np.intp)
    above = np.minimum(below + 1, len(ordered) - 1)
    return ordered[below] + (position - below) * (ordered[above] - ordered[below])


def _intensity(x: np.ndarray, ordered: np.ndarray, bins: int) -> list[float]:
    index = np.minimum((np.clip(x, 0.0, 1.0) * bins).astype(np.intp), bins - 1)
    hist = np.bincount(index.ravel(), minlength=bins) / x.size
    mean, std = x.mean(), x.std()
    skew = kurt = 0.0
    if std > 1e-9:
        z2 = ((x - mean) / std) ** 2
        skew, kurt = float((z2 * (x - mean)).mean() / std), float((z2 * z2).mean() - 3.0)
    return [*hist, mean, std, skew, kurt, *_quantiles(ordered, np.array(PERCENTILES) / 100)]


def _moments(density: np.ndarray) -> list[float]:
    d = np.maximum(density, 0.0)
    m00 = d.sum()
    if m00 <= 0:
        return [0.0] * (len(MOMENT_ORDERS) + 7)
    y, x = np.arange(d.shape[0], dtype=np.float64), np.arange(d.shape[1], dtype=np.float64)
    dy = y - (d.sum(axis=1) @ y) / m00
    dx = x - (d.sum(axis=0) @ x) / m00
    powers = np.arange(4)[:, None]
    mu = (dx**powers) @ d.T @ (dy**powers).T  # (4, 4): mu[p, q] = sum d * dx**p * dy**q
    eta = {(p, q): mu[p, q] / m00 ** (1 + (p + q) / 2) for p, q in MOMENT_ORDERS}
    n20, n11, n02 = eta[2, 0], eta[1, 1], eta[0, 2]
    n30, n21, n12, n03 = eta[3, 0], eta[2, 1], eta[1, 2], eta[0, 3]
    a, b = n30 + n12, n21 + n03
    hu = [
        n20 + n02,
        (n20 - n02) ** 2 + 4 * n11**2,
        (n30 - 3 * n12) ** 2 + (3 * n21 - n03) ** 2,
        a**2 + b**2,
        (n30 - 3 * n12) * a * (a**2 - 3 * b**2) + (3 * n21 - n03) * b * (3 * a**2 - b**2),
        (n20 - n02) * (a**2 - b**2) + 4 * n11 * a * b,
        (3 * n21 - n03) * a * (a**2 - 3 * b**2) - (n30 - 3 * n12) * b * (3 * a**2 - b**2),
    ]
    hu_log = np.sign(hu) * np.log10(1 + np.abs(hu) / HU_SCALE)
    return [*eta.values(), *hu_log]


def _rings(shape: tuple[int, int], centre: tuple[float, float], n_radial: int) -> np.ndarray:
    """Ring index of each pixel, ``n_radial`` for pixels beyond the outer ring."""
    y, x = np.ogrid[: shape[0], : shape[1]]
    r = np.hypot(y - centre[0], x - centre[1])
    return np.minimum((r * (2 * n_radial / min(shape))).astype(np.intp), n_radial)


def _ring_means(values: np.ndarray, rings: np.ndarray, n_radial: int) -> np.ndarray:
    counts = np.bincount(rings.ravel(), minlength=n_radial + 1)[:n_radial]
    sums = np.bincount(rings.ravel(), values.ravel(), minlength=n_radial + 1)[:n_radial]
    full = counts > 0
    means = np.zeros(n_radial)
    means[full] = sums[full] / counts[full]
    index = np.arange(n_radial)
    return np.interp(index, index[full], means[full])


def _edges(x: np.ndarray, rings: np.ndarray, n_radial: int) -> list[float]:
    # A Sobel response of 8 is a slope of one intensity unit per pixel.
    magnitude = np.hypot(ndi.sobel(x, axis=0), ndi.sobel(x, axis=1)) / 8.0
    threshold = otsu_threshold(magnitude)
    density = 0.0 if threshold is None else float((magnitude > threshold).mean())
    return [*_ring_means(magnitude, rings, n_radial), magnitude.mean(), density]


def _snr(x: np.ndarray) -> list[float]:
    residual = ndi.correlate(x, _NOISE_KERNEL)[1:-1, 1:-1]
    noise = MAD_TO_STD * np.median(np.abs(residual - np.median(residual)))
    signal = ndi.gaussian_filter(x, SIGNAL_SIGMA).std()
    return [signal / max(noise, NOISE_FLOOR), noise]


def _segment(smooth: np.ndarray) -> np.ndarray:
    """Largest connected component on the object side of the Otsu threshold (maybe empty)."""
    threshold = otsu_threshold(smooth)
    if threshold is None:
        return np.zeros(smooth.shape, dtype=bool)
    upper = smooth > threshold
    border = np.concatenate([upper[0], upper[-1], upper[1:-1, 0], upper[1:-1, -1]])
    upper_border = border.mean()
    if upper_border > 0.5 or (upper_border == 0.5 and upper.mean() > 0.5):
        upper = ~upper
    labels, n = ndi.label(upper, _EIGHT_CONNECTED)
    if n == 0:
        return upper
    return labels == 1 + np.argmax(np.bincount(labels.ravel())[1:])


def segment_object(image: np.ndarray) -> np.ndarray:
    """The object of an object-centred image: ``(H, W)`` -> ``(H, W)`` bool (maybe empty).

    The largest 8-connected component on the object side of the Otsu threshold of the image
    smoothed with a Gaussian of 1 pixel; the object side is the one touching the border less,
    so dark and bright objects are both found.
    """
    return _segment(ndi.gaussian_filter(np.asarray(image, dtype=np.float64), 1.0))


def _object(x: np.ndarray, obj: np.ndarray) -> list[float]:
    area = int(obj.sum())
    if area == 0:
        return [0.0] * len(_OBJECT)
    # The extreme projections lie on the object's boundary: project only its pixels.
    ys, xs = np.nonzero(obj & ~ndi.binary_erosion(obj))
    angles = np.arange(N_ANGLES) * (np.pi / N_ANGLES)
    projections = np.outer(xs, np.cos(angles)) + np.outer(ys, np.sin(angles))
    widths = np.ptp(projections, axis=0) + 1.0
    cov = np.cov(np.stack(np.nonzero(obj)[::-1]).astype(np.float64), bias=True)
    minor_var, major_var = np.clip(np.linalg.eigvalsh(cov), 0.0, None)
    eccentricity = np.sqrt(1.0 - minor_var / major_var) if major_var > 0 else 0.0
    contrast = x[obj].mean() - x[~obj].mean() if area < obj.size else 0.0
    return [
        area,
        widths.max(),
        widths.min(),
        np.sqrt(4.0 * area / np.pi),
        4.0 * np.sqrt(major_var),
        4.0 * np.sqrt(minor_var),
        eccentricity,
        contrast,
    ]


def _glcm(x: np.ndarray, ordered: np.ndarray) -> list[float]:
    low, high = _quantiles(ordered, np.array([0.01, 0.99]))
    if high > low:
        q = np.clip(((x - low) * (GLCM_LEVELS / (high - low))).astype(np.intp), 0, GLCM_LEVELS - 1)
    else:
        q = np.zeros(x.shape, dtype=np.intp)
    h, w = q.shape
    p = np.empty((len(GLCM_OFFSETS), GLCM_LEVELS, GLCM_LEVELS))
    for k, (dy, dx) in enumerate(GLCM_OFFSETS):
        a = q[: h - dy, max(0, -dx) : w - max(0, dx)]
        b = q[dy:, max(0, dx) : w - max(0, -dx)]
        counts = np.bincount((a * GLCM_LEVELS + b).ravel(), minlength=GLCM_LEVELS**2)
        counts = counts.reshape(GLCM_LEVELS, GLCM_LEVELS)
        p[k] = counts + counts.T
    p /= p.sum(axis=(1, 2), keepdims=True)
    i, j = np.indices((GLCM_LEVELS, GLCM_LEVELS))
    mu = (p * i).sum(axis=(1, 2), keepdims=True)
    var = (p * (i - mu) ** 2).sum(axis=(1, 2))  # symmetric matrices: the same along j
    cov = (p * (i - mu) * (j - mu)).sum(axis=(1, 2))
    correlation = np.divide(cov, var, out=np.ones_like(var), where=var > 1e-12)
    return [
        (p * (i - j) ** 2).sum(axis=(1, 2)).mean(),
        (p / (1.0 + (i - j) ** 2)).sum(axis=(1, 2)).mean(),
        np.sqrt((p**2).sum(axis=(1, 2))).mean(),
        correlation.mean(),
    ]


def _local_var(x: np.ndarray) -> list[float]:
    mean = ndi.uniform_filter(x, LOCAL_WINDOW)
    var = np.maximum(ndi.uniform_filter(x * x, LOCAL_WINDOW) - mean**2, 0.0)
    return [var.mean(), var.std(), *_quantiles(np.sort(var.ravel()), np.array([0.9]))]


def _image_features(x: np.ndarray, mask: np.ndarray | None, bins: int, n_radial: int) -> list:
    h, w = x.shape
    if mask is None:
        centre = ((h - 1) / 2, (w - 1) / 2)
        obj = _segment(ndi.gaussian_filter(x, SEGMENT_SIGMA))
    else:
        ys, xs = np.nonzero(mask)
        centre, obj = (ys.mean(), xs.mean()), mask
    rings = _rings((h, w), centre, n_radial)
    ordered = np.sort(x.ravel())
    return [
        *_intensity(x, ordered, bins),
        *_moments(x if mask is None else mask.astype(np.float64)),
        *_ring_means(x, rings, n_radial),
        *_edges(x, rings, n_radial),
        *_snr(x),
        *_object(x, obj),
        *_glcm(x, ordered),
        *_local_var(x),
    ]


def handcrafted_features(
    images: Any,
    masks: Any = None,
    *,
    bins: int = 16,
    n_radial: int = 8,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Describe each image by the handcrafted features listed in the module docstring.

    Parameters
    ----------
    images
        ``(N, H, W)`` (axes ``"NYX"``) of real numbers, ``H, W >= 3``, all finite.
    masks
        Optional ``(N, H, W)`` boolean object masks, none empty: moments, ring centre and object
        features then describe the mask instead of the intensities and the Otsu segmentation.
    bins
        Histogram bins over ``[0, 1]``.
    n_radial
        Rings of the radial intensity and edge profiles.
    value_range
        ``(low, high)`` intensities mapped to 0 and 1; by default the dtype's range for integer
        images and ``(0, 1)`` for floats.

    Returns
    -------
    numpy.ndarray
        ``(N, F)`` float64, columns named by ``feature_names(bins=bins, n_radial=n_radial)``.
    """
    _check_params(bins, n_radial)
    x = _to_unit(images, value_range)
    m = None if masks is None else _to_masks(masks, x.shape)
    rows = [
        _image_features(x[n], None if m is None else m[n], bins, n_radial) for n in range(len(x))
    ]
    return np.asarray(rows, dtype=np.float64)


class HandcraftedFeatures(TransformerMixin, BaseEstimator):
    """scikit-learn transformer: images ``(N, H, W)`` to :func:`handcrafted_features` ``(N, F)``.

    Stateless: ``fit`` only checks the parameters, and ``transform`` works on any batch. Pipelines
    and ``GridSearchCV`` pass the ``(N, H, W)`` arrays through unchanged, so it can be their first
    step. Masks are not supported here; call :func:`handcrafted_features` for them.

    Parameters
    ----------
    bins, n_radial, value_range
        As in :func:`handcrafted_features`.
    """

    def __init__(
        self,
        *,
        bins: int = 16,
        n_radial: int = 8,
        value_range: tuple[float, float] | None = None,
    ) -> None:
        self.bins = bins
        self.n_radial = n_radial
        self.value_range = value_range

    def fit(self, X: Any, y: Any = None) -> HandcraftedFeatures:
        """Check the parameters and return ``self``; nothing is learned."""
        _check_params(self.bins, self.n_radial)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """``(N, H, W)`` images to ``(N, F)`` float64 features."""
        return handcrafted_features(
            X, bins=self.bins, n_radial=self.n_radial, value_range=self.value_range
        )

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The column names, as an object array (scikit-learn's convention)."""
        return np.asarray(feature_names(bins=self.bins, n_radial=self.n_radial), dtype=object)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        return tags
