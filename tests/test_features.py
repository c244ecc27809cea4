"""Handcrafted features: shapes and names, per-image independence, invariances, known shapes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from emae.classify.features import HandcraftedFeatures, feature_names, handcrafted_features
from emae.data.segmentation import otsu_threshold
from emae.errors import EmaeError


def disc(size: int, radius: float, *, inside: float = 0.8, outside: float = 0.2) -> np.ndarray:
    """``(size, size)`` float image of a disc centred in the image."""
    y, x = np.mgrid[:size, :size]
    centre = (size - 1) / 2
    return np.where((y - centre) ** 2 + (x - centre) ** 2 <= radius**2, inside, outside)


def named(row: np.ndarray, **kwargs: int) -> dict[str, float]:
    return dict(zip(feature_names(**kwargs), row, strict=True))


def blobs(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """``(n, size, size)`` uint8 images: an off-centre ellipse on a noisy background."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    images = []
    for _ in range(n):
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        a, b = rng.uniform(3, size / 4, 2)
        inside = ((y - cy) / a) ** 2 + ((x - cx) / b) ** 2 <= 1
        image = np.where(inside, 180.0, 70.0) + rng.normal(0, 15, (size, size))
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return np.stack(images)


def test_shape_names_and_dtype():
    images = blobs(4)
    f = handcrafted_features(images)
    names = feature_names()
    assert f.shape == (4, len(names)) == (4, 74) and f.dtype == np.float64
    assert np.isfinite(f).all() and len(set(names)) == len(names)
    for name in ("hist_03", "hu_2", "radial_05", "edge_radial_02", "snr", "object_max_width"):
        assert name in names
    small = handcrafted_features(images, bins=8, n_radial=4)
    assert small.shape == (4, len(feature_names(bins=8, n_radial=4))) == (4, 74 - 8 - 8)
    assert np.isclose(named(f[0])["hist_00"] + f[0, 1:16].sum(), 1.0)


def test_each_image_is_described_on_its_own():
    images = blobs(5)
    masks = images > 128
    masks[:, 16, 16] = True  # none empty
    for m in (None, masks):
        batch = handcrafted_features(images, m)
        for i in range(len(images)):
            alone = handcrafted_features(images[i : i + 1], None if m is None else m[i : i + 1])
            np.testing.assert_array_equal(batch[i], alone[0])


def test_integer_images_are_scaled_by_their_dtype_range():
    images = blobs(2)
    np.testing.assert_allclose(
        handcrafted_features(images), handcrafted_features(images / 255.0), rtol=1e-9, atol=1e-9
    )
    wide = images.astype(np.uint16) * 100
    np.testing.assert_allclose(
        handcrafted_features(wide, value_range=(0, 25500)),
        handcrafted_features(images),
        rtol=1e-9,
        atol=1e-9,
    )


@pytest.mark.parametrize("with_mask", [False, True])
def test_rotation_by_90_degrees_keeps_hu_moments_and_profiles(with_mask):
    images = blobs(3, size=33, seed=1)
    masks = images > 128 if with_mask else None
    turned = np.rot90(images, 1, axes=(1, 2))
    turned_masks = None if masks is None else np.rot90(masks, 1, axes=(1, 2))
    names = feature_names()
    keep = [i for i, n in enumerate(names) if n.startswith(("hu_", "radial_", "edge_radial_"))]
    keep += [names.index(n) for n in ("object_area", "object_max_width", "glcm_contrast")]
    a = handcrafted_features(images, masks)[:, keep]
    b = handcrafted_features(turned, turned_masks)[:, keep]
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_disc_size_and_shape():
    radius = 15
    rng = np.random.default_rng(0)
    image = disc(64, radius) + rng.normal(0, 0.03, (64, 64))
    f = named(handcrafted_features(image[None])[0])
    assert f["object_area"] == pytest.approx(np.pi * radius**2, rel=0.03)
    assert f["object_max_width"] == pytest.approx(2 * radius, rel=0.05)
    assert f["object_equiv_diameter"] == pytest.approx(2 * radius, rel=0.03)
    assert f["object_major_axis"] == pytest.approx(2 * radius, rel=0.05)
    assert f["object_eccentricity"] < 0.2
    assert f["object_contrast"] == pytest.approx(0.6, abs=0.05)
    assert f["radial_00"] > 0.7 and f["radial_07"] < 0.3
    # The ring holding the disc's rim (r = 15 of 32) has the strongest edges.
    assert np.argmax([f[f"edge_radial_{i:02d}"] for i in range(8)]) == 3


