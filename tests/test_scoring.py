"""Anomaly maps and scores: one contract for every score and model, references, and a ranking."""

from __future__ import annotations

import numpy as np
import pytest
import safetensors.numpy
import torch
from torch import nn

from conftest import fast_statistics
from emae.anomaly.scores import (
    SCORES,
    STATISTICS,
    ErrorStatistics,
    FeatureStatistics,
    anomaly_maps,
    patch_scores,
    pixel_error_map,
    reconstruct,
    shrunk_covariance,
    ssim_error_map,
)
from emae.errors import EmaeError, NotFittedError
from emae.models import available_models, build_model, model_spec
from emae.models.inference import inference_copy
from emae.synth.artifacts import inject
from emae.synth.tissue import make_section
from emae.train.losses import mse

SMALL = {"channels": (8, 16), "latent_channels": 8}


def crops(image: np.ndarray, size: int, step: int) -> np.ndarray:
    """Every ``size x size`` crop of ``image`` on a grid of ``step``: ``(N, size, size)``."""
    h, w = image.shape
    corners = [(y, x) for y in range(0, h - size + 1, step) for x in range(0, w - size + 1, step)]
    return np.stack([image[y : y + size, x : x + size] for y, x in corners])


@pytest.fixture(scope="module")
def normal_patches() -> np.ndarray:
    """16 normal 32x32 patches, float32 in [0, 1]."""
    return crops(make_section((128, 128), seed=0), 32, 32)


