"""One contract for every detector and score: scikit-learn's estimator and outlier rules.

Each detector (the autoencoder detector with every score, and the two non-learned baselines)
is fitted on the same normal images and must: refuse use before ``fit``; return itself from
``fit``; survive ``sklearn.base.clone`` (same parameters, unfitted); give maps ``(N, H, W)``
float32 and scores ``(N,)`` with larger = more anomalous; and keep ``predict``,
``score_samples`` and ``decision_function`` consistent with ``anomaly_score`` and
``threshold_``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone

from emae.anomaly.base import AnomalyDetector
from emae.anomaly.detector import AutoencoderDetector
from emae.anomaly.filter_gaussian import FilterGaussianDetector
from emae.anomaly.local_stats import LocalStatisticsDetector
from emae.anomaly.scores import SCORES
from emae.data.normalization import PercentileNormalizer
from emae.errors import NotFittedError
from emae.models import build_model
from emae.synth.tissue import make_section, to_uint8

NORMALIZER = PercentileNormalizer(40.0, 220.0, source_dtype="uint8")
# The discriminative head must learn enough to rank a saturated square above tissue.
CONTRACT = {"discriminative": {"steps": 60, "batch_size": 8, "kinds": ("tile", "dust")}}


def _detectors() -> list[tuple[str, AnomalyDetector]]:
    torch.manual_seed(0)
    model = build_model("conv-ae", channels=(8, 16), latent_channels=4, norm="batch").eval()
    found: list[tuple[str, AnomalyDetector]] = [
        (
            score,
            AutoencoderDetector(
                model, NORMALIZER, score=score, batch_size=8, score_params=CONTRACT.get(score)
            ),
        )
        for score in SCORES
    ]
    return [
        *found,
        ("local-stats", LocalStatisticsDetector(NORMALIZER)),
        ("filter-gaussian", FilterGaussianDetector(NORMALIZER)),
    ]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    section = to_uint8(make_section((256, 256), seed=3))
    return np.stack([section[y : y + 32, x : x + 32] for y in range(0, 224, 32) for x in (0, 96)])


@pytest.mark.parametrize(("name", "detector"), _detectors(), ids=[n for n, _ in _detectors()])
def test_every_detector_meets_the_contract(name, detector, images):
    with pytest.raises(NotFittedError):
        detector.anomaly_map(images[:2])
    assert detector.fit(images) is detector
    copy = clone(detector)
    assert type(copy) is type(detector) and not hasattr(copy, "threshold_")
    assert set(copy.get_params()) == set(detector.get_params())
    maps = detector.anomaly_map(images[:3])
    assert maps.shape == (3, 32, 32) and maps.dtype == np.float32
    scores = detector.anomaly_score(images)
    assert scores.shape == (len(images),)
    np.testing.assert_array_equal(detector.predict(images), scores > detector.threshold_)
    np.testing.assert_array_equal(detector.score_samples(images), -scores)
    decision = detector.decision_function(images)
    np.testing.assert_array_equal(decision < 0, detector.predict(images))
    burnt = images[:2].copy()
    burnt[:, 8:24, 8:24] = 255  # a saturated square: more anomalous, whatever the score
    assert detector.anomaly_score(burnt).mean() > scores.mean(), name
    assert detector.set_threshold(1e9).predict(images).sum() == 0
