"""PCA, the linear autoencoder baseline: closed-form fit, tiling geometry, model contract."""

from __future__ import annotations

import numpy as np
import pytest
import safetensors.torch
import torch
from sklearn.decomposition import PCA

from conftest import fast_statistics
from emae.anomaly.scores import SCORES, anomaly_maps
from emae.anomaly.statistics import FeatureStatistics
from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError, NotFittedError
from emae.folders.autoencoder import load_bundle, save_bundle
from emae.models import PCAAutoencoder, build_model, model_spec
from emae.models.blocks import center_crop
from emae.synth.tissue import make_section


def waves(n: int, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """``(N, H, W)`` float32 images ``c + a * cos(8 pi y / (H-1)) * cos(7 pi x / (W-1))``.

    ``c`` and ``a`` are random per image. Each cosine is even about the first and the last
    pixel, so reflect-padding extends it unchanged, and every tile, inside or across the border,
    lies in the span of the constant and the four products of ``cos``/``sin`` in y and x: a
    5-dimensional subspace.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    wave = np.cos(8 * np.pi * y / (shape[0] - 1)) * np.cos(7 * np.pi * x / (shape[1] - 1))
    c, a = rng.uniform(0, 1, (n, 1, 1)), rng.uniform(0.5, 1, (n, 1, 1))
    return (c + a * wave).astype(np.float32)


def sections(n: int, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """``(N, H, W)`` synthetic EM sections in [0, 1]."""
    return np.stack([make_section(shape, seed=seed + i) for i in range(n)])


@pytest.fixture(scope="module")
def fitted() -> PCAAutoencoder:
    """8 components of 8x8 tiles at stride 4, fitted on synthetic EM."""
    return build_model("pca", patch_size=8, n_components=8).fit_patches(sections(4, (48, 48)))


# --- the closed-form fit ---------------------------------------------------------------------


def test_registered_as_fitted_in_closed_form():
    spec = model_spec("pca")
    assert spec.fitted_in_closed_form and spec.description
    assert not (spec.denoising or spec.variational)
    assert not model_spec("conv-ae").fitted_in_closed_form
    model = build_model("pca", patch_size=12, n_components=5)
    assert (model.patch_size, model.n_components, model.stride) == (12, 5, 6)
    assert model.feature_channels == 5 and model.downsample_factor == 6
    assert model.latent == "spatial" and not list(model.parameters())


def test_data_in_a_subspace_is_reconstructed_exactly():
    train = waves(6, (37, 51))
    exact = PCAAutoencoder(patch_size=8, n_components=5).fit_patches(train, seed=1)
    short = PCAAutoencoder(patch_size=8, n_components=4).fit_patches(train, seed=1)
    x = torch.from_numpy(waves(3, (37, 51), seed=2)[:, None])  # unseen images, borders too
    with torch.no_grad():
        torch.testing.assert_close(exact(x), x, rtol=0, atol=1e-5)
        assert (short(x) - x).abs().max() > 1e-2  # one component fewer is not enough


@pytest.mark.parametrize("shape", [(1, 1), (3, 2), (9, 9)])
def test_constant_images_are_reconstructed_when_constants_are_in_the_span(shape):
    # The training images have random offsets, so the constant tile is in the fitted span;
    # images smaller than a tile are replicate-padded and stay constant.
    model = PCAAutoencoder(patch_size=8, n_components=5).fit_patches(waves(6, (40, 40)))
    x = torch.full((2, 1, *shape), 0.3)
    x[1] = -2.0
    with torch.no_grad():
        torch.testing.assert_close(model(x), x, rtol=0, atol=1e-5)


def test_single_tiles_match_sklearn():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(60, 6, 6)).astype(np.float32) * np.linspace(0.2, 2, 36).reshape(6, 6)
    test = rng.normal(size=(5, 6, 6)).astype(np.float32)
    model = PCAAutoencoder(patch_size=6, n_components=7, stride=6).fit_patches(train)
    reference = PCA(n_components=7).fit(train.reshape(60, 36).astype(np.float64))
    flat = test.reshape(5, 36).astype(np.float64)
    x = torch.from_numpy(test[:, None])
    with torch.no_grad():
        recon, z = model(x), model.features(x)
    expected = reference.inverse_transform(reference.transform(flat)).reshape(5, 1, 6, 6)
    np.testing.assert_allclose(recon.numpy(), expected, atol=1e-4)
    assert z.shape == (5, 7, 1, 1)
    np.testing.assert_allclose(z[:, :, 0, 0].numpy(), reference.transform(flat), atol=1e-4)
    np.testing.assert_allclose(model.mean.numpy(), reference.mean_, atol=1e-5)


def test_components_are_orthonormal_and_the_fit_is_seeded():
    images = sections(3, (64, 64))
    a = PCAAutoencoder(n_components=6).fit_patches(images, seed=3, max_tiles=50)
    b = PCAAutoencoder(n_components=6).fit_patches(torch.from_numpy(images[:, None]), seed=3)
    c = PCAAutoencoder(n_components=6).fit_patches(images, seed=3, max_tiles=50)
    gram = a.components @ a.components.T
    torch.testing.assert_close(gram, torch.eye(6), rtol=0, atol=1e-5)
    assert a.fitted.item() == 1 and a.mean.dtype == a.components.dtype == torch.float32
    assert torch.equal(a.components, c.components)  # same seed, same subset of 50 tiles
    assert not torch.equal(a.mean, b.mean)  # all 147 tiles differ from the subset


# --- geometry and the model contract -------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (33, 64), (64, 64), (2, 100)])
def test_any_shape_gives_the_same_shape(fitted, shape):
    x = torch.rand(2, 1, *shape, generator=torch.Generator().manual_seed(0))
    h, w = (-(-s // 4) for s in shape)
    with torch.no_grad():
        recon, z = fitted(x), fitted.features(x)
        assert recon.shape == x.shape and recon.dtype == x.dtype
        assert torch.isfinite(recon).all()
        assert z.shape == (2, 8, h, w)
        torch.testing.assert_close(fitted.encode(x), z, rtol=0, atol=0)
        assert fitted.decode(z).shape == (2, 1, h * 4, w * 4)


def test_decode_of_encode_is_the_reconstruction_away_from_the_border(fitted):
    x = torch.from_numpy(sections(2, (45, 38))[:, None])
    with torch.no_grad():
        inner = center_crop(fitted.decode(fitted.encode(x)), x.shape[-2:])
        recon = fitted(x)
    torch.testing.assert_close(inner[..., 4:-4, 4:-4], recon[..., 4:-4, 4:-4])


def test_every_pixel_is_averaged_over_the_same_number_of_tiles():
    # A pixel-wise affine reconstruction (one component per pixel) shows the overlap: it is
    # exact only if every pixel is divided by the number of tiles that actually cover it.
    model = PCAAutoencoder(patch_size=4, n_components=16, stride=2)
    model.components.copy_(torch.eye(16))
    model.fitted.fill_(1)
    x = torch.rand(1, 1, 11, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), x)


def test_samples_are_independent_and_bf16_works(fitted):
    x = torch.from_numpy(sections(3, (24, 40))[:, None])
    with torch.no_grad():
        whole = fitted(x)
        torch.testing.assert_close(fitted(x[1:2]), whole[1:2])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = fitted(x)
            half = fitted(x.bfloat16())
    assert autocast.dtype == torch.float32 and half.dtype == torch.bfloat16
    torch.testing.assert_close(autocast, whole)
    torch.testing.assert_close(half.float(), whole, rtol=0, atol=0.05)


def test_state_dict_round_trip_gives_identical_outputs(fitted, tmp_path):
    path = tmp_path / "weights.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in fitted.state_dict().items()}, path)
    fresh = build_model("pca", patch_size=8, n_components=8)
    fresh.load_state_dict(safetensors.torch.load_file(path))
    x = torch.from_numpy(sections(2, (30, 21), seed=5)[:, None])
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), fitted(x), rtol=0, atol=0)
        torch.testing.assert_close(fresh.features(x), fitted.features(x), rtol=0, atol=0)


def test_model_folder_round_trip(fitted, tmp_path):
    kwargs = {"patch_size": 8, "n_components": 8}
    normalizer = PercentileNormalizer(0.0, 1.0)
    path = save_bundle(
        tmp_path / "run",
        model=fitted,
        model_name="pca",
        model_kwargs=kwargs,
        normalizer=normalizer,
        config={},
    )
    model = load_bundle(path).model
    assert model.fitted.item() == 1
    x = torch.from_numpy(sections(1, (19, 26), seed=6)[:, None])
    with torch.no_grad():
        torch.testing.assert_close(model(x), fitted(x), rtol=0, atol=0)


def test_unfitted_model_raises():
    model = build_model("pca")
    x = torch.zeros(1, 1, 16, 16)
    for call in (model, model.features, model.encode):
        with pytest.raises(NotFittedError, match=r"not fitted yet; call fit_patches"):
            call(x)
    with pytest.raises(NotFittedError):
        model.decode(torch.zeros(1, 32, 2, 2))


# --- every score works unchanged -----------------------------------------------------------


@pytest.mark.parametrize("score", SCORES)
def test_every_score_runs(fitted, score):
    normal = sections(4, (32, 32), seed=10)
    stats = fast_statistics(score)
    stats = stats.fit(fitted, normal) if stats else None
    maps = anomaly_maps(fitted, sections(2, (40, 27), seed=20), score=score, stats=stats)
    assert maps.shape == (2, 40, 27) and maps.dtype == np.float32 and np.isfinite(maps).all()


@pytest.mark.parametrize(("patch_size", "stride"), [(8, 4), (12, 6), (7, 7), (9, 3)])
def test_feature_cells_sit_where_feature_statistics_puts_them(patch_size, stride):
    # FeatureStatistics upsamples the (h, w) map by the stride and center-crops it; the centroid
    # of an upsampled one-hot cell is where it puts that cell. Its feature vector must be the
    # projection of the tile centred there.
    model = PCAAutoencoder(patch_size=patch_size, n_components=6, stride=stride)
    model.fit_patches(sections(2, (40, 40)))
    x = torch.from_numpy(sections(1, (45, 38), seed=3)[:, None])
    with torch.no_grad():
        z = model.features(x)[0]  # (k, h, w)
    h, w = z.shape[1:]
    for i, j in [(3, 4), (5, 2), (h - 4, w - 3)]:
        cell = torch.zeros(1, 1, h, w)
        cell[..., i, j] = 1.0
        up = torch.nn.functional.interpolate(cell, scale_factor=stride, mode="bilinear")
        weight = center_crop(up, (45, 38))[0, 0]
        ys, xs = torch.meshgrid(torch.arange(45.0), torch.arange(38.0), indexing="ij")
        cy, cx = ((weight * c).sum() / weight.sum() for c in (ys, xs))
        top, left = (round(float(c) - (patch_size - 1) / 2) for c in (cy, cx))
        tile = x[0, 0, top : top + patch_size, left : left + patch_size].reshape(-1)
        expected = model.components @ (tile - model.mean)
        torch.testing.assert_close(z[:, i, j], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("centre", [(20, 20), (9, 33), (37, 6)])
def test_a_local_anomaly_peaks_where_it_is_in_the_feature_map(centre):
    model = PCAAutoencoder(patch_size=8, n_components=8, stride=4)
    model.fit_patches(sections(4, (48, 48), seed=30))
    stats = FeatureStatistics().fit(model, sections(4, (48, 48), seed=40))
    image = sections(1, (45, 39), seed=50)
    y, x = centre
    image[0, y - 1 : y + 2, x - 1 : x + 2] = 3.0  # a bright 3x3 speck, far out of range
    distance = stats.anomaly_map(model, image)[0]
    peak = np.unravel_index(np.argmax(distance), distance.shape)
    assert max(abs(peak[0] - y), abs(peak[1] - x)) <= model.stride, (peak, centre)


# --- bad arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patch_size": 0}, r"patch_size must be a positive int, got 0"),
        ({"n_components": 0}, r"n_components must be a positive int, got 0"),
        ({"stride": 0}, r"stride must be a positive int, got 0"),
        ({"patch_size": 8, "stride": 9}, r"stride must be <= patch_size .* stride=9"),
        ({"patch_size": 4, "n_components": 17}, r"n_components must be <= patch_size\*\*2 = 16"),
        ({"in_channels": 3}, r"supports in_channels=1 \(grayscale\) only, got 3"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(EmaeError, match=message):
        build_model("pca", **kwargs)


def test_bad_fitting_data_is_refused():
    model = PCAAutoencoder(patch_size=8, n_components=4)
    with pytest.raises(EmaeError, match=r"needs at least 4 tiles .* got 2 tiles of 8x8 at stride"):
        model.fit_patches(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(
        EmaeError, match=r"height and width of the patches, got patch_size=8 for patches of 7x20"
    ):
        model.fit_patches(np.zeros((3, 7, 20), np.float32))
    bad = np.zeros((3, 16, 16), np.float32)
    bad[1, 2, 3] = np.nan
    with pytest.raises(EmaeError, match=r"patches of shape \(3, 16, 16\) hold NaN"):
        model.fit_patches(bad)
    with pytest.raises(EmaeError, match=r"\(N, H, W\) or \(N, 1, H, W\) .* got shape \(16, 16\)"):
        model.fit_patches(np.zeros((16, 16), np.float32))
    with pytest.raises(EmaeError, match=r"all 27 tiles of the patches are identical"):
        model.fit_patches(np.full((3, 16, 16), 0.5, np.float32))
    with pytest.raises(EmaeError, match=r"max_tiles must be a positive int, got 0"):
        model.fit_patches(np.zeros((3, 16, 16), np.float32), max_tiles=0)
    assert model.fitted.item() == 0


def test_bad_input_is_refused(fitted):
    with pytest.raises(EmaeError, match=r"shape \(N, 1, H, W\) with H, W >= 1, got shape \(16, 16"):
        fitted(torch.zeros(16, 16))
    with pytest.raises(EmaeError, match=r"got shape \(1, 2, 16, 16\)"):
        fitted.features(torch.zeros(1, 2, 16, 16))
    with pytest.raises(EmaeError, match=r"latent of shape \(N, 8, h, w\), got shape \(1, 3, 2, 2"):
        fitted.decode(torch.zeros(1, 3, 2, 2))
