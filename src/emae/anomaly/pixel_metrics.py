"""How well an anomaly map finds artifacts with known masks: pixel AUROC, AP and AUPRO.

Three numbers, as the anomaly-detection field reports them (MVTec AD, anomalib):

``auroc``
    Pixel AUROC: every artifact pixel against every clean pixel, ranked by the map.
``ap``
    Average precision of the same ranking (area under precision-recall); unlike the AUROC it
    drops when artifacts are rare and the map flags much clean area.
``aupro``
    Area under the per-region-overlap curve up to a false-positive rate of ``fpr_limit``
    (0.3 by default), divided by ``fpr_limit`` so that 1 is perfect. At a threshold ``t`` the
    *per-region overlap* is the mean, over the connected artifact regions of every image, of the
    share of the region's pixels above ``t``; the false-positive rate is the share of clean pixels
    above ``t``. A large artifact cannot carry a map that misses every small one, as it does in
    the pixel AUROC.

The PRO curve is computed exactly, without a grid of thresholds: giving every artifact pixel of
region ``r`` (of ``R`` regions) the weight ``1 / (R |r|)`` and every clean pixel the weight
``1 / n_clean`` makes the weighted true- and false-positive rates of a ROC curve equal to the
per-region overlap and the false-positive rate at every threshold. The curve is cut at
``fpr_limit`` by linear interpolation and integrated with the trapezoidal rule.

Regions are the 8-connected components of each image's mask (``scipy.ndimage.label``), one image
at a time: a volume is scored section by section, as a microscopist looks at it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from emae.errors import EmaeError

#: The false-positive rate the PRO curve is integrated up to (MVTec AD's 30%).
FPR_LIMIT = 0.3

_EIGHT = np.ones((3, 3), dtype=bool)


def _check(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(N, H, W)`` maps (their own float dtype, not copied) and bool masks, checked."""
    maps = np.asarray(maps)
    masks = np.asarray(masks)
    if maps.ndim == 2:
        maps, masks = maps[None], masks[None]
    if maps.ndim != 3:
        raise EmaeError(f"maps must be (N, H, W) or (H, W), got shape {maps.shape}")
    if masks.shape != maps.shape:
        raise EmaeError(f"masks must have the maps' shape {maps.shape}, got {masks.shape}")
    if not np.issubdtype(maps.dtype, np.floating):
        maps = maps.astype(np.float64)
    if not np.isfinite(maps).all():
        raise EmaeError("maps hold NaN or infinite values")
    masks = masks.astype(bool, copy=False)
    positives = int(np.count_nonzero(masks))
    if positives == 0 or positives == masks.size:
        raise EmaeError(
            f"masks must hold both artifact and clean pixels, got {positives} of {masks.size}"
        )
    return maps, masks


def _region_weights(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Weights of :func:`region_weights` and the number of regions, ``masks`` checked bool."""
    labels = np.zeros(masks.shape, dtype=np.int64)
    regions = 0
    for i, mask in enumerate(masks):
        image_labels, found = ndi.label(mask, structure=_EIGHT)
        labels[i] = np.where(mask, image_labels + regions, 0)
        regions += found
    sizes = np.bincount(labels.ravel(), minlength=regions + 1).astype(np.float64)
    sizes[0] = np.inf  # clean pixels weigh 0 here
    return 1.0 / (regions * sizes[labels]), regions


def region_weights(masks: Any) -> np.ndarray:
    """Per-pixel weights of the PRO curve: ``1 / (R |r|)`` inside region ``r``, 0 elsewhere.

    Parameters
    ----------
    masks
        ``(N, H, W)`` bool artifact masks; regions are 8-connected components per image.

    Returns
    -------
    numpy.ndarray
        ``(N, H, W)`` float64, summing to 1 over all artifact pixels.
    """
    return _region_weights(np.asarray(masks, dtype=bool))[0]


def _pro_curve(maps: np.ndarray, masks: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, ...]:
    """The PRO curve of checked inputs; ``weights`` from :func:`_region_weights`, overwritten."""
    weights[~masks] = 1.0 / float(masks.size - np.count_nonzero(masks))
    fpr, pro, _ = roc_curve(masks.ravel(), maps.ravel(), sample_weight=weights.ravel())
    return fpr, pro


def _area(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float) -> float:
    """Normalized area under ``pro(fpr)`` from 0 to ``fpr_limit``, cut by interpolation."""
    if not 0 < fpr_limit <= 1:
        raise EmaeError(f"fpr_limit must be in (0, 1], got {fpr_limit!r}")
    cut = int(np.searchsorted(fpr, fpr_limit, side="right"))
    end = np.interp(fpr_limit, fpr, pro)
    x = np.append(fpr[:cut], fpr_limit)
    y = np.append(pro[:cut], end)
    return float(np.trapezoid(y, x) / fpr_limit)


def pro_curve(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """False-positive rate and per-region overlap at every distinct threshold.

    Parameters
    ----------
    maps
        ``(N, H, W)`` anomaly maps, larger = more anomalous.
    masks
        ``(N, H, W)`` bool artifact masks with at least one artifact and one clean pixel.

    Returns
    -------
    fpr, pro : numpy.ndarray
        ``(T,)`` float64 each, increasing, from ``(0, 0)`` to ``(1, 1)``.
    """
    maps, masks = _check(maps, masks)
    return _pro_curve(maps, masks, _region_weights(masks)[0])


def aupro(maps: Any, masks: Any, fpr_limit: float = FPR_LIMIT) -> float:
    """Normalized area under the PRO curve up to ``fpr_limit`` (1 is perfect).

    ``maps`` and ``masks`` as for :func:`pro_curve`. A random map scores about
    ``fpr_limit / 2``.
    """
    return _area(*pro_curve(maps, masks), fpr_limit)


def pixel_metrics(maps: Any, masks: Any, fpr_limit: float = FPR_LIMIT) -> dict[str, float]:
    """Pixel AUROC, average precision and AUPRO of anomaly maps against artifact masks.

    Parameters
    ----------
    maps
        ``(N, H, W)`` or ``(H, W)`` anomaly maps, larger = more anomalous (float; kept in
        their dtype, so float32 maps are not copied to float64).
    masks
        Artifact masks of the same shape (nonzero = artifact), holding both kinds of pixels.
    fpr_limit
        False-positive rate the PRO curve is integrated up to.

    Returns
    -------
    dict
        ``{"auroc", "ap", "aupro", "artifact_fraction"}`` floats and ``"regions"`` (int, the
        8-connected artifact regions of all images).
    """
    maps, masks = _check(maps, masks)
    truth, values = masks.ravel(), maps.ravel()
    weights, regions = _region_weights(masks)
    return {
        "auroc": float(roc_auc_score(truth, values)),
        "ap": float(average_precision_score(truth, values)),
        "aupro": _area(*_pro_curve(maps, masks, weights), fpr_limit),
        "artifact_fraction": float(np.count_nonzero(truth) / truth.size),
        "regions": int(regions),
    }
