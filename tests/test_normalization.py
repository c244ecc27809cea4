"""PercentileNormalizer: sampled fit, exact reproduction from JSON, clipping and bad input."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import zarr

from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError
from emae.io import Image, open_image

RNG = np.random.default_rng(3)


def _image(array: np.ndarray, name: str = "mem") -> Image:
    return Image(array, "YX" if array.ndim == 2 else "ZYX", name)


def _texture(shape: tuple[int, ...], dtype: str = "uint16") -> np.ndarray:
    """Stationary noise around 1000 (5% to 95% between about 850 and 1150)."""
    return np.clip(RNG.normal(1000, 90, shape), 1, 60000).astype(dtype)


def test_fit_estimates_the_percentiles_of_the_whole_image() -> None:
    array = _texture((4, 300, 300))
    norm = PercentileNormalizer.fit(_image(array), low=2.0, high=98.0, n_samples=200_000, seed=0)
    exact_low, exact_high = np.percentile(array, [2.0, 98.0])
    assert norm.low_value == pytest.approx(exact_low, rel=0.02)
    assert norm.high_value == pytest.approx(exact_high, rel=0.02)
    assert (norm.low, norm.high, norm.source_dtype, norm.clip) == (2.0, 98.0, "uint16", False)
    again = PercentileNormalizer.fit(_image(array), low=2.0, high=98.0, n_samples=200_000, seed=0)
    assert again == norm


def test_fit_pools_several_images_and_small_images() -> None:
    small = _image(_texture((20, 30)), "small")
    large = _image(_texture((200, 200)), "large")
    norm = PercentileNormalizer.fit([small, large], n_samples=50_000, seed=1)
    assert 700 < norm.low_value < 850 and 1150 < norm.high_value < 1300
    with pytest.raises(EmaeError, match="share one dtype"):
        PercentileNormalizer.fit([small, _image(_texture((20, 30), "float32"))])


def test_json_round_trip_reproduces_outputs_exactly(tmp_path: Path) -> None:
    array = _texture((128, 128))
    norm = PercentileNormalizer.fit(_image(array), n_samples=10_000, seed=4, clip=True)
    (tmp_path / "normalization.json").write_text(json.dumps(norm.to_dict()))
    loaded = PercentileNormalizer.from_dict(
        json.loads((tmp_path / "normalization.json").read_text())
    )
    assert loaded == norm
    np.testing.assert_array_equal(loaded(array), norm(array))
    assert loaded(array).tobytes() == norm(array).tobytes()


def test_call_maps_low_to_0_and_high_to_1_without_clipping() -> None:
    norm = PercentileNormalizer(low_value=10.0, high_value=210.0, source_dtype="uint8")
    x = np.array([[0, 10, 110], [210, 255, 10]], np.uint8)
    out = norm(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_array_equal(out, np.float32([[-0.05, 0, 0.5], [1, 1.225, 0]]))
    clipped = PercentileNormalizer(**{**norm.to_dict(), "clip": True})(x)
    np.testing.assert_array_equal(clipped, np.clip(out, 0, 1))
    assert x.dtype == np.uint8 and x[1, 1] == 255  # input untouched


def test_fit_skips_padding_by_default() -> None:
    array = _texture((256, 256))
    array[:, :160] = 0  # a black border: most patches are padding, some straddle its edge
    args = {"low": 20.0, "high": 80.0, "n_samples": 20_000, "seed": 0}
    assert PercentileNormalizer.fit(_image(array), **args).low_value > 500
    assert PercentileNormalizer.fit(_image(array), **args, is_valid=None).low_value == 0


def test_constant_images_and_invalid_values_are_errors() -> None:
    constant = _image(np.full((64, 64), 7, np.uint8), "flat.tif")
    with pytest.raises(EmaeError, match=r"flat\.tif: .*constant"):
        PercentileNormalizer.fit(constant, is_valid=None)
    with pytest.raises(EmaeError, match=r"flat\.tif"):
        PercentileNormalizer.fit(constant)  # every patch is rejected as padding
    with pytest.raises(EmaeError, match="greater than low_value"):
        PercentileNormalizer(low_value=5.0, high_value=5.0)
    with pytest.raises(EmaeError, match="percentiles"):
        PercentileNormalizer.fit(constant, low=99.0, high=1.0)
    with pytest.raises(EmaeError, match="unknown \\['scale'\\]"):
        PercentileNormalizer.from_dict({"low_value": 0.0, "high_value": 1.0, "scale": 2})
    norm = PercentileNormalizer(low_value=0.0, high_value=1.0)
    with pytest.raises(EmaeError, match="NaN"):
        norm(np.array([1.0, np.nan]))
    with pytest.raises(EmaeError, match="dtype complex"):
        norm(np.zeros(3, np.complex64))


def test_fit_reads_patches_not_the_whole_image(tmp_path: Path) -> None:
    size = 4096
    array = zarr.create_array(
        tmp_path / "big.zarr", shape=(size, size), dtype="uint8", chunks=(256, 256)
    )
    ramp = np.arange(size, dtype=np.uint8)
    array[...] = np.add.outer(ramp, ramp) % 200 + 20
    image = open_image(tmp_path / "big.zarr")
    tracemalloc.start()
    try:
        norm = PercentileNormalizer.fit(image, n_samples=40_000, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 20 <= norm.low_value < norm.high_value <= 219
    assert peak < size * size / 4
