"""Reconstruction losses, SSIM, and the VAE training loss.

Every loss takes ``(input, target)`` float tensors of shape ``(N, C, H, W)`` and returns a scalar
averaged over the batch and pixels, so values do not depend on the batch or patch size. SSIM is
computed in float32 whatever the input dtype (under bf16 autocast its variances would cancel).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from emae.anomaly.ssim import ssim_map
from emae.errors import EmaeError
from emae.models.blocks import center_crop

if TYPE_CHECKING:
    from emae.models.codec import Codec
    from emae.models.vae import VariationalAutoencoder

LossFn = Callable[[Tensor, Tensor], Tensor]

#: Stabilizing constants of SSIM relative to the data range (Wang et al., 2004).
#: Default standard deviation of the VAE's Gaussian decoder, for intensities in [0, 1].
DECODER_STD = 0.1


def mse(input: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over all elements: a scalar."""
    return F.mse_loss(input, target)


def l1(input: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over all elements: a scalar."""
    return F.l1_loss(input, target)


def ssim_loss(input: Tensor, target: Tensor) -> Tensor:
    """``1 - mean(ssim_map)`` with the default window: a scalar in [0, 2], 0 for equal images."""
    return 1.0 - ssim_map(input, target).mean()


def mse_ssim(input: Tensor, target: Tensor) -> Tensor:
    """``mse + ssim_loss``: intensities from the MSE, local structure from SSIM."""
    return mse(input, target) + ssim_loss(input, target)


RECONSTRUCTION_LOSSES: dict[str, LossFn] = {
    "mse": mse,
    "l1": l1,
    "ssim": ssim_loss,
    "mse+ssim": mse_ssim,
}


def reconstruction_loss(name: str) -> LossFn:
    """The loss registered as ``name``: one of ``"mse"``, ``"l1"``, ``"ssim"``, ``"mse+ssim"``."""
    try:
        return RECONSTRUCTION_LOSSES[name]
    except KeyError:
        known = ", ".join(RECONSTRUCTION_LOSSES)
        raise EmaeError(f"unknown reconstruction loss {name!r}; known losses: {known}") from None


def kl_weight(step: int, *, beta: float, warmup_steps: int = 0) -> float:
    """KL weight at optimizer step ``step``: a linear ramp from 0 to ``beta`` over the warm-up.

    Starting with a small KL weight lets the decoder learn to use the latent before the KL term
    pulls the posterior towards the prior (Bowman et al., 2016).
    """
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, step / warmup_steps)


def vae_loss(
    model: VariationalAutoencoder,
    x: Tensor,
    *,
    beta: float = 1.0,
    recon_loss: str | LossFn = "mse",
    decoder_std: float = DECODER_STD,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The beta-VAE training loss on a batch, per pixel.

    With ``D = C * H * W`` values per sample:

    - ``recon`` is the reconstruction loss of the decoded posterior sample, a mean over pixels;
    - ``kl`` is the KL divergence of each sample's posterior from the prior, averaged over the
      batch and divided by D (nats per pixel);
    - ``total = recon + beta * 2 * decoder_std**2 * kl``.

    With ``recon_loss="mse"`` and ``beta=1``, ``D * total / (2 * decoder_std**2)`` is the
    negative ELBO of a Gaussian decoder of standard deviation ``decoder_std`` (in intensity
    units), up to its constant ``D * log(2 pi decoder_std**2) / 2``; other beta weigh the KL
    term as in Higgins et al. (2017). ``decoder_std`` is the noise level the model may leave
    unexplained: at the default 0.1, images in [0, 1] are reconstructed; a much larger value
    (0.7 makes the factor 1) lets the KL term win and every input decode to the mean image.
    With another reconstruction loss the weighting is kept but the ELBO reading is lost.

    Parameters
    ----------
    model
        The VAE; it is called in whatever mode (train/eval) it is in.
    x
        ``(N, C, H, W)`` float batch, both input and target.
    beta
        Weight of the KL term (see :func:`kl_weight` for a warm-up).
    recon_loss
        A name for :func:`reconstruction_loss` or a callable ``(input, target) -> scalar``.
    decoder_std
        Standard deviation of the Gaussian decoder, in the units of ``x``.
    generator
        Source of the posterior sample's noise; ``None`` uses torch's default generator.

    Returns
    -------
    tuple of Tensor
        Scalars ``(total, recon, kl)``; ``total`` is what to back-propagate.
    """
    if decoder_std <= 0:
        raise EmaeError(f"decoder_std must be > 0, got decoder_std={decoder_std}")
    loss_fn = reconstruction_loss(recon_loss) if isinstance(recon_loss, str) else recon_loss
    mu, logvar = model.encode(x)  # each (N, latent_channels, h, w) or (N, latent_dim)
    z = model.reparameterize(mu, logvar, generator)
    x_hat = center_crop(model.decode(z), x.shape[-2:])  # (N, C, H, W)
    recon = loss_fn(x_hat, x)
    kl = model.kl_divergence(mu, logvar).mean() / x[0].numel()
    return recon + beta * 2 * decoder_std**2 * kl, recon, kl


def rate_distortion_loss(
    model: Codec,
    x: Tensor,
    *,
    lmbda: float,
    generator: torch.Generator | None = None,
    noise: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """The codec's training loss ``R + lambda * 255**2 * D`` on a batch ``(N, C, H, W)``.

    ``R`` is the rate in bits per pixel (of one channel: per ``H * W``), ``D`` the mean squared
    error of the decoded batch in the normalized units of ``x`` (about [0, 1]); the factor
    ``255**2`` puts ``lambda`` on the scale of 8-bit images, as in CompressAI. With
    ``noise=False`` (validation) the rate is that of the rounded latent, the one a bitstream
    pays.

    Returns
    -------
    tuple of Tensor
        Scalars ``(total, bpp, mse)``.
    """
    x_hat, bits = model.rate_distortion_terms(x, generator, noise=noise)
    bpp = bits.mean() / (x.shape[-2] * x.shape[-1])
    distortion = F.mse_loss(x_hat, x)
    return bpp + lmbda * 255**2 * distortion, bpp, distortion
