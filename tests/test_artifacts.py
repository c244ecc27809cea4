"""Artifact injectors: one contract checked for every registered kind, plus each kind's knobs."""

from __future__ import annotations

import numpy as np
import pytest

from emae.errors import EmaeError
from emae.synth.artifacts import ARTIFACT_TYPES, INJECTORS, MASK_LEVEL, as_unit_float, inject
from emae.synth.tissue import make_section, to_uint8

LINES = ("scratch", "fold", "seam", "stripes")  # kinds whose mask runs along ``orientation``


@pytest.fixture(scope="module")
def section() -> np.ndarray:
    return make_section((128, 128), seed=11)


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)  # (y, x)


def _axis_angle(mask: np.ndarray) -> float:
    """Direction of the mask's principal axis, radians from the x axis towards +y, in [0, pi)."""
    ys, xs = np.nonzero(mask)
    cov = np.cov(np.stack([xs, ys]).astype(float))
    vals, vecs = np.linalg.eigh(cov)
    x, y = vecs[:, np.argmax(vals)]
    return float(np.arctan2(y, x) % np.pi)


def test_artifact_types_are_the_documented_ones():
    assert ARTIFACT_TYPES == ("scratch", "ring", "horseshoe", "dust", "fold", "charging",
                              "defocus", "seam", "stripes", "tile")  # fmt: skip
    assert set(INJECTORS) == set(ARTIFACT_TYPES)


@pytest.mark.parametrize("kind", ARTIFACT_TYPES)
def test_contract(kind, section):
    before = section.copy()
    new, mask = inject(section, kind, seed=0)
    np.testing.assert_array_equal(section, before)  # input untouched
    assert new.shape == mask.shape == section.shape
    assert new.dtype == np.float32 and mask.dtype == bool
    assert 0 <= new.min() and new.max() <= 1
    assert 0 < mask.mean() < 0.9
    change = np.abs(new - section)
    assert change[~mask].max() <= MASK_LEVEL + 1e-6
    assert change[mask].mean() > 0.02
    assert change[mask].mean() > 5 * change[~mask].mean()


@pytest.mark.parametrize("kind", ARTIFACT_TYPES)
def test_deterministic_for_a_seed(kind, section):
    a, mask_a = inject(section, kind, seed=5)
    b, mask_b = inject(section, kind, seed=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(mask_a, mask_b)
    c, _ = inject(section, kind, seed=6)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kind", ARTIFACT_TYPES)
def test_center_and_size_are_honoured(kind, section):
    center = (40, 84)
    _, small = inject(section, kind, seed=1, center=center, size=24, contrast=0.9)
    _, large = inject(section, kind, seed=1, center=center, size=48, contrast=0.9)
    for mask, size in ((small, 24), (large, 48)):
        assert np.linalg.norm(_centroid(mask) - center) < 0.5 * size + 3
    assert large.sum() > 1.5 * small.sum()


@pytest.mark.parametrize("kind", LINES)
@pytest.mark.parametrize("angle", [0.0, 0.6, np.pi / 2, 2.4])
def test_orientation_is_honoured(kind, angle, section):
    _, mask = inject(section, kind, seed=2, center=(64, 64), size=80, orientation=angle)
    error = abs(_axis_angle(mask) - angle % np.pi)
    assert min(error, np.pi - error) < np.radians(8)


def test_scratch_mask_is_the_line_not_its_box(section):
    _, mask = inject(section, "scratch", seed=0, center=(64, 64), size=100, orientation=0.7)
    assert mask.sum() < 25 * 100  # at most three lines a few pixels wide
    ys, xs = np.nonzero(mask)
    assert mask.sum() < 0.3 * (np.ptp(ys) + 1) * (np.ptp(xs) + 1)


def test_horseshoe_opens_towards_orientation(section):
    for angle in (0.0, np.pi / 2, 3.5):
        _, mask = inject(section, "horseshoe", seed=3, center=(64, 64), size=60, orientation=angle)
        dy, dx = _centroid(mask) - (64, 64)
        assert dx * np.cos(angle) + dy * np.sin(angle) < -2  # the closed side is opposite


@pytest.mark.parametrize("kind", [k for k in ARTIFACT_TYPES if INJECTORS[k].signed])
def test_sign_of_contrast_picks_bright_or_dark(kind, section):
    for contrast in (0.8, -0.8):
        new, mask = inject(section, kind, seed=4, center=(64, 64), size=60, contrast=contrast)
        assert np.sign((new - section)[mask].mean()) == np.sign(contrast)


@pytest.mark.parametrize("kind", ARTIFACT_TYPES)
def test_works_on_uint8_images(kind, section):
    image = as_unit_float(to_uint8(section))
    new, mask = inject(image, kind, seed=0)
    assert new.dtype == np.float32 and mask.any()


def test_every_artifact_on_a_real_section(shared_data):
    from PIL import Image

    path = shared_data / "isbi2012" / "train" / "image" / "0.png"
    if not path.exists():
        pytest.skip(f"{path} not found")
    image = as_unit_float(np.asarray(Image.open(path)))
    for kind in ARTIFACT_TYPES:
        new, mask = inject(image, kind, seed=0, center=(256, 256))
        change = np.abs(new - image)
        assert 0 < mask.mean() < 0.9, kind
        assert change[~mask].max() <= MASK_LEVEL + 1e-6, kind
        assert change[mask].mean() > 0.02, kind


def test_unknown_kind_names_it(section):
    with pytest.raises(EmaeError, match=r"'smudge'.*scratch"):
        inject(section, "smudge", seed=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"center": (200, 5)}, "center"),
        ({"size": 0}, "size"),
        ({"contrast": 1.5}, "contrast"),
        ({"orientation": float("nan")}, "orientation"),
    ],
)
def test_bad_parameters_are_rejected(kwargs, match, section):
    with pytest.raises(EmaeError, match=match):
        inject(section, "ring", seed=0, **kwargs)


def test_negative_contrast_rejected_where_polarity_is_fixed(section):
    with pytest.raises(EmaeError, match=r"'dust'.*\[0, 1\]"):
        inject(section, "dust", seed=0, contrast=-0.5)


@pytest.mark.parametrize(
    "image",
    [np.zeros((8, 8), np.uint8), np.zeros((2, 8, 8), np.float32), np.full((8, 8), 2.0)],
)
def test_bad_images_are_rejected(image):
    with pytest.raises(EmaeError, match="image"):
        inject(image, "dust", seed=0)


def test_as_unit_float():
    np.testing.assert_allclose(as_unit_float(np.array([0, 255], np.uint8)), [0, 1])
    np.testing.assert_allclose(as_unit_float(np.array([0, 65535], np.uint16)), [0, 1])
    np.testing.assert_allclose(as_unit_float(np.array([-1.0, 3.0])), [0, 1])
    inside = np.array([0.2, 0.7], np.float64)
    out = as_unit_float(inside)
    assert out.dtype == np.float32 and np.shares_memory(out, inside) is False
    np.testing.assert_allclose(out, inside)
    with pytest.raises(EmaeError, match="NaN"):
        as_unit_float(np.array([np.nan, 1.0]))


def test_gallery_is_written(tmp_path):
    from emae.synth.gallery import write_gallery

    path = write_gallery(tmp_path / "gallery.png", seed=0, size=64)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["gallery.png"]
