"""The local-statistics baseline: the detector contract, and what it sees by construction."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from emae.anomaly.local_stats import LocalStatisticsDetector
from emae.anomaly.thresholds import Threshold
from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError, NotFittedError
from emae.synth.tissue import make_section, to_uint8

SIDE = 32


def _tiles(section: np.ndarray) -> np.ndarray:
    """``(N, SIDE, SIDE)`` non-overlapping tiles of a ``(H, W)`` section."""
    h, w = section.shape
    return np.stack(
        [section[y : y + SIDE, x : x + SIDE] for y in range(0, h, SIDE) for x in range(0, w, SIDE)]
    )


@pytest.fixture(scope="module")
def normal() -> np.ndarray:
    """(64, 32, 32) uint8 tiles of clean synthetic tissue."""
    return _tiles(to_uint8(make_section((256, 256), seed=0)))


@pytest.fixture(scope="module")
def fitted(normal) -> LocalStatisticsDetector:
    return LocalStatisticsDetector().fit(normal)


@pytest.fixture(scope="module")
def section() -> np.ndarray:
    """(128, 128) float tissue in [0, 1], not seen by ``fit``."""
    return make_section((128, 128), seed=1)


def test_contract(normal, fitted):
    x = normal[:10]
    maps = fitted.anomaly_map(x)
    scores = fitted.anomaly_score(x)
    assert maps.shape == x.shape and maps.dtype == np.float32 and np.isfinite(maps).all()
    assert scores.shape == (10,) and scores.dtype == np.float32
    np.testing.assert_array_equal(fitted.predict(x), scores > fitted.threshold_)
    assert isinstance(fitted.threshold_record_, Threshold)
    assert isinstance(fitted.pixel_threshold_, Threshold)
    assert fitted.threshold_ == fitted.threshold_record_.value
    assert fitted.center_.shape == fitted.scale_.shape == (2,)
    # Any image size, and the same maps from a second fit with the same seed.
    assert fitted.anomaly_map(normal[:2, :24, :20]).shape == (2, 24, 20)
    again = LocalStatisticsDetector().fit(normal)
    np.testing.assert_array_equal(again.anomaly_map(x), maps)


def test_unfitted_detector_raises(normal):
    detector = LocalStatisticsDetector()
    for method in (detector.anomaly_map, detector.anomaly_score, detector.predict):
        with pytest.raises(NotFittedError, match="not fitted"):
            method(normal[:2])


def test_normalizer_given_or_fitted(normal):
    given = PercentileNormalizer(low_value=10.0, high_value=200.0)
    assert LocalStatisticsDetector(given).fit(normal).normalizer_ is given
    fitted = LocalStatisticsDetector(low=2.0, high=98.0).fit(normal).normalizer_
    assert (fitted.low, fitted.high, fitted.source_dtype) == (2.0, 98.0, "uint8")
    assert 0 < fitted.low_value < fitted.high_value < 255


@pytest.mark.parametrize("kind", ["defocus", "bright"])
def test_flat_and_bright_regions_score_higher_than_tissue(fitted, section, kind):
    region = (slice(32, 96), slice(32, 96))
    changed = section.copy()
    if kind == "defocus":
        changed[region] = ndi.gaussian_filter(section, 4.0)[region]
    else:
        changed[region] = np.clip(section[region] + 0.5, 0, 1)
    maps = fitted.anomaly_map(to_uint8(np.stack([section, changed])))
    inner = (slice(40, 88), slice(40, 88))  # the region minus the window's reach
    clean, artifact = maps[0][inner], maps[1][inner]
    assert artifact.mean() > 2.5 * clean.mean()
    assert np.median(artifact) > np.percentile(maps[0], 99)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"sigma": 0}, "sigma"),
        ({"low": 50, "high": 40}, "percentiles"),
        ({"reduce": "median"}, "reduce"),
        ({"target_fpr": 1.0}, "target_fpr"),
        ({"holdout": 0.0}, "holdout"),
        ({"normalizer": "minmax"}, "normalizer"),
    ],
)
def test_bad_params_raise(normal, params, match):
    with pytest.raises(EmaeError, match=match):
        LocalStatisticsDetector(**params).fit(normal)


def test_bad_input_raises(normal):
    with pytest.raises(EmaeError, match="holdout"):
        LocalStatisticsDetector().fit(normal[:1])
    with pytest.raises(EmaeError, match="constant"):
        LocalStatisticsDetector().fit(np.full((4, 16, 16), 7, np.uint8))
    with pytest.raises(EmaeError, match=r"\(N, H, W\)"):
        LocalStatisticsDetector().fit(normal[0])
