"""Synthetic neuropil: contract, determinism, continuity in z and realistic statistics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from emae.errors import EmaeError
from emae.synth.tissue import make_section, make_volume, to_uint8


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _thin_dark(image: np.ndarray) -> tuple[float, float]:
    """Fraction of pixels in thin dark lines (membranes) and their contrast to the rest.

    A grey closing with a 9-pixel window fills dark structures thinner than the window; where it
    raises the (slightly smoothed) image by more than 0.12 there is a membrane-like line.
    """
    smooth = ndi.gaussian_filter(image.astype(np.float64), 1.0)
    thin = ndi.grey_closing(smooth, size=9) - smooth > 0.12
    return float(thin.mean()), float(smooth[thin].mean() - smooth[~thin].mean())


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return make_volume((8, 160, 160), seed=0)


def test_section_shape_dtype_range():
    image = make_section((96, 80), seed=0)
    assert image.shape == (96, 80)
    assert image.dtype == np.float32
    assert 0 <= image.min() and image.max() <= 1
    assert image.std() > 0.05


def test_volume_shape_dtype_range(volume):
    assert volume.shape == (8, 160, 160)
    assert volume.dtype == np.float32
    assert 0 <= volume.min() and volume.max() <= 1


def test_tiny_and_elongated_shapes():
    assert make_section((1, 1), seed=0).shape == (1, 1)
    assert make_section((8, 300), seed=0).shape == (8, 300)
    assert make_volume((1, 5, 7), seed=0).shape == (1, 5, 7)


def test_same_seed_same_image_and_generator_accepted():
    np.testing.assert_array_equal(make_section((64, 64), seed=7), make_section((64, 64), seed=7))
    a = make_section((64, 64), seed=np.random.default_rng(7))
    b = make_section((64, 64), seed=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_different_seeds_differ():
    a, b = make_section((64, 64), seed=1), make_section((64, 64), seed=2)
    assert np.abs(a - b).mean() > 0.05
    assert abs(_corr(a, b)) < 0.3


def test_consecutive_sections_are_continuous(volume):
    consecutive = [_corr(volume[z], volume[z + 1]) for z in range(len(volume) - 1)]
    assert min(consecutive) > 0.45
    assert np.mean(consecutive) > 0.5
    assert _corr(volume[0], volume[7]) < np.mean(consecutive) - 0.25
    assert not np.array_equal(volume[0], volume[1])


def test_intensity_statistics_plausible():
    image = make_section((256, 256), seed=5)
    assert 0.35 < image.mean() < 0.75
    assert 0.1 < image.std() < 0.25
    assert np.percentile(image, 1) > 0.02 and np.percentile(image, 99) < 0.98


def test_membranes_are_thin_dark_lines():
    fraction, contrast = _thin_dark(make_section((256, 256), seed=6))
    assert 0.1 < fraction < 0.4
    assert contrast < -0.1


def test_statistics_close_to_real_sections(shared_data):
    from PIL import Image

    folder = shared_data / "isbi2012" / "train" / "image"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    real = np.stack([np.asarray(Image.open(path)) for path in sorted(folder.glob("*.png"))])
    real = real.astype(np.float32) / 255
    synth = make_volume((3, 512, 512), seed=0)
    assert abs(synth.mean() - real.mean()) < 0.05
    assert abs(synth.std() - real.std()) < 0.04
    quartiles = np.percentile(real, [25, 50, 75]) - np.percentile(synth, [25, 50, 75])
    assert np.abs(quartiles).max() < 0.06
    for r, s in zip(real[::10], synth, strict=True):
        (real_frac, real_con), (syn_frac, syn_con) = _thin_dark(r), _thin_dark(s)
        assert abs(real_frac - syn_frac) < 0.1
        assert abs(real_con - syn_con) < 0.06


def test_to_uint8_scales_and_clips():
    out = to_uint8(np.array([[-0.5, 0.0, 0.5, 1.0, 2.0]], dtype=np.float32))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 0, 128, 255, 255]])


@pytest.mark.parametrize("shape", [(0, 4), (4,), (4, 4, 4), (4.5, 4)])
def test_bad_section_shape_is_rejected(shape):
    with pytest.raises(EmaeError, match="shape"):
        make_section(shape, seed=0)


def test_bad_seed_is_rejected():
    with pytest.raises(EmaeError, match="seed"):
        make_section((8, 8), seed="zero")
