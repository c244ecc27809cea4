"""Tiling geometry and blending: exact reassembly, constant maps, weights summing to one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emae.errors import EmaeError
from emae.volume.tiling import blend_weights, plan_tiles, predict_tiled


def identity(x: np.ndarray) -> np.ndarray:
    return x[:, None]


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 150),
    w=st.integers(1, 150),
    tile=st.integers(4, 64),
    data=st.data(),
)
def test_identity_reassembles_the_input_for_any_shape(h, w, tile, data):
    overlap = data.draw(st.integers(0, tile - 1))
    image = np.random.default_rng(h * 1000 + w).random((h, w)).astype(np.float32)
    out = predict_tiled(image, identity, tile=tile, overlap=overlap, batch_size=3)
    assert out.shape == (1, h, w)
    np.testing.assert_allclose(out[0], image, rtol=1e-6, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 120), w=st.integers(1, 120), tile=st.integers(4, 48), data=st.data())
def test_tiles_cover_every_pixel_and_weights_sum_to_one(h, w, tile, data):
    overlap = data.draw(st.integers(0, tile - 1))
    tiles = plan_tiles((h, w), tile, overlap)
    weights = blend_weights(tiles, (h, w), overlap)
    total = np.zeros((h, w))
    for t, wt in zip(tiles, weights, strict=True):
        assert t.shape == wt.shape and 0 < t.shape[0] <= tile and 0 < t.shape[1] <= tile
        assert (wt > 0).all()
        total[t.slices] += wt
    assert (total > 0).all()
    normalized = sum(
        np.pad(wt, ((t.y0, h - t.y1), (t.x0, w - t.x1))) / total
        for t, wt in zip(tiles, weights, strict=True)
    )
    np.testing.assert_allclose(normalized, 1.0, rtol=1e-12)


def test_constant_image_gives_constant_map_and_neighbours_overlap():
    image = np.full((100, 90), 7.0)
    out = predict_tiled(image, lambda x: np.stack([x, 2 * x], 1), tile=32, overlap=8)
    np.testing.assert_allclose(out, np.stack([image, 2 * image]), rtol=1e-6)
    tiles = plan_tiles((100, 90), 32, 8)
    assert tiles[0].x1 - tiles[1].x0 == 8  # the declared overlap between neighbours
    assert tiles[-1].y1 == 100 and tiles[-1].x1 == 90  # the last tiles end at the border


def test_a_section_smaller_than_a_tile_is_one_tile():
    assert plan_tiles((10, 20), 64, 16) == plan_tiles((10, 20), 64, 0)
    assert len(plan_tiles((10, 20), 64, 16)) == 1
    # One tile is not blended: its maps come back as the function gave them, in float32.
    image = np.random.default_rng(0).random((10, 20))
    calls = []

    def fn(x):
        calls.append(x.shape)
        return np.stack([x, np.sqrt(x)], 1).astype(np.float32)

    out = predict_tiled(image, fn, tile=64, overlap=16)
    assert calls == [(1, 10, 20)] and out.dtype == np.float32
    np.testing.assert_array_equal(out, fn(image[None])[0])
    with pytest.raises(EmaeError, match="returned shape"):
        predict_tiled(image, lambda x: x, tile=64, overlap=16)


def test_blending_hides_tile_borders():
    # A map that is wrong near every tile border (like padding effects) is corrected by the
    # tapered overlap: the error at a seam is smaller than without blending.
    def border_error(x):
        out = x.copy()
        out[:, :4] += 1.0
        out[:, -4:] += 1.0
        out[:, :, :4] += 1.0
        out[:, :, -4:] += 1.0
        return out[:, None]

    image = np.zeros((128, 128), dtype=np.float32)
    hard = predict_tiled(image, border_error, tile=64, overlap=0)
    soft = predict_tiled(image, border_error, tile=64, overlap=16)
    seam = slice(56, 72)
    assert soft[0, 20:100, seam].mean() < 0.5 * hard[0, 20:100, seam].mean()


def test_bad_arguments_are_refused():
    with pytest.raises(EmaeError, match="overlap"):
        plan_tiles((10, 10), 8, 8)
    with pytest.raises(EmaeError, match="empty"):
        plan_tiles((0, 10), 8, 2)
    with pytest.raises(EmaeError, match="returned shape"):
        predict_tiled(np.zeros((8, 8)), lambda x: x, tile=4, overlap=0)