@pytest.fixture(scope="module")
def models(normal_patches) -> dict[str, nn.Module]:
    """Every registered model, small and with seeded random weights (PCA fitted on patches)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        built = {}
        for name in available_models():
            if model_spec(name).fitted_in_closed_form:
                pca = build_model(name, patch_size=8, n_components=8)
                built[name] = pca.fit_patches(normal_patches).eval()
            else:
                built[name] = build_model(name, **SMALL).eval()
        return built


@pytest.fixture(scope="module")
def fitted(models, normal_patches) -> dict[tuple[str, str], object]:
    """Statistics of every model for every score that needs them."""
    return {
        (name, score): fast_statistics(score).fit(model, normal_patches)
        for name, model in models.items()
        for score, cls in STATISTICS.items()
    }


def maps_of(models, fitted, name: str, score: str, x: np.ndarray) -> np.ndarray:
    return anomaly_maps(models[name], x, score=score, stats=fitted.get((name, score)))


# --- the contract of every score -------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 64, 64), (2, 72, 100)])
@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("name", available_models())
def test_maps_have_the_input_shape_and_are_deterministic(models, fitted, name, score, shape):
    n, h, w = shape
    x = np.stack([make_section((h, w), seed=10 + i) for i in range(n)])
    maps = maps_of(models, fitted, name, score, x)
    assert maps.shape == shape and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert np.array_equal(maps, maps_of(models, fitted, name, score, x))
    scores = patch_scores(maps)
    assert scores.shape == (n,) and scores.dtype == np.float32


def test_maps_do_not_depend_on_the_batch(models, fitted):
    x = np.stack([make_section((40, 48), seed=i) for i in range(5)])
    for score in SCORES:
        stats = fitted.get(("conv-ae", score))
        whole = anomaly_maps(models["conv-ae"], x, score=score, stats=stats, batch_size=5)
        split = anomaly_maps(models["conv-ae"], x, score=score, stats=stats, batch_size=2)
        # The discriminative map runs a second network (seven float32 convolutions) whose
        # rounding depends on the batch's memory layout: 1e-4 of the map's scale.
        atol = 1e-4 * np.abs(whole).max() if score == "discriminative" else 1e-5
        np.testing.assert_allclose(split, whole, rtol=1e-5, atol=atol)


def test_reconstruction_scores_are_zero_for_a_perfect_reconstruction():
    x = np.stack([make_section((32, 32), seed=1)] * 2)
    assert np.array_equal(pixel_error_map(x, x), np.zeros_like(x))
    np.testing.assert_allclose(ssim_error_map(x, x), 0.0, atol=1e-5)
    worse = x + np.float32(0.2) * np.sign(x - x.mean())
    for kind in ("mse", "l1"):
        near = pixel_error_map(x, x + 0.05, kind=kind)
        assert pixel_error_map(x, worse, kind=kind).mean() > near.mean() > 0
    assert ssim_error_map(x, worse).mean() > ssim_error_map(x, x + 0.05).mean()


def test_inference_copy_folds_batch_norm_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = build_model("conv-ae", **SMALL, norm="batch")
    x = torch.from_numpy(np.stack([make_section((32, 32), seed=s) for s in range(4)])[:, None])
    model.train()
    for _ in range(3):  # running statistics away from their initial values
        model(x)
    fused = inference_copy(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert all(m.inplace for m in fused.modules() if isinstance(m, nn.LeakyReLU))
    assert model.training and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(m.inplace for m in model.modules() if isinstance(m, nn.LeakyReLU))
    with torch.no_grad():
        expected = model.eval()(x)
        got = fused(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(reconstruct(model, x[:, 0].numpy()), expected[:, 0], atol=1e-4)


def test_pixel_error_map_by_hand():
    x = np.zeros((1, 8, 9), np.float32)
    recon = x.copy()
    recon[0, 2, 3] = 2.0
    raw = pixel_error_map(x, recon, smooth_sigma=0)
    assert raw[0, 2, 3] == 4.0 and raw.sum() == 4.0
    assert pixel_error_map(x, recon, kind="l1", smooth_sigma=0)[0, 2, 3] == 2.0
    smooth = pixel_error_map(x, recon)
    assert smooth.sum() == pytest.approx(4.0, rel=1e-5) and smooth.max() < 1.0


def test_reconstruct_restores_the_training_mode(models):
    model = models["conv-ae"].train()
    try:
        x = np.stack([make_section((32, 32), seed=2)])
        recon = reconstruct(model, x)
        with torch.no_grad():
            expected = model.eval()(torch.from_numpy(x[:, None]))[:, 0].numpy()
        model.train()
        assert np.array_equal(reconstruct(model, x), recon)
        np.testing.assert_array_equal(recon, expected)
        assert model.training
    finally:
        model.eval()


# --- fitted statistics --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [FeatureStatistics, ErrorStatistics])
def test_statistics_refuse_to_score_before_fit(models, cls):
    stats = cls()
    x = np.zeros((1, 32, 32), np.float32)
    with pytest.raises(NotFittedError, match=rf"this {cls.__name__} is not fitted yet"):
        stats.anomaly_map(models["conv-ae"], x)
    with pytest.raises(EmaeError, match="not fitted"):
        stats.to_arrays()
    assert cls().fit(models["conv-ae"], x + np.eye(32, dtype=np.float32)) is not None


@pytest.mark.parametrize("score", list(STATISTICS))
def test_statistics_round_trip_through_safetensors(models, fitted, tmp_path, score):
    stats = fitted[("vae", score)]
    path = tmp_path / "scoring.safetensors"
    safetensors.numpy.save_file(stats.to_arrays(), str(path))
    loaded = STATISTICS[score].from_arrays(safetensors.numpy.load_file(str(path)))
    x = np.stack([make_section((72, 100), seed=3)])
    before = stats.anomaly_map(models["vae"], x)
    assert np.array_equal(loaded.anomaly_map(models["vae"], x), before)
    with pytest.raises(EmaeError, match=r"scoring arrays lack"):
        STATISTICS[score].from_arrays({})


class PixelFeatures(nn.Module):
    """A stand-in model whose features are three known functions of each pixel (m = 1)."""

    downsample_factor = 1

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x * x, torch.roll(x, 1, dims=-1)], dim=1) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def test_feature_distance_matches_a_direct_mahalanobis():
    x = crops(make_section((96, 96), seed=4), 24, 24)
    model = PixelFeatures()
    stats = FeatureStatistics(shrinkage=0.0).fit(model, x)
    vectors = np.stack([x, x * x, np.roll(x, 1, axis=-1)], axis=-1).reshape(-1, 3)
    d = vectors - vectors.mean(axis=0)
    precision = np.linalg.inv(np.cov(vectors.T, bias=True))
    expected = np.einsum("ni,ij,nj->n", d, precision, d).reshape(x.shape)
    maps = stats.anomaly_map(model, x)
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-4)
    assert maps.mean() == pytest.approx(3.0, rel=1e-4)  # the mean of d^2 on the fit data is C
    shrunk = FeatureStatistics(shrinkage=0.5).fit(model, x)
    assert shrunk.shrinkage_ == 0.5 and not np.allclose(shrunk.precision_, precision)


def test_ledoit_wolf_matches_the_formula_of_the_paper():
    rng = np.random.default_rng(5)
    for n, p in [(10, 8), (50, 5), (400, 3)]:
        x = rng.normal(size=(n, p)) @ rng.normal(size=(p, p))
        c = x - x.mean(axis=0)
        s = c.T @ c / n
        mu = np.trace(s) / p
        d2 = np.sum((s - mu * np.eye(p)) ** 2)
        b2 = min(sum(np.sum((np.outer(v, v) - s) ** 2) for v in c) / n**2, d2)
        cov, shrinkage = shrunk_covariance(x)
        assert shrinkage == pytest.approx(b2 / d2)
        np.testing.assert_allclose(cov, (1 - b2 / d2) * s + b2 / d2 * mu * np.eye(p))
    constant = np.ones((5, 3))
    assert shrunk_covariance(constant)[1] == 0.0
    with pytest.raises(EmaeError, match=r"covariance of 16 feature vectors is singular"):
        FeatureStatistics(shrinkage=0.0).fit(PixelFeatures(), np.zeros((1, 4, 4), np.float32))


def test_error_z_is_standardized_on_normal_data():
    x = crops(make_section((128, 128), seed=6), 32, 16)
    stats = ErrorStatistics(n_bins=8).fit(PixelFeatures(), x)
    z = stats.anomaly_map(PixelFeatures(), x)
    assert abs(float(z.mean())) < 0.1 and 0.8 < float(z.std()) < 1.2
    assert stats.centers_.size == 8 and np.all(np.diff(stats.centers_) > 0)


def test_error_z_is_relative_to_the_local_structure():
    """An error small by the standards of busy texture stands out on a flat background."""
    rng = np.random.default_rng(7)
    half = np.full((4, 32, 32), 0.5, np.float32)  # left half flat, right half busy
    half[:, :, 16:] = rng.uniform(0, 1, (4, 32, 16))
    model = PixelFeatures()  # reconstructs by a 3x3 mean: exact on flat regions only
    stats = ErrorStatistics(smooth_sigma=0.0).fit(model, half)
    dotted = half.copy()
    dotted[:, 16, 6] += 0.2
    error = pixel_error_map(dotted, reconstruct(model, dotted), smooth_sigma=0.0)
    z = stats.anomaly_map(model, dotted)
    assert error[:, 16, 6].max() < error[:, :, 20:].mean()  # unremarkable as a raw error
    assert z[:, 16, 6].min() > 5 * z[:, :, 20:].max()  # outstanding as error-z


# --- the dispatcher and the reductions -------------------------------------------------------


def test_patch_scores_reduce_each_map():
    maps = np.random.default_rng(8).normal(size=(3, 20, 30)).astype(np.float32)
    flat = maps.reshape(3, -1)
    np.testing.assert_allclose(patch_scores(maps), flat.mean(axis=1), rtol=1e-6)
    assert np.array_equal(patch_scores(maps, reduce="max"), flat.max(axis=1))
    np.testing.assert_allclose(patch_scores(maps, reduce="p99"), np.percentile(flat, 99, axis=1))
    with pytest.raises(EmaeError, match=r"reduce must be one of mean, max, p99, got 'median'"):
        patch_scores(maps, reduce="median")


def test_bad_requests_are_refused(models, fitted):
    model, x = models["conv-ae"], np.zeros((1, 32, 32), np.float32)
    feature = fitted[("conv-ae", "feature")]
    cases = [
        (dict(score="knn"), r"unknown score 'knn'; known scores: pixel, ssim, feature, error-z"),
        (dict(score="feature"), r"score 'feature' needs a fitted FeatureStatistics, got none"),
        (dict(score="error-z", stats=feature), r"needs a fitted ErrorStatistics, got a Feature"),
        (dict(score="pixel", stats=feature), r"score 'pixel' uses no statistics"),
        (dict(score="pixel", batch_size=0), r"batch_size must be a positive int, got 0"),
    ]
    for kwargs, message in cases:
        with pytest.raises(EmaeError, match=message):
            anomaly_maps(model, x, **kwargs)
    with pytest.raises(EmaeError, match=r"\(N, H, W\) array of numbers, got shape \(32, 32\)"):
        anomaly_maps(model, x[0], score="pixel")
    with pytest.raises(EmaeError, match=r"holds NaN or infinite values"):
        anomaly_maps(model, x * np.nan, score="pixel")
    with pytest.raises(EmaeError, match=r"same shape, got \(1, 32, 32\) and \(1, 32, 31\)"):
        pixel_error_map(x, x[..., :31])
    wide = build_model("conv-ae", channels=(8, 16), latent_channels=4)
    with pytest.raises(EmaeError, match=r"model gives 4 feature channels; .* fitted on 8"):
        feature.anomaly_map(wide, x)


# --- an honest check on a briefly trained autoencoder ------------------------------------------


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, np.ndarray]:
    """A conv autoencoder without normalization layers, 150 steps on 64 normal patches."""
    image = make_section((192, 192), seed=0)
    rng = np.random.default_rng(0)
    ys, xs = rng.integers(0, 192 - 32, (2, 64))
    patches = np.stack([image[y : y + 32, x : x + 32] for y, x in zip(ys, xs, strict=True)])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("conv-ae", **SMALL, norm="none")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    batches = torch.Generator().manual_seed(0)
    inputs = torch.from_numpy(patches[:, None])
    for _ in range(150):
        batch = inputs[torch.randint(0, len(inputs), (16,), generator=batches)]
        loss = mse(model(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), patches


def test_feature_score_ranks_charging_above_clean_tissue(trained):
    """Charging (a bright, washed-out region) is flat and easy to reconstruct, yet its features
    lie far from those of normal tissue."""
    model, normal = trained
    clean = crops(make_section((128, 128), seed=100), 48, 40)
    charged = np.stack(
        [
            inject(patch, "charging", seed=i, center=(24, 24), size=32, contrast=0.8)[0]
            for i, patch in enumerate(clean)
        ]
    )
    stats = FeatureStatistics().fit(model, normal)
    before = patch_scores(anomaly_maps(model, clean, score="feature", stats=stats))
    after = patch_scores(anomaly_maps(model, charged, score="feature", stats=stats))
    assert np.mean(after > before) >= 0.8
    assert after.mean() > 1.2 * before.mean()
