"""Pixel AUROC, AP and AUPRO of anomaly maps: checked against a threshold-by-threshold reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from emae.anomaly.pixel_metrics import aupro, pixel_metrics, pro_curve, region_weights
from emae.errors import EmaeError


def reference_pro(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PRO and FPR at every distinct threshold, region by region, as MVTec AD defines them."""
    regions = []
    for i, mask in enumerate(masks):
        labels, n = ndi.label(mask, structure=np.ones((3, 3)))
        regions += [(i, labels == k) for k in range(1, n + 1)]
    clean = maps[~masks]
    fpr, pro = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        fpr.append(float((clean >= t).mean()))
        pro.append(float(np.mean([(maps[i][r] >= t).mean() for i, r in regions])))
    return np.array(fpr), np.array(pro)


def reference_aupro(maps: np.ndarray, masks: np.ndarray, limit: float) -> float:
    fpr, pro = reference_pro(maps, masks)
    keep = fpr <= limit
    x, y = fpr[keep], pro[keep]
    nxt = np.argmax(fpr > limit)
    if fpr[nxt] > limit:  # the segment that crosses the limit, cut there
        x0, x1, y0, y1 = fpr[nxt - 1], fpr[nxt], pro[nxt - 1], pro[nxt]
        x = np.append(x, limit)
        y = np.append(y, y0 + (y1 - y0) * (limit - x0) / (x1 - x0))
    return float(np.trapezoid(y, x) / limit)


@pytest.fixture
def blobs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 40, 40), bool)
    masks[0, 5:15, 5:15] = True  # large
    masks[0, 30:33, 30:33] = True  # small
    masks[1, 20:22, 3:30] = True  # line
    masks[2, 10:12, 10:12] = True
    maps = rng.normal(size=masks.shape) + 1.5 * masks
    return np.round(maps, 1), masks  # ties, as real maps have in flat regions


@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
def test_aupro_matches_the_threshold_by_threshold_reference(blobs, limit) -> None:
    maps, masks = blobs
    assert aupro(maps, masks, limit) == pytest.approx(reference_aupro(maps, masks, limit), abs=1e-9)


def test_pro_curve_points_match_the_reference(blobs) -> None:
    maps, masks = blobs
    fpr, pro = pro_curve(maps, masks)
    ref_fpr, ref_pro = reference_pro(maps, masks)
    # sklearn drops collinear points; every point it keeps is one of the reference's.
    for f, p in zip(fpr, pro, strict=True):
        hit = np.isclose(ref_fpr, f, atol=1e-12) & np.isclose(ref_pro, p, atol=1e-12)
        assert hit.any(), (f, p)


def test_region_weights_sum_to_one_and_weigh_regions_equally(blobs) -> None:
    _, masks = blobs
    weights = region_weights(masks)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[0, 5:15, 5:15].sum() == pytest.approx(weights[2, 10:12, 10:12].sum())
    assert (weights[~masks] == 0).all()


def test_a_map_that_finds_only_the_large_region_has_a_high_auroc_but_half_the_aupro() -> None:
    masks = np.zeros((1, 64, 64), bool)
    masks[0, 0:30, 0:30] = True  # 900 px
    masks[0, 50:53, 50:53] = True  # 9 px, missed
    maps = np.linspace(0, 1e-3, masks.size).reshape(masks.shape)  # no ties among clean pixels
    maps[0, 0:30, 0:30] = 1.0
    maps[0, 50:53, 50:53] = -1.0  # below every clean pixel
    m = pixel_metrics(maps, masks)
    assert m["auroc"] > 0.99
    assert 0.45 < m["aupro"] < 0.55
    assert m["regions"] == 2
    assert m["artifact_fraction"] == pytest.approx(909 / 4096)


def test_perfect_and_random_maps() -> None:
    rng = np.random.default_rng(1)
    masks = rng.random((4, 32, 32)) < 0.05
    assert pixel_metrics(masks.astype(float), masks)["aupro"] == pytest.approx(1.0)
    random = pixel_metrics(rng.random(masks.shape), masks)
    assert random["auroc"] == pytest.approx(0.5, abs=0.05)
    assert random["aupro"] == pytest.approx(0.15, abs=0.03)  # fpr_limit / 2
    single = pixel_metrics(masks[0].astype(float), masks[0])  # one (H, W) image
    assert single["auroc"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("maps", "masks", "message"),
    [
        (np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), "both artifact and clean"),
        (np.zeros((2, 4, 4)), np.ones((2, 4, 4)), "both artifact and clean"),
        (np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), "masks must have the maps' shape"),
        (np.zeros((4,)), np.zeros((4,)), r"maps must be \(N, H, W\)"),
        (np.full((1, 2, 2), np.nan), np.eye(2)[None], "NaN"),
    ],
)
def test_bad_input_is_named(maps, masks, message) -> None:
    with pytest.raises(EmaeError, match=message):
        pixel_metrics(maps, masks)
    with pytest.raises(EmaeError, match="fpr_limit"):
        aupro(np.eye(3)[None], np.eye(3)[None].astype(bool), 0.0)
