"""The anomaly maps in torch, float32, against the float64 numpy/scipy formulas they replace."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from torch import nn

from conftest import fast_statistics
from emae.anomaly.filters import gaussian_filter, interp, local_std, reflect_index
from emae.anomaly.maps import batched_apply, reconstruct
from emae.anomaly.scores import SCORES, STATISTICS, anomaly_maps
from emae.anomaly.scores import local_std as local_std_map
from emae.models import build_model
from emae.models.blocks import center_crop
from emae.synth.tissue import make_section

# --- the float64 reference: the maps as numpy and scipy computed them ---------------------------


def ref_gaussian(a: np.ndarray, sigma: float) -> np.ndarray:
    return ndi.gaussian_filter(a, (0, sigma, sigma), mode="reflect") if sigma > 0 else a


def ref_local_std(x: np.ndarray, sigma: float) -> np.ndarray:
    x = x.astype(np.float64)
    mean = ref_gaussian(x, sigma)
    return np.sqrt(np.maximum(ref_gaussian(x * x, sigma) - mean * mean, 0.0))


def ref_pixel(x: np.ndarray, recon: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    diff = x.astype(np.float64) - recon
    return ref_gaussian(diff * diff, sigma)


def ref_ssim(x: np.ndarray, recon: np.ndarray, window: int = 11, sigma: float = 1.5) -> np.ndarray:
    """``1 - SSIM`` with the 11-tap Gaussian window and the whole-sample mirror border."""
    t = np.arange(window) - (window - 1) / 2
    g = np.exp(-0.5 * (t / sigma) ** 2)
    g /= g.sum()

    def blur(a: np.ndarray) -> np.ndarray:
        a = ndi.correlate1d(a, g, axis=-1, mode="mirror")
        return ndi.correlate1d(a, g, axis=-2, mode="mirror")

    x, y = x.astype(np.float64), recon.astype(np.float64)
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return 1 - ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def ref_feature(stats, model: nn.Module, x: np.ndarray) -> np.ndarray:
    features = batched_apply(model, "features", x, batch_size=32, device=None)
    d = features.transpose(0, 2, 3, 1).astype(np.float64) - stats.mean_
    distance = np.einsum("...i,ij,...j->...", d, stats.precision_, d)
    m = model.downsample_factor
    fine = F.interpolate(
        torch.from_numpy(distance[:, None]), scale_factor=m, mode="bilinear", align_corners=False
    )
    return center_crop(fine, x.shape[-2:])[:, 0].numpy()


def ref_error_z(stats, x: np.ndarray, recon: np.ndarray, log: bool = False) -> np.ndarray:
    error = ref_pixel(x, recon, stats.smooth_sigma)
    if log:
        error = np.log(error + 1e-6)
    structure = ref_local_std(x, stats.structure_sigma)
    mean = np.interp(structure, stats.centers_, stats.mean_)
    return (error - mean) / np.interp(structure, stats.centers_, stats.std_)


def ref_typicality(stats, x: np.ndarray, recon: np.ndarray) -> np.ndarray:
    return ref_gaussian(ref_error_z(stats, x, recon, log=True) ** 2, stats.aggregate_sigma)


def reference_maps(score: str, stats, model: nn.Module, x: np.ndarray) -> np.ndarray:
    recon = reconstruct(model, x)
    if score == "pixel":
        return ref_pixel(x, recon)
    if score == "ssim":
        return ref_ssim(x, recon)
    if score == "feature":
        return ref_feature(stats, model, x)
    if score == "error-z":
        return ref_error_z(stats, x, recon)
    return ref_typicality(stats, x, recon)


# --- the filters ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 5, 7), (1, 1, 1), (3, 8, 9), (2, 64, 70), (1, 150, 97)])
@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 3.3, 6.0, 20.0])
def test_gaussian_filter_equals_scipy_reflect(shape, sigma):
    """Radius ``int(4 sigma + 0.5)`` exceeds the image side for the small shapes."""
    x = np.random.default_rng(0).uniform(0.01, 1.0, shape)  # > 0: a relative test is meaningful
    expected = ndi.gaussian_filter(x, (0, sigma, sigma), mode="reflect")
    t = torch.from_numpy(x.astype(np.float32))
    got = gaussian_filter(t, sigma)
    assert got.shape == t.shape and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    np.testing.assert_array_equal(gaussian_filter(t[:, None], sigma)[:, 0].numpy(), got.numpy())
    t64 = torch.from_numpy(x)
    np.testing.assert_allclose(gaussian_filter(t64, sigma).numpy(), expected, rtol=1e-12)


def test_gaussian_filter_keeps_sigma_zero_and_truncate():
    x = torch.rand(2, 9, 11, generator=torch.Generator().manual_seed(1))
    assert gaussian_filter(x, 0.0) is x
    expected = ndi.gaussian_filter(x.numpy(), (0, 2.0, 2.0), mode="reflect", truncate=1.5)
    np.testing.assert_allclose(gaussian_filter(x, 2.0, truncate=1.5).numpy(), expected, rtol=1e-5)


def test_reflect_index_is_numpy_symmetric_padding():
    for n in (1, 2, 5, 8):
        pad = 3 * n + 2
        expected = np.pad(np.arange(n), pad, mode="symmetric")
        got = reflect_index(torch.arange(-pad, n + pad), n).numpy()
        np.testing.assert_array_equal(got, expected)


def test_interp_equals_numpy():
    rng = np.random.default_rng(2)
    xp = np.sort(rng.uniform(0, 1, 9))
    xp[4] = xp[5]  # a tie, as binned statistics may give
    fp = rng.normal(size=9)
    x = np.concatenate([rng.uniform(-0.5, 1.5, 2000), xp])
    got = interp(torch.from_numpy(x), xp, fp).numpy()
    np.testing.assert_allclose(got, np.interp(x, xp, fp), rtol=1e-12, atol=1e-12)
    one = interp(torch.from_numpy(x).float(), xp[:1], fp[:1])
    np.testing.assert_array_equal(one.numpy(), np.full(x.shape, np.float32(fp[0])))


def test_local_std_equals_the_float64_formula():
    x = np.stack([make_section((70, 90), seed=s) for s in range(2)])
    x[0, 10:40, 10:40] = 0.5  # a flat square: cancellation is worst there
    expected = ref_local_std(x, 2.0)
    got = local_std(torch.from_numpy(x), 2.0).numpy()
    # float32 G(x^2) - G(x)^2 (x shifted by its mean): an absolute error of a few ulps of x^2,
    # about 1e-7 on the variance, below the square root: at most ~1e-6 where the std is ~0.
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[:, 45:, 45:], expected[:, 45:, 45:], rtol=1e-4)
    np.testing.assert_array_equal(local_std_map(x, 2.0), got)


# --- the five scores -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_model("conv-ae", channels=(8, 16), latent_channels=8, norm="none").eval()


@pytest.fixture(scope="module")
def normal() -> np.ndarray:
    return np.stack([make_section((48, 48), seed=s) for s in range(8)])


@pytest.mark.parametrize("score", SCORES)
def test_maps_equal_the_float64_reference(model, normal, score):
    if score == "discriminative":
        pytest.skip(
            "a trained network: no float64 reference (its own tests: test_discriminative.py)"
        )
    stats = fast_statistics(score)
    stats = None if stats is None else stats.fit(model, normal)
    x = np.stack([make_section((64, 72), seed=20 + s) for s in range(3)])
    got = anomaly_maps(model, x, score=score, stats=stats, batch_size=2)
    expected = reference_maps(score, stats, model, x)
    assert got.dtype == np.float32 and got.shape == x.shape
    # float32 against float64: relative rounding of ~1e-6 per operation. The error-z map
    # crosses 0 (no relative bound there) and the squared Mahalanobis distance loses about
    # sqrt(condition number) x 1e-7 of its scale, hence the atol of 1e-4 x the map's scale.
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4 * scale)


@pytest.mark.parametrize("score", ["error-z", "typicality"])
def test_fit_equals_the_float64_reference(model, normal, score):
    from emae.anomaly.error_statistics import binned_statistics

    stats = STATISTICS[score]().fit(model, normal)
    error = ref_pixel(normal, reconstruct(model, normal), stats.smooth_sigma)
    if score == "typicality":
        error = np.log(error + 1e-6)
    centers, mean, std = binned_statistics(error, ref_local_std(normal, 2.0), stats.n_bins)
    np.testing.assert_allclose(stats.centers_, centers, rtol=1e-4)
    np.testing.assert_allclose(stats.mean_, mean, rtol=1e-4, atol=1e-6 * np.abs(mean).max())
    np.testing.assert_allclose(stats.std_, std, rtol=1e-4)


def test_then_runs_per_batch_in_float32_outside_autocast(model):
    x = np.stack([make_section((32, 32), seed=s) for s in range(5)])
    sizes = []

    def then(inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        sizes.append(len(inputs))
        assert inputs.dtype == outputs.dtype == torch.float32
        product = inputs[:, 0] @ outputs[:, 0]  # bfloat16 under CPU autocast
        assert product.dtype == torch.float32
        return product

    out = batched_apply(
        model, "forward", x, batch_size=2, device="cpu", precision="bf16", then=then
    )
    assert sizes == [2, 2, 1] and out.shape == (5, 32, 32) and out.dtype == np.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("score", SCORES)
def test_maps_on_the_gpu_equal_the_cpu(model, normal, score):
    stats = fast_statistics(score)
    stats = None if stats is None else stats.fit(model, normal)
    x = np.stack([make_section((64, 72), seed=30 + s) for s in range(3)])
    cpu = anomaly_maps(model, x, score=score, stats=stats)
    gpu = anomaly_maps(model, x, score=score, stats=stats, device="cuda")
    scale = np.abs(cpu).max()
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-4 * scale)


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


@pytest.mark.parametrize("score", ["error-z", "typicality"])
def test_an_exact_reconstruction_gives_finite_maps(normal, score):
    """The std floor is float64's tiny (0 in float32) when normal data is reconstructed exactly."""
    stats = STATISTICS[score]().fit(Scale(1.0), normal)
    assert np.array_equal(stats.anomaly_map(Scale(1.0), normal), np.zeros_like(normal))
    maps = stats.anomaly_map(Scale(0.9), normal)
    assert np.isfinite(maps).all() and maps.min() > 1e10
