"""SVMOnFeatures: the classic baseline follows the classifier contract and learns easy classes."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.base import clone

from emae.classify.baselines import SVMOnFeatures
from emae.errors import EmaeError, NotFittedError

SIZE = 24


def discs_and_rings(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(2n, SIZE, SIZE)`` float images of jittered noisy discs (label 0) and rings (label 1)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:SIZE, :SIZE]
    images, labels = [], []
    for label in (0, 1):
        for _ in range(n_per_class):
            cy, cx = (SIZE - 1) / 2 + rng.uniform(-2, 2, 2)
            r = np.hypot(y - cy, x - cx)
            radius = rng.uniform(5, 8)
            inside = r <= radius if label == 0 else np.abs(r - radius) <= 1.2
            images.append(np.where(inside, 0.75, 0.25) + rng.normal(0, 0.08, (SIZE, SIZE)))
            labels.append(label)
    return np.stack(images), np.array(labels)


@pytest.fixture(scope="module")
def data():
    return discs_and_rings(20, seed=0), discs_and_rings(15, seed=1)


@pytest.fixture(scope="module")
def fitted(data):
    (x, y), _ = data
    return SVMOnFeatures(Cs=(1.0, 10.0), gammas=("scale", 0.01)).fit(x, y)


def test_separates_discs_from_rings(data, fitted):
    _, (x_test, y_test) = data
    assert np.mean(fitted.predict(x_test) == y_test) > 0.9
    assert fitted.best_params_["C"] in (1.0, 10.0) and fitted.best_score_ > 0.8
    assert len(fitted.feature_names_) == 74 and fitted.n_extra_features_ == 0


def test_probabilities_follow_classes(data, fitted):
    _, (x_test, y_test) = data
    proba = fitted.predict_proba(x_test)
    assert proba.shape == (len(x_test), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(fitted.classes_, [0, 1])
    assert proba[np.arange(len(y_test)), y_test].mean() > 0.8
    np.testing.assert_array_equal(fitted.predict(x_test), fitted.classes_[proba.argmax(axis=1)])


def test_string_labels_and_extra_features(data):
    (x, y), (x_test, y_test) = data
    names = np.array(["disc", "ring"])
    rng = np.random.default_rng(0)
    extra = rng.normal(size=(len(x), 2))
    model = SVMOnFeatures(Cs=(1.0,), gammas=("scale",)).fit(x, names[y], features=extra)
    np.testing.assert_array_equal(model.classes_, ["disc", "ring"])
    test_extra = rng.normal(size=(len(x_test), 2))
    predicted = model.predict(x_test, features=test_extra)
    assert predicted.dtype.kind == "U" and np.mean(predicted == names[y_test]) > 0.9
    assert model.feature_names_[-2:] == ["extra_00", "extra_01"]
    with pytest.raises(EmaeError, match="features with 2 columns are required"):
        model.predict(x_test)
    with pytest.raises(EmaeError, match="2 columns as in fit"):
        model.predict(x_test, features=test_extra[:, :1])


def test_unfitted_raises():
    x, _ = discs_and_rings(1, seed=0)
    for method in (SVMOnFeatures().predict, SVMOnFeatures().predict_proba):
        with pytest.raises(NotFittedError, match="not fitted"):
            method(x)


def test_tiny_classes_skip_the_search(caplog):
    x, y = discs_and_rings(3, seed=2)
    y = np.r_[y[:5], 2]  # classes of 3, 2 and 1 samples
    with caplog.at_level(logging.WARNING, logger="emae.classify.baselines.svm_features"):
        model = SVMOnFeatures().fit(x, y)
    assert "no grid search" in caplog.text
    assert model.best_params_ == {"C": 1.0, "gamma": "scale"} and np.isnan(model.best_score_)
    proba = model.predict_proba(x)
    assert proba.shape == (6, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_two_per_class_uses_two_folds():
    x, y = discs_and_rings(2, seed=3)
    model = SVMOnFeatures(Cs=(1.0, 10.0), gammas=("scale",)).fit(x, y)
    assert np.isfinite(model.best_score_) and model.predict(x).shape == (4,)


@pytest.mark.parametrize(
    ("kwargs", "labels", "match"),
    [
        ({}, np.zeros(4, int), "at least 2 classes"),
        ({}, np.array([0, 1, 0]), "one label per image"),
        ({"Cs": ()}, np.array([0, 1, 0, 1]), "Cs"),
        ({"gammas": ("big",)}, np.array([0, 1, 0, 1]), "gammas"),
    ],
)
def test_bad_fit_input(kwargs, labels, match):
    x, _ = discs_and_rings(2, seed=4)
    with pytest.raises(EmaeError, match=match):
        SVMOnFeatures(**kwargs).fit(x, labels)


def test_clone_keeps_parameters():
    model = SVMOnFeatures(Cs=(2.0,), seed=3)
    assert clone(model).get_params() == model.get_params()


def test_grid_search_never_validates_on_a_training_group(data, monkeypatch):
    import emae.classify.baselines.svm_features as module

    seen = []
    original = module.GridSearchCV

    class Spy(original):
        def fit(self, x, y, groups=None, **kwargs):
            seen.extend(self.cv.split(x, y, groups))
            return super().fit(x, y, groups=groups, **kwargs)

    monkeypatch.setattr(module, "GridSearchCV", Spy)
    (images, y), _ = data
    groups = np.arange(len(y)) // 4  # 4 images per group, e.g. one section each
    SVMOnFeatures(seed=0).fit(images, y, groups=groups)
    assert len(seen) == 3
    for train, test in seen:
        assert not set(groups[train]) & set(groups[test])
    with pytest.raises(EmaeError, match="one group per image"):
        SVMOnFeatures(seed=0).fit(images, y, groups=groups[:-1])
