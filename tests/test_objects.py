"""Object-centred inputs: surroundings, cropped object, cropped and masked object."""

from __future__ import annotations

import numpy as np
import pytest

from emae.data.labels import LabeledSample, load_labels, write_labels
from emae.data.objects import crop_object, object_box, object_patches
from emae.errors import EmaeError
from emae.io import write_tiff


def _disc(shape=(80, 100), centre=(30, 60), radius=10, value=200, background=50):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2
    return np.where(mask, value, background).astype(np.uint8), mask


def test_box_is_square_with_margin():
    _, mask = _disc()
    y0, x0, side = object_box(mask, margin=0.1)
    assert side == int(np.ceil(21 * 1.2))
    assert abs((y0 + side / 2) - 30.5) <= 1 and abs((x0 + side / 2) - 60.5) <= 1


def test_cropped_object_fills_the_patch_at_a_common_scale():
    small, small_mask = _disc(radius=6)
    large, large_mask = _disc(radius=18, centre=(40, 50))
    a = crop_object(small, small_mask, 32)
    b = crop_object(large, large_mask, 32)
    assert a.shape == b.shape == (32, 32)
    # Both discs cover about the same fraction of the patch, whatever their size.
    assert abs((a > 125).mean() - (b > 125).mean()) < 0.08  # pixelated small disc
    assert 0.4 < (a > 125).mean() < 0.7


def test_masked_variant_flattens_the_surroundings():
    image, mask = _disc()
    noisy = image.astype(np.float32) + np.random.default_rng(0).normal(0, 20, image.shape)
    crop = crop_object(noisy, mask, 32, masked=True, margin=0.3)
    corners = np.concatenate([crop[:3, :3].ravel(), crop[-3:, -3:].ravel()])
    assert corners.std() < 1e-3  # one background value
    assert crop_object(noisy, mask, 32, margin=0.3)[:3, :3].std() > 5


def test_object_patches_from_a_labels_csv_with_and_without_masks(tmp_path):
    samples = []
    for i, radius in enumerate((5, 9, 13)):
        image, mask = _disc(radius=radius, centre=(40, 40 + i * 5))
        write_tiff(tmp_path / f"im{i}.tif", image, axes="YX")
        write_tiff(tmp_path / f"m{i}.tif", mask.astype(np.uint8), axes="YX")
        label = "small" if radius < 10 else "large"
        samples.append(
            LabeledSample(
                str(tmp_path / f"im{i}.tif"),
                None,
                None,
                None,
                label,
                mask=str(tmp_path / f"m{i}.tif"),
            )
        )
    write_labels(tmp_path / "labels.csv", samples)
    assert "mask" in (tmp_path / "labels.csv").read_text().splitlines()[0]
    labeled = load_labels(tmp_path / "labels.csv", patch_size=32)
    assert labeled.samples[0].mask == str(tmp_path / "m0.tif")
    for variant in ("surrounding", "cropped", "masked", "whole"):
        patches, labels = object_patches(labeled, 32, variant)
        assert patches.shape == (3, 32, 32) and labels.tolist() == [1, 1, 0]
    # Without masks the object is segmented: the same crops within interpolation error.
    plain = tmp_path / "plain.csv"
    write_labels(plain, [LabeledSample(s.image, None, None, None, s.label) for s in samples])
    segmented, _ = object_patches(load_labels(plain), 32, "cropped")
    given, _ = object_patches(labeled, 32, "cropped")
    assert np.abs(segmented - given).mean() < 10


def test_bad_masks_and_variants_are_refused(tmp_path):
    image, mask = _disc()
    write_tiff(tmp_path / "im.tif", image, axes="YX")
    write_tiff(tmp_path / "small.tif", mask[:40].astype(np.uint8), axes="YX")
    (tmp_path / "a.csv").write_text("image,label,mask\nim.tif,x,small.tif\n")
    with pytest.raises(EmaeError, match="differs from its image"):
        load_labels(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("image,label,mask\nim.tif,x,nope.tif\n")
    with pytest.raises(EmaeError, match="not found"):
        load_labels(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("image,label\nim.tif,x\nim.tif,y\n")
    with pytest.raises(EmaeError, match="variant must be"):
        object_patches(load_labels(tmp_path / "c.csv"), 32, "zoomed")


def test_whole_variant_keeps_the_whole_image():
    image, mask = _disc(shape=(60, 100))
    whole = crop_object(image, np.ones_like(mask), 50, margin=0.0)
    assert whole.shape == (50, 50)
    # The 100-pixel side maps onto 50: the disc of radius 10 keeps about half its width.
    bright = np.flatnonzero((whole > 125).any(axis=0))
    assert 8 <= len(bright) <= 13
