"""The mean-scale hyperprior codec: the latent's distribution is sent as side information.

Minnen et al. (2018) without the autoregressive context. On top of
:class:`~emae.models.codec.Codec`, a hyper-analysis turns the latent ``y`` into a small latent
``z`` (4 x smaller each way), coded with a learned factorized density; the hyper-synthesis
turns ``round(z)`` into a mean and a scale per element of ``y``, which is coded as
``round(y - mean)`` under a Gaussian of that scale::

    y (N, M, h, w) -> hyper_analysis -> z (N, Nz, h/4, w/4) -> round -> hyper_synthesis
                   -> mean, scale (N, M, h, w);  rate(y) = -log2 P(round(y - mean) | scale)

For coding, each scale is replaced by the nearest-above entry of a fixed table of
:data:`SCALE_LEVELS` log-spaced scales, and each entry has a fixed probability table
(:func:`gaussian_tables`, computed in float64 from the normal CDF, no learned values): the
symbols of ``y`` are coded with the table their scale picks. The means and scales of a chunk
are computed from its integer ``z`` on the CPU, in float64, on one thread
(:meth:`HyperpriorCodec.gaussian_parameters` with ``exact``), so the encoder and the decoder
pick the same tables.
"""

from __future__ import annotations

import copy
import math
from functools import cache

import numpy as np
import torch
from torch import Tensor, nn

from emae.models.codec import Codec, center_crop_top_left, quantized
from emae.models.entropy import LIKELIHOOD_FLOOR, RANGE, FactorizedDensity
from emae.runtime import one_thread

SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64


@cache
def scale_table() -> np.ndarray:
    """The :data:`SCALE_LEVELS` scales of the coding tables, float64, log-spaced."""
    return np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))


@cache
def gaussian_tables() -> np.ndarray:
    """``(SCALE_LEVELS, 2R + 2)`` float64: the probabilities of the integers ``-R .. R`` under a
    zero-mean Gaussian of each scale (integrated over unit intervals) and, last, of the rest."""
    from scipy.special import ndtr

    edges = np.arange(-RANGE - 0.5, RANGE + 1.0)  # 2R + 2
    cdf = ndtr(edges[None] / scale_table()[:, None])
    pmf = np.concatenate([np.diff(cdf, axis=1), cdf[:, :1] + 1 - cdf[:, -1:]], axis=1)
    pmf = np.maximum(pmf, LIKELIHOOD_FLOOR)
    return pmf / pmf.sum(axis=1, keepdims=True)


def scale_indices(scales: Tensor) -> Tensor:
    """The table entry of each scale: the first one at least as large (the last for larger)."""
    table = torch.as_tensor(scale_table(), dtype=scales.dtype, device=scales.device)
    return torch.searchsorted(table, scales.contiguous()).clamp_max(SCALE_LEVELS - 1)


def gaussian_likelihood(values: Tensor, scales: Tensor) -> Tensor:
    """Probability of the unit interval around ``values`` (already minus the mean) under
    N(0, scale), computed in float32 on the side of the tail for accuracy."""
    v, s = values.float().abs(), scales.float()
    upper = torch.special.ndtr((0.5 - v) / s)
    lower = torch.special.ndtr((-0.5 - v) / s)
    return (upper - lower).clamp_min(LIKELIHOOD_FLOOR)


class HyperpriorCodec(Codec):
    """Mean-scale hyperprior codec (module docstring).

    Parameters
    ----------
    in_channels, channels, latent_channels
        As for :class:`~emae.models.codec.Codec`.
    hyper_channels
        ``Nz``, the channels of the hyper-latent ``z``.

    Attributes
    ----------
    entropy : FactorizedDensity
        The density of ``z`` (the latent ``y`` is coded with the Gaussian tables).
    downsample_factor : int
        ``4 m``: images are padded to a multiple of it, so that ``z`` covers ``y`` exactly.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: tuple[int, ...] = (32, 32, 32, 32),
        latent_channels: int = 64,
        hyper_channels: int = 32,
    ) -> None:
        super().__init__(in_channels, channels, latent_channels)
        m, n = latent_channels, hyper_channels
        act = nn.LeakyReLU
        self.hyper_analysis = nn.Sequential(
            nn.Conv2d(m, n, 3, padding=1), act(),
            nn.Conv2d(n, n, 5, stride=2, padding=2), act(),
            nn.Conv2d(n, n, 5, stride=2, padding=2),
        )  # fmt: skip
        self.hyper_synthesis = nn.Sequential(
            nn.ConvTranspose2d(n, n, 5, 2, 2, output_padding=1), act(),
            nn.ConvTranspose2d(n, n, 5, 2, 2, output_padding=1), act(),
            nn.Conv2d(n, 2 * m, 3, padding=1),
        )  # fmt: skip
        self.entropy = FactorizedDensity(n)
        self.hyper_channels = n
        self.downsample_factor = 4 * self.latent_factor

    def gaussian_parameters(
        self, z_hat: Tensor, *, exact: nn.Module | None = None
    ) -> tuple[Tensor, Tensor]:
        """``round(z)`` ``(N, Nz, h/4, w/4)`` -> mean and scale ``(N, M, h, w)``.

        ``exact`` (coding): a float64 CPU copy of :attr:`hyper_synthesis`
        (:meth:`exact_synthesis`), run on one thread and returned in float64, so that the
        encoder and the decoder compute the same values.
        """
        if exact is not None:
            with one_thread(), torch.no_grad():
                out = exact(z_hat.detach().to("cpu", torch.float64))
        else:
            out = self.hyper_synthesis(z_hat)
        means, raw = out.chunk(2, dim=1)
        return means, torch.exp(raw).clamp(SCALE_MIN, SCALE_MAX)

    def exact_synthesis(self) -> nn.Module:
        """A float64 CPU copy of :attr:`hyper_synthesis`, for :meth:`gaussian_parameters`."""
        return copy.deepcopy(self.hyper_synthesis).to("cpu", torch.float64).eval()

    def rate_distortion_terms(
        self, x: Tensor, generator: torch.Generator | None = None, *, noise: bool = True
    ) -> tuple[Tensor, Tensor]:
        """As :meth:`Codec.rate_distortion_terms`; the rate is that of ``y`` and ``z``."""
        y = self.encode(x)
        z = self.hyper_analysis(y)
        z_tilde = quantized(z, generator, noise)
        bits = -torch.log2(self.entropy.likelihood(z_tilde)).flatten(1).sum(dim=1)
        means, scales = self.gaussian_parameters(z_tilde)
        residual = quantized(y - means, generator, noise)
        bits = bits - torch.log2(gaussian_likelihood(residual, scales)).flatten(1).sum(dim=1)
        r = y - means
        y_hat = means + r + (torch.round(r) - r).detach()
        return center_crop_top_left(self.decode(y_hat), x.shape[-2:]), bits

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W) -> (N, C, H, W)``: the image decoded from the coded latent."""
        y = self.encode(x)
        means, _ = self.gaussian_parameters(torch.round(self.hyper_analysis(y)))
        y_hat = torch.round(y - means) + means
        return center_crop_top_left(self.decode(y_hat), x.shape[-2:])
