"""Object segmentation of object-centred images: Otsu's threshold and the largest component.

:func:`segment_object` finds the one object of an image ``(H, W)`` (axes ``"YX"``) as a boolean
mask: the image is smoothed by a Gaussian of 1 pixel, thresholded at Otsu's threshold
(:func:`otsu_threshold`), and the largest 8-connected component of the object side is kept. The
object side is the side of the threshold that holds fewer border pixels, so dark and bright
objects are both found. A flat image gives an empty mask.

:mod:`emae.data.objects` crops objects with it, and the handcrafted features of
:mod:`emae.classify.features` describe the object it finds when no mask is given.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

SEGMENT_SIGMA = 1.0
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


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


def _largest_object(smooth: np.ndarray) -> np.ndarray:
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
    smooth = ndi.gaussian_filter(np.asarray(image, dtype=np.float64), SEGMENT_SIGMA)
    return _largest_object(smooth)
