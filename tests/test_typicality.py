"""The typicality score: atypically high or low reconstruction error for the local structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from torch import nn

from emae.anomaly.error_statistics import ErrorStatistics
from emae.anomaly.typicality import TypicalityStatistics
from emae.errors import EmaeError, NotFittedError
from emae.synth.tissue import make_section


class Blur(nn.Module):
    """A stand-in autoencoder: reconstructs smooth content, loses texture and noise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = torch.ones(1, 1, 5, 5, dtype=x.dtype) / 25
        return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (2,) * 4, "reflect"), k)


def _tissue(seed: int, shape=(128, 128)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (make_section(shape, seed=seed) + rng.normal(0, 0.03, shape)).astype(np.float32)


def _patches(n: int) -> np.ndarray:
    return np.stack([_tissue(100 + i)[:64, :64] for i in range(n)])


def test_smooth_and_bright_regions_are_atypical_while_error_z_misses_the_smooth_one():
    model = Blur()
    normal = _patches(24)
    image = _tissue(7)
    image[20:60, 20:60] = ndi.gaussian_filter(image, 4)[20:60, 20:60]  # defocus
    image[80:110, 70:100] = 0.95 + np.random.default_rng(1).normal(0, 0.08, (30, 30))  # burnt
    # Windows for this 128-pixel image and its 30-40 pixel squares: the defaults (1 and 16
    # pixels, chosen on 512-pixel EM sections) spread each square over most of the image.
    stats = TypicalityStatistics(smooth_sigma=2.0, aggregate_sigma=4.0).fit(model, normal)
    typ = stats.anomaly_map(model, image[None])[0]
    clean = typ[64:, :48].mean()
    assert typ[30:50, 30:50].mean() > 3 * clean
    assert typ[85:105, 75:95].mean() > 2 * clean
    # The one-sided error z-score ranks the defocused square as more normal than tissue.
    z = ErrorStatistics().fit(model, normal).anomaly_map(model, image[None])[0]
    assert z[30:50, 30:50].mean() < z[64:, :48].mean()


def test_round_trip_and_contract():
    model = Blur()
    normal = _patches(8)
    stats = TypicalityStatistics(aggregate_sigma=3.0).fit(model, normal)
    again = TypicalityStatistics.from_arrays(stats.to_arrays())
    x = _tissue(3)[None, :50, :70]
    np.testing.assert_array_equal(stats.anomaly_map(model, x), again.anomaly_map(model, x))
    assert stats.anomaly_map(model, x).shape == (1, 50, 70)
    assert (stats.anomaly_map(model, x) >= 0).all()
    with pytest.raises(NotFittedError):
        TypicalityStatistics().anomaly_map(model, x)
    with pytest.raises(EmaeError, match="aggregate_sigma"):
        TypicalityStatistics(aggregate_sigma=-1).fit(model, normal)
