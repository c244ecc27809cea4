"""The lazy Image wrapper."""

from __future__ import annotations

import numpy as np
import pytest

from emae.errors import EmaeError
from emae.io.image import Image


def test_2d_and_3d_geometry():
    img = Image(np.arange(12, dtype=np.uint8).reshape(3, 4), "YX", "a")
    assert (img.shape, img.yx_shape, img.n_sections, img.ndim) == ((3, 4), (3, 4), 1, 2)
    vol = Image(np.zeros((5, 3, 4), np.uint16), "ZYX", "b")
    assert (vol.yx_shape, vol.n_sections, vol.dtype) == ((3, 4), 5, np.dtype(np.uint16))


def test_read_patch_matches_slicing():
    data = np.random.default_rng(0).integers(0, 255, (2, 20, 30), dtype=np.uint8)
    vol = Image(data, "ZYX", "v")
    np.testing.assert_array_equal(vol.read_patch(1, 3, 7, 8), data[1, 3:11, 7:15])
    np.testing.assert_array_equal(vol.section(0), data[0])


@pytest.mark.parametrize(("y", "x"), [(-1, 0), (0, -1), (13, 0), (0, 23)])
def test_patch_crossing_the_border_is_refused(y, x):
    img = Image(np.zeros((20, 30), np.uint8), "YX", "img.tif")
    with pytest.raises(
        EmaeError, match=r"img\.tif: patch of size 8 .* crosses the border of an image of 20x30"
    ):
        img.read_patch(0, y, x, 8)


def test_axes_must_match_dimensions():
    with pytest.raises(EmaeError, match="expected a 3D array"):
        Image(np.zeros((3, 4)), "ZYX", "x.tif")
    with pytest.raises(EmaeError, match="axes must be one of"):
        Image(np.zeros((3, 4)), "XY", "x.tif")


def test_section_out_of_range():
    with pytest.raises(EmaeError, match=r"section z=5 outside 0\.\.1"):
        Image(np.zeros((2, 3, 4)), "ZYX", "v").section(5)
    with pytest.raises(EmaeError, match="only section 0"):
        Image(np.zeros((3, 4)), "YX", "v").section(1)
