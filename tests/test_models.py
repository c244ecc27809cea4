"""The autoencoders: one contract, checked for every registered model."""

from __future__ import annotations

import pytest
import torch

from emae.errors import EmaeError
from emae.models import (
    MODELS,
    Codec,
    ConvAutoencoder,
    InpaintingUNet,
    ModelSpec,
    PCAAutoencoder,
    UNet,
    VariationalAutoencoder,
    available_models,
    build_model,
    model_spec,
)
from emae.models.blocks import count_parameters
from emae.train.corruption import Corruption
from emae.train.losses import mse, vae_loss

NAMES = available_models()
#: The conv autoencoders trained by gradient descent (PCA is fitted in closed form, see
#: test_pca.py; the U-Nets of blind-spot and inpainting-ae are tested in test_restore.py, the
#: codec in test_compress.py).
TRAINED = tuple(
    n
    for n in NAMES
    if not (
        MODELS[n].fitted_in_closed_form
        or MODELS[n].blind_spot
        or MODELS[n].inpainting
        or MODELS[n].codec
    )
)
#: A small architecture that keeps the contract tests fast.
SMALL = {"channels": (8, 16), "latent_channels": 8}


def batch(*shape: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0, 1]: ``shape = (N, C, H, W)``."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(shape[0], shape[1], shape[2] // 4 + 1, shape[3] // 4 + 1, generator=g)
    return torch.nn.functional.interpolate(coarse, size=shape[2:], mode="bilinear")


def training_loss(
    spec: ModelSpec, model: torch.nn.Module, x: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """The loss each kind of model is trained with; fresh noise from ``generator`` each call."""
    if spec.variational:
        return vae_loss(model, x, beta=spec.beta, generator=generator)[0]
    inputs = Corruption()(x, generator) if spec.denoising else x
    return mse(model(inputs), x)


# --- registry ----------------------------------------------------------------------------------


def test_registry_entries():
    assert set(NAMES) == {
        "conv-ae",
        "denoising-ae",
        "blind-spot",
        "inpainting-ae",
        "vae",
        "beta-vae",
        "codec",
        "codec-hyperprior",
        "pca",
    }
    assert model_spec("denoising-ae").denoising and not model_spec("conv-ae").denoising
    assert (model_spec("vae").beta, model_spec("beta-vae").beta) == (1.0, 4.0)
    for name, spec in MODELS.items():
        assert spec.name == name and spec.description
        if spec.fitted_in_closed_form:
            assert type(build_model(name)) is PCAAutoencoder
            continue
        if spec.codec:
            model = build_model(name, channels=(8, 16), latent_channels=4)
            assert isinstance(model, Codec) and model(torch.rand(1, 1, 40, 24)).shape[-2:] == (
                40,
                24,
            )
            continue
        if spec.blind_spot or spec.inpainting:
            expected = InpaintingUNet if spec.inpainting else UNet
            assert type(build_model(name, channels=(8, 16))) is expected
            continue
        expected = VariationalAutoencoder if spec.variational else ConvAutoencoder
        assert type(build_model(name, **SMALL)) is expected


def test_unknown_model_lists_known_ones():
    with pytest.raises(EmaeError, match=r"unknown model 'ica'; known models: conv-ae, denoising"):
        build_model("ica")


def test_unknown_argument_is_refused():
    with pytest.raises(EmaeError, match=r"model 'vae' takes no argument\(s\) beta; it takes: .*"):
        build_model("vae", beta=2.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": ()}, r"channels must be a non-empty sequence of positive ints, got \(\)"),
        ({"channels": (8, 0)}, r"got \(8, 0\)"),
        ({"norm": "layer"}, r"norm must be one of 'batch', 'group', 'none', got 'layer'"),
        ({"latent": "cube"}, r"latent must be one of 'spatial', 'vector', got 'cube'"),
        ({"activation": "tanh"}, r"activation must be one of .*, got 'tanh'"),
        ({"latent_channels": 0}, r"latent_channels must be a positive int, got 0"),
        ({"latent": "vector"}, r"needs patch_size, a positive multiple of 8 .* patch_size=None"),
        ({"latent": "vector", "patch_size": 60}, r"multiple of 8 .* got patch_size=60"),
    ],
)
@pytest.mark.parametrize("name", TRAINED)
def test_bad_architecture_is_refused(name, kwargs, message):
    with pytest.raises(EmaeError, match=message):
        build_model(name, **kwargs)


