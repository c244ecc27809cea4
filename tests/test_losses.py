"""Reconstruction losses, SSIM and the VAE loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from emae.errors import EmaeError
from emae.models import build_model
from emae.train.losses import (
    RECONSTRUCTION_LOSSES,
    kl_weight,
    l1,
    mse,
    reconstruction_loss,
    ssim_loss,
    ssim_map,
    vae_loss,
)


def images(*shape: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0, 1] of ``shape = (N, C, H, W)``."""
    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.random(shape), sigma=(0, 0, 2, 2))
    x = (x - x.min()) / (x.max() - x.min())
    return torch.from_numpy(x).float()


def ssim_reference(x: np.ndarray, y: np.ndarray, window: int, sigma: float = 1.5) -> np.ndarray:
    """SSIM of two 2D float64 images after Wang et al. (2004), with data range 1.

    Gaussian-weighted statistics with the window truncated at ``window // 2`` pixels and
    whole-sample reflection at the borders (scipy's ``"mirror"``, torch's ``"reflect"``).
    """

    def blur(a: np.ndarray) -> np.ndarray:
        return gaussian_filter(a, sigma, mode="mirror", truncate=(window // 2) / sigma)

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def test_mse_and_l1():
    x, y = images(2, 1, 8, 8, seed=0), images(2, 1, 8, 8, seed=1)
    d = (x - y).double().numpy()
    assert mse(x, y).item() == pytest.approx(np.mean(d**2), rel=1e-5)
    assert l1(x, y).item() == pytest.approx(np.mean(np.abs(d)), rel=1e-5)


@pytest.mark.parametrize("window", [7, 11])
def test_ssim_matches_the_reference(window):
    x = images(2, 1, 40, 33, seed=0)
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    got = ssim_map(x, y, window=window)
    assert got.shape == (2, 1, 40, 33) and got.dtype == torch.float32
    for i in range(2):
        expected = ssim_reference(x[i, 0].double().numpy(), y[i, 0].double().numpy(), window)
        np.testing.assert_allclose(got[i, 0].numpy(), expected, atol=1e-4)


def test_ssim_properties():
    x = images(3, 1, 32, 32, seed=0)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(ssim_map(x, x), torch.ones(3, 1, 32, 32))
    assert ssim_loss(x, x).item() == pytest.approx(0.0, abs=1e-5)
    y = x + 0.05 * torch.randn(x.shape, generator=g)
    torch.testing.assert_close(ssim_map(x, y), ssim_map(y, x))
    noise = torch.randn(x.shape, generator=g)
    losses = [ssim_loss(x + s * noise, x).item() for s in (0.01, 0.05, 0.2, 0.5)]
    assert losses == sorted(losses) and 0 < losses[0] < losses[-1] <= 2


def test_ssim_averages_channels_and_works_in_bfloat16():
    x = images(2, 3, 16, 16, seed=0)
    y = images(2, 3, 16, 16, seed=1)
    per_channel = torch.cat([ssim_map(x[:, c : c + 1], y[:, c : c + 1]) for c in range(3)], 1)
    torch.testing.assert_close(ssim_map(x, y), per_channel.mean(1, keepdim=True))
    half = ssim_map(x.bfloat16(), y.bfloat16())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, ssim_map(x, y), atol=0.03, rtol=0)


def test_ssim_is_differentiable():
    x = images(1, 1, 16, 16, seed=0)
    y = images(1, 1, 16, 16, seed=1).requires_grad_()
    ssim_loss(y, x).backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_ssim_refuses_bad_arguments():
    x = torch.zeros(1, 1, 16, 16)
    with pytest.raises(EmaeError, match=r"window must be a positive odd number .* got window=8"):
        ssim_map(x, x, window=8)
    with pytest.raises(EmaeError, match=r"needs H, W > 5 for window=11, got an image of 5x16"):
        ssim_map(x[..., :5, :], x[..., :5, :])
    with pytest.raises(EmaeError, match=r"same shape, got \(1, 1, 16, 16\) and \(1, 1, 16, 8\)"):
        ssim_map(x, x[..., :8])


def test_reconstruction_loss_by_name():
    assert set(RECONSTRUCTION_LOSSES) == {"mse", "l1", "ssim", "mse+ssim"}
    x, y = images(1, 1, 16, 16, seed=0), images(1, 1, 16, 16, seed=1)
    assert reconstruction_loss("mse") is mse
    combined = reconstruction_loss("mse+ssim")(x, y)
    torch.testing.assert_close(combined, mse(x, y) + ssim_loss(x, y))
    with pytest.raises(EmaeError, match=r"unknown reconstruction loss 'bce'; known losses: mse,"):
        reconstruction_loss("bce")


def test_kl_weight_ramps_up_to_beta():
    assert [kl_weight(s, beta=4.0, warmup_steps=4) for s in (0, 1, 4, 10)] == [0, 1, 4, 4]
    assert kl_weight(0, beta=2.0) == 2.0


def test_vae_loss_scaling():
    torch.manual_seed(0)
    model = build_model("vae", channels=(8, 16), latent_channels=8)
    x = images(3, 1, 16, 20, seed=0)

    def loss(**kwargs):
        return vae_loss(model, x, generator=torch.Generator().manual_seed(0), **kwargs)

    total, recon, kl = loss(beta=1.0)
    mu, logvar = model.encode(x)
    expected_kl = model.kl_divergence(mu, logvar).mean() / (1 * 16 * 20)
    torch.testing.assert_close(kl, expected_kl)
    torch.testing.assert_close(total, recon + 2 * 0.1**2 * kl)
    total4, recon4, _ = loss(beta=4.0, decoder_std=0.5)
    torch.testing.assert_close(recon4, recon)
    torch.testing.assert_close(total4, recon + 4 * 2 * 0.5**2 * kl)
    torch.testing.assert_close(loss(beta=0.0)[0], recon)
    z = model.reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    torch.testing.assert_close(recon, mse(model.decode(z), x))
    torch.testing.assert_close(loss(recon_loss="l1")[1], l1(model.decode(z), x))
    with pytest.raises(EmaeError, match="decoder_std must be > 0, got decoder_std=0"):
        loss(decoder_std=0)
