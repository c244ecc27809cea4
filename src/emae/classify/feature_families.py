"""The families of handcrafted features, each computed on one image on its own.

Every function here describes one image ``x`` ``(H, W)`` float64 (axes ``"YX"``) already on the
unit scale of :func:`emae.classify.features.handcrafted_features`, and returns a list of floats:
that family's columns, in the order :func:`emae.classify.features.feature_names` names them.
``ordered`` is ``np.sort(x.ravel())``, computed once per image and shared by the families that
need quantiles.

Families, in column order
-------------------------
- ``hist_00..``: fraction of pixels in each of ``bins`` equal bins over ``[0, 1]`` (values
  clipped to ``[0, 1]``; every other family uses the unclipped values).
- ``intensity_mean, _std, _skewness, _kurtosis`` (excess), ``intensity_p05 .. _p95``.
- ``moment_20 .. moment_03``: normalized central moments ``eta_pq`` (``p`` the power of x, the
  column) of order 2 and 3, and ``hu_1 .. hu_7``: Hu's invariants as
  ``sign(h) * log10(1 + |h| / 1e-12)``, a log scale that stays finite and stable at ``h = 0``.
  Of the intensities (negative values taken as 0), or of the binary mask when one is given.
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
- ``object_*``: the object is the mask when given, else
  :func:`emae.data.segmentation.segment_object` (largest 8-connected component of the
  Otsu-thresholded image smoothed with sigma 1, on the side of the threshold that holds fewer
  border pixels, so dark and bright objects are both found). ``area`` (pixels), ``max_width``
  and ``min_width`` (Feret diameters over 16 directions, pixel centres' extent plus one pixel),
  ``equiv_diameter``, ``major_axis`` and ``minor_axis`` (4 sigma of the second moments),
  ``eccentricity`` and ``contrast`` (object mean minus background mean). All 0 when no object
  is found (a flat image).
- ``glcm_contrast, _homogeneity, _energy, _correlation``: grey-level co-occurrence at distance 1
  in 4 directions (0, 45, 90, 135 degrees), symmetric, averaged over the directions, on the
  image quantized to 8 levels between its own 1st and 99th percentiles.
- ``local_var_mean, _std, _p90``: statistics of the variance in 5 x 5 windows.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from emae.data.segmentation import otsu_threshold

PERCENTILES = (5, 25, 50, 75, 95)
#: ``(p, q)`` of the normalized central moments kept: powers of x (column) and y (row).
MOMENT_ORDERS = ((2, 0), (1, 1), (0, 2), (3, 0), (2, 1), (1, 2), (0, 3))
#: Names of the ``object_*`` columns, in order.
OBJECT_FEATURES = (
    "area",
    "max_width",
    "min_width",
    "equiv_diameter",
    "major_axis",
    "minor_axis",
    "eccentricity",
    "contrast",
)
HU_SCALE = 1e-12
N_ANGLES = 16
GLCM_LEVELS = 8
GLCM_OFFSETS = ((0, 1), (1, 1), (1, 0), (1, -1))
SIGNAL_SIGMA = 2.0
NOISE_FLOOR = 1e-3
MAD_TO_STD = 1.4826
LOCAL_WINDOW = 5
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64) / 6.0


def quantiles(ordered: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Quantiles ``q`` in ``[0, 1]`` of sorted 1D values, linear as ``np.quantile``, but cheap."""
    position = q * (len(ordered) - 1)
    below = np.floor(position).astype(np.intp)
    above = np.minimum(below + 1, len(ordered) - 1)
    return ordered[below] + (position - below) * (ordered[above] - ordered[below])


