"""Logistic regression and k-NN on the frozen latent space."""

from __future__ import annotations

import numpy as np
import pytest

from emae.classify.baselines import LatentClassifier
from emae.commands.pretrain import pretrain
from emae.errors import EmaeError, NotFittedError
from emae.io import write_tiff
from emae.synth.tissue import make_volume, to_uint8
from emae.train.config import PretrainConfig


@pytest.fixture(scope="module")
def encoder(tmp_path_factory, tiny_settings):
    root = tmp_path_factory.mktemp("latent")
    write_tiff(root / "v.tif", to_uint8(make_volume((2, 96, 96), seed=0)), axes="ZYX")
    config = PretrainConfig(**tiny_settings, score="pixel")
    pretrain([root / "v.tif"], root / "ae", config, progress=False)
    return root / "ae"


@pytest.mark.parametrize("kind", ["logreg", "knn"])
def test_latent_classifiers_separate_dark_from_bright(encoder, kind):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(70, 8, (12, 32, 32)), rng.normal(190, 8, (12, 32, 32))])
    y = np.array(["dark"] * 12 + ["bright"] * 12)
    order = rng.permutation(24)
    train, test = order[:16], order[16:]
    clf = LatentClassifier(encoder, kind=kind).fit(x[train], y[train])
    assert (clf.predict(x[test]) == y[test]).mean() == 1.0
    proba = clf.predict_proba(x[test])
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    assert set(clf.classes_) == {"dark", "bright"}


def test_latent_classifier_errors(encoder):
    x = np.zeros((4, 32, 32))
    with pytest.raises(NotFittedError):
        LatentClassifier(encoder).predict(x)
    with pytest.raises(EmaeError, match="at least 2 classes"):
        LatentClassifier(encoder).fit(x, [0, 0, 0, 0])
    with pytest.raises(EmaeError, match="kind"):
        LatentClassifier(encoder, kind="svm").fit(x, [0, 1, 0, 1])