def test_dark_object_and_mask_give_the_same_size():
    radius = 10
    dark = disc(48, radius, inside=0.1, outside=0.9)
    mask = disc(48, radius, inside=1, outside=0).astype(bool)
    found = named(handcrafted_features(dark[None])[0])
    given = named(handcrafted_features(dark[None], mask[None])[0])
    assert found["object_area"] == given["object_area"] == mask.sum()
    assert found["object_contrast"] == pytest.approx(-0.8)


def test_snr_falls_with_noise_and_noise_is_estimated():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:64, :64]
    clean = 0.5 + 0.3 * np.sin(x / 6.0) * np.cos(y / 9.0)
    noisy = clean + rng.normal(0, 0.2, clean.shape)
    f_clean, f_noisy = (named(r) for r in handcrafted_features(np.stack([clean, noisy])))
    assert f_clean["snr"] > 10 * f_noisy["snr"]
    assert f_noisy["noise_std"] == pytest.approx(0.2, rel=0.15)
    assert f_clean["noise_std"] < 0.01


@pytest.mark.parametrize("value", [0, 128, 255])
def test_constant_images_give_finite_features(value):
    images = np.full((2, 16, 16), value, dtype=np.uint8)
    f = handcrafted_features(images)
    assert np.isfinite(f).all()
    row = named(f[0])
    assert row["object_area"] == 0 and row["edge_density"] == 0 and row["snr"] == 0
    assert np.isfinite(handcrafted_features(np.zeros((1, 8, 8)), np.ones((1, 8, 8), bool))).all()


def test_otsu_splits_two_levels():
    values = np.r_[np.full(50, 0.2), np.full(30, 0.7)]
    assert 0.2 <= otsu_threshold(values) < 0.7
    assert otsu_threshold(np.ones(5)) is None


@pytest.mark.parametrize(
    ("images", "masks", "kwargs", "match"),
    [
        (np.zeros((8, 8)), None, {}, "N, H, W"),
        (np.zeros((1, 1, 8, 8)), None, {}, "N, H, W"),
        (np.zeros((0, 8, 8)), None, {}, "N, H, W"),
        (np.zeros((1, 2, 8)), None, {}, "at least 3x3"),
        (np.zeros((1, 8, 8), complex), None, {}, "real numbers"),
        (np.full((2, 8, 8), np.nan), None, {}, "NaN"),
        (np.full((1, 8, 8), np.inf), None, {}, "NaN or infinite"),
        (np.zeros((2, 8, 8)), np.ones((2, 8, 7), bool), {}, "shape of the images"),
        (np.zeros((2, 8, 8)), np.zeros((2, 8, 8), bool), {}, r"masks \[0, 1\] are empty"),
        (np.zeros((1, 8, 8)), np.full((1, 8, 8), 2), {}, "boolean"),
        (np.zeros((1, 8, 8)), None, {"bins": 1}, "bins"),
        (np.zeros((1, 8, 8)), None, {"n_radial": 0}, "n_radial"),
        (np.zeros((1, 8, 8)), None, {"value_range": (1, 1)}, "value_range"),
    ],
)
def test_bad_input_is_named(images, masks, kwargs, match):
    with pytest.raises(EmaeError, match=match):
        handcrafted_features(images, masks, **kwargs)


def test_transformer_runs_inside_a_grid_search():
    images = np.concatenate([blobs(8, seed=2), 255 - blobs(8, seed=3)])
    labels = np.repeat([0, 1], 8)
    pipeline = make_pipeline(HandcraftedFeatures(bins=8), StandardScaler(), LogisticRegression())
    search = GridSearchCV(pipeline, {"handcraftedfeatures__n_radial": [2, 4]}, cv=2)
    search.fit(images, labels)
    assert search.score(images, labels) > 0.9
    step = search.best_estimator_[0]
    assert len(step.get_feature_names_out()) == step.transform(images[:1]).shape[1]
    assert HandcraftedFeatures().fit(images) is not None