def intensity_features(x: np.ndarray, ordered: np.ndarray, bins: int) -> list[float]:
    """Histogram, mean, std, skewness, excess kurtosis and percentiles of ``x`` ``(H, W)``."""
    index = np.minimum((np.clip(x, 0.0, 1.0) * bins).astype(np.intp), bins - 1)
    hist = np.bincount(index.ravel(), minlength=bins) / x.size
    mean, std = x.mean(), x.std()
    skew = kurt = 0.0
    if std > 1e-9:
        z2 = ((x - mean) / std) ** 2
        skew, kurt = float((z2 * (x - mean)).mean() / std), float((z2 * z2).mean() - 3.0)
    return [*hist, mean, std, skew, kurt, *quantiles(ordered, np.array(PERCENTILES) / 100)]


def moment_features(density: np.ndarray) -> list[float]:
    """Normalized central moments and log-scaled Hu invariants of ``density`` ``(H, W)``."""
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


def ring_index(shape: tuple[int, int], centre: tuple[float, float], n_radial: int) -> np.ndarray:
    """Ring index ``(H, W)`` intp of each pixel, ``n_radial`` for pixels beyond the outer ring."""
    y, x = np.ogrid[: shape[0], : shape[1]]
    r = np.hypot(y - centre[0], x - centre[1])
    return np.minimum((r * (2 * n_radial / min(shape))).astype(np.intp), n_radial)


def ring_means(values: np.ndarray, rings: np.ndarray, n_radial: int) -> np.ndarray:
    """Mean of ``values`` ``(H, W)`` in each ring ``(n_radial,)``, empty rings interpolated."""
    counts = np.bincount(rings.ravel(), minlength=n_radial + 1)[:n_radial]
    sums = np.bincount(rings.ravel(), values.ravel(), minlength=n_radial + 1)[:n_radial]
    full = counts > 0
    means = np.zeros(n_radial)
    means[full] = sums[full] / counts[full]
    index = np.arange(n_radial)
    return np.interp(index, index[full], means[full])


def edge_features(x: np.ndarray, rings: np.ndarray, n_radial: int) -> list[float]:
    """Radial profile, mean and Otsu density of the Sobel gradient magnitude of ``x``."""
    # A Sobel response of 8 is a slope of one intensity unit per pixel.
    magnitude = np.hypot(ndi.sobel(x, axis=0), ndi.sobel(x, axis=1)) / 8.0
    threshold = otsu_threshold(magnitude)
    density = 0.0 if threshold is None else float((magnitude > threshold).mean())
    return [*ring_means(magnitude, rings, n_radial), magnitude.mean(), density]


def snr_features(x: np.ndarray) -> list[float]:
    """``[snr, noise_std]`` of ``x`` ``(H, W)``, the noise by a robust Immerkaer estimator."""
    residual = ndi.correlate(x, _NOISE_KERNEL)[1:-1, 1:-1]
    noise = MAD_TO_STD * np.median(np.abs(residual - np.median(residual)))
    signal = ndi.gaussian_filter(x, SIGNAL_SIGMA).std()
    return [signal / max(noise, NOISE_FLOOR), noise]


def object_features(x: np.ndarray, obj: np.ndarray) -> list[float]:
    """Size, shape and contrast of the object ``obj`` ``(H, W)`` bool in ``x``; 0s if empty."""
    area = int(obj.sum())
    if area == 0:
        return [0.0] * len(OBJECT_FEATURES)
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


def glcm_features(x: np.ndarray, ordered: np.ndarray) -> list[float]:
    """Contrast, homogeneity, energy and correlation of the grey-level co-occurrence of ``x``."""
    low, high = quantiles(ordered, np.array([0.01, 0.99]))
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


def local_variance_features(x: np.ndarray) -> list[float]:
    """Mean, std and 90th percentile of the variance of ``x`` in 5 x 5 windows."""
    mean = ndi.uniform_filter(x, LOCAL_WINDOW)
    var = np.maximum(ndi.uniform_filter(x * x, LOCAL_WINDOW) - mean**2, 0.0)
    return [var.mean(), var.std(), *quantiles(np.sort(var.ravel()), np.array([0.9]))]
