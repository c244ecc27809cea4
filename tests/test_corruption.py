"""Input corruptions for the denoising autoencoder."""

from __future__ import annotations

import pytest
import torch

from emae.errors import EmaeError
from emae.train.corruption import (
    KINDS,
    Corruption,
    blank_patches,
    gaussian_noise,
    mask_pixels,
    poisson_noise,
    salt_and_pepper,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 8, c: int = 1, h: int = 64, w: int = 64, seed: int = 1) -> torch.Tensor:
    """Random images in [0.2, 0.8] of shape ``(n, c, h, w)``."""
    return 0.2 + 0.6 * torch.rand(n, c, h, w, generator=gen(seed))


CORRUPTIONS = {
    "gaussian": lambda x, g: gaussian_noise(x, 0.1, generator=g),
    "poisson": lambda x, g: poisson_noise(x, 30.0, generator=g),
    "salt_pepper": lambda x, g: salt_and_pepper(x, 0.05, generator=g),
    "mask": lambda x, g: mask_pixels(x, 0.2, generator=g),
    "blank": lambda x, g: blank_patches(x, generator=g, count=2),
    "random": lambda x, g: Corruption()(x, g),
}


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_input_unchanged_and_reproducible(name):
    corrupt = CORRUPTIONS[name]
    x = images(c=2)
    original = x.clone()
    a = corrupt(x, gen(3))
    torch.testing.assert_close(x, original, rtol=0, atol=0)
    assert a.shape == x.shape and a.dtype == x.dtype and a.data_ptr() != x.data_ptr()
    torch.testing.assert_close(a, corrupt(x, gen(3)), rtol=0, atol=0)
    assert not torch.equal(a, corrupt(x, gen(4)))
    assert not torch.equal(a, x)


def test_gaussian_noise_has_the_requested_std():
    x = images()
    noise = gaussian_noise(x, 0.1, generator=gen()) - x
    assert noise.std().item() == pytest.approx(0.1, rel=0.02)
    assert abs(noise.mean().item()) < 0.003


def test_poisson_noise_variance_follows_intensity():
    for value in (0.25, 1.0):
        x = torch.full((4, 1, 64, 64), value)
        y = poisson_noise(x, 40.0, generator=gen())
        assert y.mean().item() == pytest.approx(value, rel=0.02)
        assert y.var().item() == pytest.approx(value / 40.0, rel=0.05)


def test_salt_and_pepper_fraction_and_values():
    x = images(c=3)
    y = salt_and_pepper(x, 0.1, generator=gen())
    hit = (y != x).any(dim=1)
    assert hit.float().mean().item() == pytest.approx(0.1, abs=0.01)
    values = y.permute(0, 2, 3, 1)[hit]  # (hits, C): one value shared by the channels
    assert ((values == 0) | (values == 1)).all()
    assert (values == values[:, :1]).all()
    assert (values[:, 0] == 1).float().mean().item() == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("fill", ["zero", "mean"])
def test_mask_fraction_and_fill(fill):
    x = images(c=2)
    y = mask_pixels(x, 0.3, generator=gen(), fill=fill)
    hit = (y != x).all(dim=1, keepdim=True)
    assert hit.float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert ((y != x) == hit).all()  # masks are shared by the channels
    expected = torch.zeros_like(x) if fill == "zero" else x.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(y[hit.expand_as(x)], expected.expand_as(x)[hit.expand_as(x)])


@pytest.mark.parametrize("fill", ["zero", "mean"])
def test_blank_patch_is_a_flat_rectangle(fill):
    x = images(n=16, h=40, w=60)
    y = blank_patches(x, generator=gen(), size=(0.2, 0.5), fill=fill)
    for xi, yi in zip(x[:, 0], y[:, 0], strict=True):
        rows, cols = torch.nonzero(yi != xi, as_tuple=True)
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert 0.2 * 40 - 1 <= bottom - top <= 0.5 * 40 + 1
        assert 0.2 * 60 - 1 <= right - left <= 0.5 * 60 + 1
        patch = yi[top:bottom, left:right]
        assert (patch == patch[0, 0]).all()
        expected = 0.0 if fill == "zero" else xi[top:bottom, left:right].mean().item()
        assert patch[0, 0].item() == pytest.approx(expected, abs=1e-6)


def test_corruption_picks_one_kind_per_sample():
    x = images(n=64, h=16, w=16)
    y = Corruption(kinds=("mask",), mask_fraction=1.0, fill="zero")(x, gen())
    assert (y == 0).all()
    y = Corruption(kinds=("gaussian", "mask"), mask_fraction=1.0, fill="zero")(x, gen())
    masked = (y == 0).flatten(1).all(dim=1)
    assert 16 < masked.sum().item() < 48
    assert ((y[~masked] - x[~masked]).std() - 0.1).abs() < 0.01


def test_corruption_defaults_cover_every_kind():
    assert Corruption().kinds == KINDS
    assert Corruption(kinds=["mask"], blank_size=[0.1, 0.2]).kinds == ("mask",)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kinds": ()}, "kinds must name at least one of gaussian"),
        ({"kinds": ("blur",)}, "unknown corruption 'blur'; known: gaussian, poisson"),
        ({"mask_fraction": 1.5}, r"mask_fraction must be in \[0, 1\], got mask_fraction=1.5"),
        ({"gaussian_sigma": -0.1}, "gaussian_sigma must be >= 0, got -0.1"),
        ({"poisson_photons": 0}, "poisson_photons must be > 0, got 0"),
        ({"blank_size": (0.5, 0.2)}, r"blank_size must be .* got \(0.5, 0.2\)"),
        ({"fill": "noise"}, "fill must be 'zero' or 'mean', got 'noise'"),
    ],
)
def test_bad_corruption_is_refused(kwargs, message):
    with pytest.raises(EmaeError, match=message):
        Corruption(**kwargs)


def test_functions_refuse_bad_input():
    with pytest.raises(EmaeError, match=r"\(N, C, H, W\) float tensor, got shape \(4, 4\)"):
        gaussian_noise(torch.zeros(4, 4), 0.1, generator=gen())
    with pytest.raises(EmaeError, match=r"got shape \(1, 1, 4, 4\) of dtype torch.uint8"):
        mask_pixels(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 0.1, generator=gen())
    with pytest.raises(EmaeError, match=r"fraction must be in \[0, 1\], got fraction=-0.1"):
        salt_and_pepper(images(), -0.1, generator=gen())
