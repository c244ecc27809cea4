"""Patch sampling: determinism, bounds, masks, grids, stacks and chunked reads."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from emae.data.sampling import (
    PatchLocation,
    grid_locations,
    not_empty,
    random_locations,
    read_patches,
    sample_patches,
)
from emae.errors import EmaeError
from emae.io.image import Image


def _pixels(shape: tuple[int, ...], seed: int = 0, dtype: str = "uint8") -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 200, shape).astype(dtype)


@pytest.fixture
def zarr_image(tmp_path) -> tuple[Image, np.ndarray]:
    pixels = _pixels((300, 400))
    array = zarr.create_array(tmp_path / "a.zarr", shape=pixels.shape, chunks=(64, 48), dtype="u1")
    array[:] = pixels
    return Image(array, "YX", str(tmp_path / "a.zarr")), pixels


@pytest.fixture
def zarr_stack(tmp_path) -> tuple[Image, np.ndarray]:
    pixels = _pixels((5, 120, 100), seed=1)
    array = zarr.create_array(
        tmp_path / "s.zarr", shape=pixels.shape, chunks=(1, 32, 32), dtype="u1"
    )
    array[:] = pixels
    return Image(array, "ZYX", str(tmp_path / "s.zarr")), pixels


def _expected(pixels: np.ndarray, loc: PatchLocation, size: int) -> np.ndarray:
    section = pixels if pixels.ndim == 2 else pixels[loc.z]
    return section[loc.y : loc.y + size, loc.x : loc.x + size]


def test_same_seed_same_patches_and_different_seeds_differ(zarr_image):
    image, _ = zarr_image
    locs_a, patches_a = sample_patches([image], 50, 16, seed=7)
    locs_b, patches_b = sample_patches([image], 50, 16, seed=7)
    assert locs_a == locs_b
    np.testing.assert_array_equal(patches_a, patches_b)
    assert random_locations([image], 50, 16, seed=8) != locs_a
    assert random_locations([image], 50, 16, seed=7) == locs_a


def test_samples_do_not_depend_on_how_many_are_drawn(zarr_image):
    image, _ = zarr_image
    all_locs = random_locations([image], 30, 16, seed=3)
    assert random_locations([image], 10, 16, seed=3) == all_locs[:10]
    assert random_locations([image], 5, 16, seed=3, start=12) == all_locs[12:17]


def test_read_patches_from_chunked_zarr_matches_numpy(zarr_image, zarr_stack):
    for image, pixels in (zarr_image, zarr_stack):
        locs = random_locations([image], 200, 40, seed=0, is_valid=None)
        locs += [PatchLocation(0, image.n_sections - 1, 0, 0)] * 2  # repeated and in a corner
        patches = read_patches([image], locs, 40)
        assert patches.shape == (202, 40, 40) and patches.dtype == np.uint8
        for loc, patch in zip(locs, patches, strict=True):
            np.testing.assert_array_equal(patch, _expected(pixels, loc, 40))


def test_read_patches_mixes_sources_and_dtypes(zarr_image):
    image, pixels = zarr_image
    other = _pixels((50, 60), dtype="uint16")
    locs = [PatchLocation(1, 0, 3, 4), PatchLocation(0, 0, 10, 20)]
    patches = read_patches([image, Image(other, "YX", "b")], locs, 8)
    assert patches.dtype == np.uint16
    np.testing.assert_array_equal(patches[0], other[3:11, 4:12])
    np.testing.assert_array_equal(patches[1], pixels[10:18, 20:28])


def test_read_patches_refuses_a_patch_across_the_border(zarr_image):
    image, _ = zarr_image
    with pytest.raises(EmaeError, match=r"a\.zarr: patch of size 16 at y=290, x=0 crosses"):
        read_patches([image], [PatchLocation(0, 0, 0, 0), PatchLocation(0, 0, 290, 0)], 16)


@settings(max_examples=40, deadline=None, database=None)
@given(
    shapes=st.lists(
        st.tuples(st.integers(1, 3), st.integers(4, 90), st.integers(4, 90)), min_size=1, max_size=3
    ),
    size_fraction=st.floats(0.05, 1.0),
    n=st.integers(0, 30),
    seed=st.integers(0, 2**32),
)
def test_locations_are_always_inside(shapes, size_fraction, n, seed):
    images = [
        Image(np.zeros(s[1:]) if s[0] == 1 else np.zeros(s), "YX" if s[0] == 1 else "ZYX", str(i))
        for i, s in enumerate(shapes)
    ]
    size = max(1, int(size_fraction * min(min(s[1:]) for s in shapes)))
    locs = random_locations(images, n, size, seed=seed, is_valid=None)
    assert len(locs) == n
    for loc in locs:
        image = images[loc.source_index]
        assert 0 <= loc.z < image.n_sections
        assert 0 <= loc.y <= image.yx_shape[0] - size and 0 <= loc.x <= image.yx_shape[1] - size


def test_sampling_covers_sections_and_weights_by_area(zarr_stack):
    stack, _ = zarr_stack
    small = Image(np.ones((120, 100), np.uint8), "YX", "small")
    locs = random_locations([stack, small], 3000, 20, seed=0, is_valid=None)
    assert {loc.z for loc in locs if loc.source_index == 0} == set(range(5))
    from_small = sum(loc.source_index == 1 for loc in locs)
    assert 3000 / 6 * 0.8 < from_small < 3000 / 6 * 1.2  # one section of six


@pytest.mark.parametrize("mask_shape", [(300, 400), (75, 100), (38, 50), (37, 50)])
def test_mask_is_respected_at_full_and_low_resolution(zarr_image, mask_shape):
    image, _ = zarr_image
    factor = round(300 / mask_shape[0])
    mask = np.zeros(mask_shape, np.uint8)
    mask[mask_shape[0] // 3 :, : mask_shape[1] // 2] = 1
    full = np.repeat(np.repeat(mask, factor, 0), factor, 1)
    full = np.pad(full, [(0, max(0, 300 - full.shape[0])), (0, 0)], mode="edge")[:300, :400]
    locs = random_locations(
        [image], 300, 24, seed=1, masks=[mask], min_valid_fraction=0.75, is_valid=None
    )
    for loc in locs:
        assert full[loc.y : loc.y + 24, loc.x : loc.x + 24].mean() >= 0.75
    strict = random_locations([image], 100, 24, seed=1, masks=[mask], is_valid=None)
    assert all(full[loc.y : loc.y + 24, loc.x : loc.x + 24].all() for loc in strict)


def test_stack_mask_per_section_and_shared(zarr_stack):
    stack, _ = zarr_stack
    per_section = np.zeros((5, 120, 100), bool)
    per_section[2] = True
    assert {loc.z for loc in random_locations([stack], 40, 16, seed=0, masks=[per_section])} == {2}
    shared = np.zeros((60, 50), bool)
    shared[:, :25] = True  # left half of every section, at half resolution
    locs = random_locations([stack], 40, 16, seed=0, masks=[shared])
    assert max(loc.x for loc in locs) <= 50 - 16 and len({loc.z for loc in locs}) > 1


def test_mask_of_the_wrong_shape_is_refused(zarr_image, zarr_stack):
    with pytest.raises(EmaeError, match=r"mask 0 for .*a\.zarr: size 70 is not the image size 300"):
        random_locations([zarr_image[0]], 5, 16, seed=0, masks=[np.ones((70, 100))])
    with pytest.raises(EmaeError, match="a ZYX mask needs 5 sections"):
        random_locations([zarr_stack[0]], 5, 16, seed=0, masks=[np.ones((4, 120, 100))])
    with pytest.raises(EmaeError, match="one mask"):
        random_locations([zarr_image[0]], 5, 16, seed=0, masks=[])


def test_padding_is_rejected_and_custom_checks_apply():
    pixels = _pixels((100, 200))
    pixels[:, :100] = 0  # padding on the left half
    image = Image(pixels, "YX", "padded")
    _, patches = sample_patches([image], 200, 16, seed=0)
    assert all((p == 0).mean() <= 0.5 for p in patches)
    _, bright = sample_patches([image], 20, 16, seed=0, is_valid=lambda p: p.mean() > 100)
    assert all(p.mean() > 100 for p in bright)
    assert not not_empty(np.full((8, 8), 7)) and not not_empty(np.full((8, 8), 255, np.uint8))
    assert not_empty(_pixels((8, 8))) and not not_empty(_pixels((8, 8)), min_std=1000)


def test_too_few_valid_patches_is_a_clear_error(zarr_image):
    image, _ = zarr_image
    with pytest.raises(EmaeError, match=r"could not find 10 of 10 valid patches .* in .*a\.zarr"):
        random_locations([image], 10, 16, seed=0, masks=[np.zeros((300, 400), bool)])
    with pytest.raises(EmaeError, match="could not find"):
        random_locations([image], 3, 16, seed=0, is_valid=lambda p: False, max_attempts=5)


def test_bad_arguments_are_refused(zarr_image):
    image, _ = zarr_image
    with pytest.raises(EmaeError, match=r"patch_size must be <= image size, got patch_size=301"):
        random_locations([image], 1, 301, seed=0)
    with pytest.raises(EmaeError, match="seed must be a non-negative integer"):
        random_locations([image], 1, 8, seed=-1)
    with pytest.raises(EmaeError, match="no images"):
        random_locations([], 1, 8, seed=0)


def test_grid_count_and_mask(zarr_image, zarr_stack):
    image, _ = zarr_image
    grid = grid_locations(image, 64, stride=32)
    assert len(grid) == ((300 - 64) // 32 + 1) * ((400 - 64) // 32 + 1)
    assert grid[0] == PatchLocation(0, 0, 0, 0) and grid[-1] == PatchLocation(0, 0, 224, 320)
    assert len(grid_locations(image, 100)) == 3 * 4
    stack, _ = zarr_stack
    assert len(grid_locations(stack, 50, source_index=3)) == 5 * 2 * 2
    assert len(grid_locations(stack, 50, sections=[1, 4])) == 2 * 2 * 2
    mask = np.zeros((300, 400), bool)
    mask[:150] = True
    assert len(grid_locations(image, 50, mask=mask)) == 3 * 8
