"""ilastik-style filter features against scipy, and the filter-Gaussian baseline detector."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from emae.anomaly.filter_bank import RESPONSES, SIGMAS, feature_names, filter_features
from emae.anomaly.filter_gaussian import FilterGaussianDetector
from emae.errors import EmaeError
from emae.synth.artifacts import as_unit_float, inject
from emae.synth.tissue import make_section, to_uint8


@pytest.fixture(scope="module")
def tissue() -> np.ndarray:
    return make_section((96, 96), seed=2).astype(np.float32)


def test_layout_and_smoothing_match_scipy(tissue):
    f = filter_features(torch.from_numpy(tissue[None]), (1.6, 5.0)).numpy()[0]
    assert f.shape == (14, 96, 96)
    assert feature_names((1.6, 5.0))[7] == "gaussian@5"
    np.testing.assert_allclose(f[0], ndi.gaussian_filter(tissue, 1.6, mode="reflect"), atol=1e-5)
    # LoG by differences of the smoothed image vs scipy's derivative-of-Gaussian, inside.
    inner = (slice(10, -10), slice(10, -10))
    log = ndi.gaussian_laplace(tissue.astype(np.float64), 5.0, mode="reflect")
    assert np.corrcoef(f[8][inner].ravel(), log[inner].ravel())[0, 1] > 0.99


def test_hessian_and_structure_eigenvalues_on_known_images():
    x = np.mgrid[0:64, 0:64][1].astype(np.float32)
    ridge = np.exp(-0.5 * ((x - 32) / 2.0) ** 2)  # a bright vertical line
    f = filter_features(torch.from_numpy(ridge[None]), (1.6,)).numpy()[0]
    h1, h2 = f[RESPONSES.index("hessian_1")], f[RESPONSES.index("hessian_2")]
    assert h1[32, 32] == pytest.approx(0.0, abs=1e-4)  # no curvature along the line
    assert h2[32, 32] < -0.05  # strong negative curvature across it
    edge = (x > 32).astype(np.float32)
    g = filter_features(torch.from_numpy(edge[None]), (1.6,)).numpy()[0]
    s1, s2 = g[RESPONSES.index("structure_1")], g[RESPONSES.index("structure_2")]
    assert s1[32, 32] > 100 * abs(s2[32, 32])  # one orientation only
    assert (g[RESPONSES.index("gradient")][:, :20] < 1e-6).all()  # flat far from the edge


def test_bad_input_is_named():
    with pytest.raises(EmaeError, match=r"\(B, H, W\) float"):
        filter_features(torch.zeros(4, 4))
    with pytest.raises(EmaeError, match="sigmas"):
        filter_features(torch.zeros(1, 8, 8), (0.0,))


def test_filter_gaussian_finds_a_defocused_region():
    normal = to_uint8(make_section((256, 256), seed=0))
    tiles = np.stack(
        [normal[y : y + 64, x : x + 64] for y in range(0, 256, 64) for x in (0, 64, 128, 192)]
    )
    detector = FilterGaussianDetector().fit(tiles)
    assert detector.mean_.shape == (7 * len(SIGMAS),)
    image = as_unit_float(to_uint8(make_section((128, 128), seed=5)))
    blurred, mask = inject(image, "defocus", seed=1, size=64, contrast=1.0)
    anomaly = detector.anomaly_map((blurred * 255)[None])[0]
    assert anomaly[mask].mean() > anomaly[~mask].mean()
