"""PatchClassifier follows the scikit-learn classifier contract, like the baselines beside it."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from emae.classify.config import FinetuneConfig
from emae.classify.estimator import PatchClassifier
from emae.errors import EmaeError, NotFittedError

CONFIG = FinetuneConfig(
    steps=30,
    batch_size=8,
    warmup_steps=1,
    precision="fp32",
    device="cpu",
    patch_size=32,
    scratch_channels=(8, 16),
)


def _patches(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Dark and bright noise patches, labelled "dark" and "bright"."""
    rng = np.random.default_rng(seed)
    bright = np.arange(n) % 2
    patches = rng.normal(80 + 90 * bright[:, None, None], 10, (n, 32, 32))
    return np.clip(patches, 0, 255).astype(np.uint8), np.where(bright, "bright", "dark")


def test_patch_classifier_meets_the_estimator_contract():
    x, y = _patches(16, 0)
    estimator = PatchClassifier(config=CONFIG)
    with pytest.raises(NotFittedError):
        estimator.predict_proba(x)
    assert estimator.fit(x, y) is estimator
    assert estimator.classes_.tolist() == ["bright", "dark"]
    proba = estimator.predict_proba(x)
    assert proba.shape == (16, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    test, truth = _patches(20, 1)
    assert (estimator.predict(test) == truth).mean() >= 0.9  # an easy task
    assert estimator.score(test, truth) == (estimator.predict(test) == truth).mean()
    copy = clone(estimator)
    assert not hasattr(copy, "fitted_") and copy.get_params()["config"] == CONFIG
    again = copy.fit(x, y)
    np.testing.assert_array_equal(again.predict_proba(test), estimator.predict_proba(test))
    dense = estimator.dense_probabilities(test[0])
    assert dense.shape[0] == 2


def test_all_classes_keep_their_column_and_unknown_labels_are_refused():
    x, y = _patches(8, 0)
    index = (y == "bright").astype(int)
    estimator = PatchClassifier(
        config=CONFIG, classes=range(3), class_names=("dark", "bright", "dust")
    ).fit(x, index)
    assert estimator.predict_proba(x).shape == (8, 3)
    with pytest.raises(EmaeError, match="not among the classes"):
        PatchClassifier(config=CONFIG, classes=["a", "b"]).fit(x, y)


def test_extra_features_given_to_fit_are_used_and_required_at_predict():
    # The patches alone carry no class; one extra feature carries it all.
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (16, 32, 32), dtype=np.uint8)
    y = np.arange(16) % 2
    extra = np.where(y, 3.0, -3.0)[:, None] + rng.normal(0, 0.1, (16, 1))
    estimator = PatchClassifier(config=CONFIG).fit(x, y, features=extra)
    assert estimator.fitted_.feature_names == ("feature_0",)
    assert (estimator.predict(x, features=extra) == y).mean() >= 0.9
    with pytest.raises(EmaeError, match="needs the features"):
        estimator.predict(x)
