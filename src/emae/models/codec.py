"""The learned image codec: an autoencoder whose code is quantized and entropy coded.

Ballé et al. (2018), "factorized prior" model, for single-channel EM images::

    x (N, 1, H, W) -> analysis -> y (N, M, H/m, W/m) -> round -> y_hat -> synthesis -> x_hat
                                   rate: -log2 p(y_hat) under the learned FactorizedDensity

The analysis is ``len(channels)`` stride-2 5 x 5 convolutions, each followed by GDN, and a
3 x 3 convolution to ``M = latent_channels``; the synthesis mirrors it with transposed
convolutions and IGDN. ``m = 2**len(channels)``.

Training (:func:`emae.train.losses.rate_distortion_loss`) minimizes ``R + lambda * D``: the rate
of ``y + u``, ``u ~ U(-1/2, 1/2)`` (a differentiable stand-in for rounding), and the distortion
of the image decoded from ``round(y)`` with straight-through gradients (Minnen and Singh, 2020).
:meth:`Codec.forward` decodes the rounded latent, so anything that calls an autoencoder (the
anomaly scores, the report panels) sees what the decompressed image will be.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from emae.models.entropy import GDN, FactorizedDensity


class Codec(nn.Module):
    """Factorized-prior image codec.

    Parameters
    ----------
    in_channels
        Image channels (1 for EM).
    channels
        Width of each down-sampling level, e.g. ``(64, 64, 64, 64)`` (``m = 16``).
    latent_channels
        ``M``, the channels of the quantized latent.

    Attributes
    ----------
    entropy : FactorizedDensity
        The learned density of each latent channel and, after
        :meth:`FactorizedDensity.update_tables`, its coding tables.
    downsample_factor : int
        ``m``: images are padded to a multiple of it before coding.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: tuple[int, ...] = (64, 64, 64, 64),
        latent_channels: int = 96,
    ) -> None:
        super().__init__()
        widths = (in_channels, *channels)
        down: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            down += [nn.Conv2d(a, b, 5, stride=2, padding=2), GDN(b)]
        down.append(nn.Conv2d(widths[-1], latent_channels, 3, padding=1))
        self.analysis = nn.Sequential(*down)
        up: list[nn.Module] = [nn.Conv2d(latent_channels, widths[-1], 3, padding=1)]
        for a, b in zip(widths[:0:-1], widths[-2::-1], strict=True):
            up += [GDN(a, inverse=True), nn.ConvTranspose2d(a, b, 5, 2, 2, output_padding=1)]
        self.synthesis = nn.Sequential(*up)
        self.entropy = FactorizedDensity(latent_channels)
        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.latent_factor = 2 ** len(channels)
        self.downsample_factor = self.latent_factor

    def _pad(self, x: Tensor) -> Tensor:
        """Pad ``(N, C, H, W)`` on the bottom and right, by reflection, to multiples of ``m``."""
        m = self.downsample_factor
        h, w = x.shape[-2:]
        ph, pw = -h % m, -w % m
        if not (ph or pw):
            return x
        mode = "reflect" if ph < h and pw < w else "replicate"
        return nn.functional.pad(x, (0, pw, 0, ph), mode=mode)

    #: The latent is a map (the autoencoders' ``latent`` option): any image size is coded.
    latent = "spatial"

    @property
    def feature_channels(self) -> int:
        """Channels of :meth:`features`: ``M``."""
        return self.latent_channels

    def features(self, x: Tensor) -> Tensor:
        """The latent before rounding, for the feature-space anomaly score: ``(N, M, h, w)``."""
        return self.encode(x)

    def encode(self, x: Tensor) -> Tensor:
        """``(N, C, H, W) -> y (N, M, ceil(H/m), ceil(W/m))``: the latent before rounding."""
        return self.analysis(self._pad(x))

    def decode(self, y_hat: Tensor) -> Tensor:
        """``(N, M, h, w) -> (N, C, h*m, w*m)``: crop to the image's size afterwards."""
        return self.synthesis(y_hat)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W) -> (N, C, H, W)``: the image decoded from the rounded latent."""
        return center_crop_top_left(self.decode(torch.round(self.encode(x))), x.shape[-2:])

    def rate_distortion_terms(
        self, x: Tensor, generator: torch.Generator | None = None, *, noise: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Training terms on a batch ``(N, C, H, W)``: ``(x_hat, bits)``.

        ``x_hat`` ``(N, C, H, W)`` is decoded from the rounded latent (straight-through
        gradient); ``bits`` ``(N,)`` is each image's rate under the density, with uniform noise
        in place of rounding (``noise=False``: of the rounded latent, what a bitstream pays).
        """
        y = self.encode(x)
        bits = -torch.log2(self.entropy.likelihood(quantized(y, generator, noise)))
        y_hat = y + (torch.round(y) - y).detach()
        x_hat = center_crop_top_left(self.decode(y_hat), x.shape[-2:])
        return x_hat, bits.flatten(1).sum(dim=1)


def quantized(y: Tensor, generator: torch.Generator | None, noise: bool) -> Tensor:
    """``y + u``, ``u ~ U(-1/2, 1/2)`` drawn from ``generator`` (training), or ``round(y)``."""
    if not noise:
        return torch.round(y)
    device = generator.device if generator is not None else y.device
    return y + torch.rand(y.shape, generator=generator, device=device).to(y) - 0.5


def center_crop_top_left(x: Tensor, size: tuple[int, int]) -> Tensor:
    """The top-left ``size = (H, W)`` of ``(..., H', W')``: undoes :meth:`Codec._pad`."""
    return x[..., : size[0], : size[1]]