# --- shapes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TRAINED)
@pytest.mark.parametrize("size", [(64, 64), (96, 128), (50, 70)])
def test_default_model_keeps_the_shape(name, size):
    model = build_model(name)
    x = batch(2, 1, *size)
    h, w = (-(-s // 8) for s in size)  # the encoder pads up to multiples of 8
    with torch.no_grad():
        assert model(x).shape == x.shape
        assert model.features(x).shape == (2, model.feature_channels, h, w)
        assert model.encoder(x).shape == (2, model.feature_channels, h, w)
        z = model.encode(x)
        for part in z if isinstance(z, tuple) else (z,):
            assert part.shape == (2, 64, h, w)
        mu = z[0] if isinstance(z, tuple) else z
        assert model.decode(mu).shape == (2, 1, h * 8, w * 8)


@pytest.mark.parametrize("name", TRAINED)
def test_vector_latent_shapes(name):
    model = build_model(name, **SMALL, latent="vector", latent_dim=10, patch_size=32)
    x = batch(3, 1, 32, 32)
    with torch.no_grad():
        assert model(x).shape == x.shape
        assert model.features(x).shape == (3, 8, 8, 8)
        z = model.encode(x)
        for part in z if isinstance(z, tuple) else (z,):
            assert part.shape == (3, 10)
    with pytest.raises(EmaeError, match=r"takes \(N, C, 32, 32\) patches, got shape \(3, 1, 64"):
        model(batch(3, 1, 64, 64))


@pytest.mark.parametrize("name", TRAINED)
def test_multichannel_input(name):
    model = build_model(name, **SMALL, in_channels=3)
    x = batch(2, 3, 16, 24)
    with torch.no_grad():
        assert model(x).shape == x.shape


@pytest.mark.parametrize("name", TRAINED)
def test_bad_input_is_refused(name):
    model = build_model(name, **SMALL)
    with pytest.raises(EmaeError, match=r"H and W must be >= 4 .* got an input of 3x40"):
        model(torch.zeros(1, 1, 3, 40))
    with pytest.raises(EmaeError, match=r"shape \(N, 1, H, W\), got shape \(1, 2, 16, 16\)"):
        model(torch.zeros(1, 2, 16, 16))
    with pytest.raises(EmaeError, match=r"got shape \(16, 16\)"):
        model(torch.zeros(16, 16))


# --- training behaviour ------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["group", "batch", "none"])
@pytest.mark.parametrize("name", TRAINED)
def test_gradients_reach_every_parameter(name, norm):
    spec = model_spec(name)
    torch.manual_seed(0)
    model = build_model(name, **SMALL, norm=norm)
    training_loss(spec, model, batch(4, 1, 16, 16), torch.Generator().manual_seed(1)).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", TRAINED)
def test_vector_latent_gradients(name):
    spec = model_spec(name)
    model = build_model(name, **SMALL, latent="vector", latent_dim=6, patch_size=16)
    training_loss(spec, model, batch(4, 1, 16, 16), torch.Generator().manual_seed(1)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", TRAINED)
def test_eval_mode_is_deterministic(name):
    model = build_model(name, **SMALL, norm="batch").eval()
    x = batch(3, 1, 24, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", TRAINED)
def test_group_norm_keeps_samples_independent(name):
    model = build_model(name, **SMALL).train()
    x = batch(4, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:1], model(x[:1]))


@pytest.mark.parametrize("name", TRAINED)
def test_construction_is_reproducible_under_a_seed(name):
    torch.manual_seed(0)
    a = build_model(name, **SMALL).state_dict()
    torch.manual_seed(0)
    b = build_model(name, **SMALL).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


@pytest.mark.parametrize("name", TRAINED)
def test_overfits_a_few_patches(name):
    spec = model_spec(name)
    torch.manual_seed(0)
    model = build_model(name, **SMALL)
    x = batch(8, 1, 16, 16, seed=3)
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        before = mse(model(x), x).item()
    for _ in range(150):
        opt.zero_grad()
        training_loss(spec, model, x, g).backward()
        opt.step()
    with torch.no_grad():
        after = mse(model.eval()(x), x).item()
    assert after < before / 10, (before, after)


def test_default_architecture_size():
    assert count_parameters(build_model("conv-ae")) == 535_873


# --- VAE ---------------------------------------------------------------------------------------


def test_kl_of_the_prior_is_zero():
    mu = torch.zeros(3, 4, 2, 2)
    torch.testing.assert_close(VariationalAutoencoder.kl_divergence(mu, mu), torch.zeros(3))


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).sum(dim=1)
    torch.testing.assert_close(VariationalAutoencoder.kl_divergence(mu, logvar), expected)


def test_reparameterize_is_reproducible_with_a_generator():
    mu, logvar = torch.zeros(4, 8), torch.zeros(4, 8)
    draw = VariationalAutoencoder.reparameterize
    a = draw(mu, logvar, torch.Generator().manual_seed(5))
    b = draw(mu, logvar, torch.Generator().manual_seed(5))
    c = draw(mu, logvar, torch.Generator().manual_seed(6))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    torch.testing.assert_close(draw(mu + 2, torch.full_like(mu, -40.0)), mu + 2)


@pytest.mark.parametrize("name", [n for n in NAMES if MODELS[n].variational])
def test_vae_sampling(name):
    model = build_model(name, **SMALL).eval()
    with torch.no_grad():
        a = model.sample(3, generator=torch.Generator().manual_seed(0), spatial_shape=(20, 28))
        b = model.sample(3, generator=torch.Generator().manual_seed(0), spatial_shape=(20, 28))
    assert a.shape == (3, 1, 20, 28)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(EmaeError, match=r"needs spatial_shape=\(H, W\) with H, W >= 4"):
        model.sample(3, generator=torch.Generator())
    vector = build_model(name, **SMALL, latent="vector", latent_dim=5, patch_size=16)
    assert vector.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 16, 16)
    with pytest.raises(EmaeError, match=r"samples 16x16 patches, got spatial_shape=\(8, 8\)"):
        vector.sample(2, generator=torch.Generator(), spatial_shape=(8, 8))


def test_vae_forward_decodes_the_mean():
    model = build_model("vae", **SMALL).train()
    x = batch(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.decode(model.encode(x)[0]))
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("shape", "k", "stride"), [((2, 3, 40, 36), 16, 4), ((1, 2, 17, 23), 5, 1)]
)
def test_window_mean_is_average_pooling(shape, k, stride):
    """The separable window mean of the classifier's dense maps equals ``avg_pool2d``."""
    from emae.models.pooling import window_mean

    torch.manual_seed(0)
    f = torch.randn(shape)
    expected = torch.nn.functional.avg_pool2d(f, kernel_size=k, stride=stride)
    torch.testing.assert_close(window_mean(f, k, stride), expected, rtol=1e-5, atol=1e-6)
    channels_last = f.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(
        window_mean(channels_last, k, stride), expected, rtol=1e-5, atol=1e-6
    )
