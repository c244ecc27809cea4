"""The U-Net: the encoder of :mod:`emae.models.blocks` plus a decoder with skip connections.

An autoencoder without skips must squeeze a patch through its bottleneck, and what it decodes is
smooth: good for finding anomalies (it cannot reproduce what it has not learned), poor for
restoring an image, whose fine structure it loses. The skip connections hand every level's
feature map to the decoder, so the output keeps the input's resolution; what keeps the network
from copying its input is the training objective, not the architecture: a blind-spot target (the
masked pixel cannot be seen, :mod:`emae.train.blind_spot`) or a hole to fill
(:mod:`emae.train.holes`). Shapes (``m = 2**d`` for ``d = len(channels)``)::

    x (N, C, H, W) -> reflect-pad bottom and right to multiples of m -> (N, C, Hp, Wp)
      encoder levels   e_0 (N, c0, Hp, Wp), e_1 (N, c0, Hp/2, Wp/2), e_i (N, c_{i-1}, Hp/2^i, ...)
      bottleneck       b   (N, latent_channels, Hp/m, Wp/m)        conv1x1 of e_d
      up i (i = d..1)  nearest x2, concat e_{i-1}, conv3x3, conv3x3  -> (N, c_{i-1}, ...)
      head             (N, C, Hp, Wp) conv1x1, linear  -> crop to (N, C, H, W)

The encoder is :class:`emae.models.blocks.Encoder`, so a classifier head can use its levels as
it uses the plain autoencoder's. Inference is local and independent of the tile size with
``norm="batch"`` (running statistics) or ``"none"``, which tiled restoration of large images
needs: the result of overlapping tiles then matches one pass over the whole image.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from emae.models.blocks import (
    Activation,
    ConvBlock,
    Encoder,
    Norm,
    check_architecture,
)


class UNet(nn.Module):
    """A U-Net for image-to-image restoration ``(N, C, H, W) -> (N, C, H, W)``.

    Parameters
    ----------
    in_channels
        Channels of the image, 1 for grayscale EM.
    channels
        Feature channels after each down-sampling level (``depth = len(channels)``).
    latent_channels
        Channels of the bottleneck (:meth:`features`).
    norm
        ``"batch"`` (default: local inference, see the module docstring), ``"group"`` or
        ``"none"``.
    activation
        See :func:`emae.models.blocks.make_activation`.
    out_channels
        Channels of the output (default: ``in_channels``).

    Attributes
    ----------
    encoder : Encoder
        The contracting path; :meth:`Encoder.levels` gives the skips.
    feature_channels, downsample_factor : int
        Of :meth:`features`, for feature-space scores and classifier heads.
    latent : str
        ``"spatial"``: the bottleneck is a map, and any H, W are taken (as a spatial
        :class:`~emae.models.ConvAutoencoder`'s).
    """

    latent = "spatial"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        channels: tuple[int, ...] = (32, 64, 128),
        latent_channels: int = 64,
        norm: Norm = "batch",
        activation: Activation = "leaky_relu",
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        channels = check_architecture(
            in_channels=in_channels,
            channels=channels,
            latent_channels=latent_channels,
            norm=norm,
            latent="spatial",
            latent_dim=1,
            patch_size=None,
            activation=activation,
        )
        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.feature_channels = latent_channels
        self.downsample_factor = 2 ** len(channels)
        blocks = {"norm": norm, "activation": activation}
        self.encoder = Encoder(in_channels, channels, latent_channels, **blocks)
        # Up level i takes the map below it (the bottleneck, then the previous up level) and
        # the encoder's map e_{i-1} at its resolution, and has that map's channels.
        skips = (channels[0], *channels[:-1])[::-1]  # channels of e_{d-1} .. e_0
        below = (latent_channels, *skips[:-1])  # channels arriving at up d .. 1
        self.up = nn.ModuleList(
            nn.Sequential(
                ConvBlock(c_in + c_skip, c_skip, **blocks),
                ConvBlock(c_skip, c_skip, **blocks),
            )
            for c_in, c_skip in zip(below, skips, strict=True)
        )
        self.head = nn.Conv2d(channels[0], out_channels or in_channels, 1)

    def features(self, x: Tensor) -> Tensor:
        """The bottleneck: ``(N, C, H, W) -> (N, latent_channels, ceil(H/m), ceil(W/m))``."""
        return self.encoder(x)

    def forward(self, x: Tensor) -> Tensor:
        """Restore ``x``: ``(N, C, H, W) -> (N, C, H, W)``, same dtype, linear output."""
        h, w = x.shape[-2:]
        m = self.downsample_factor
        # Padded at the bottom and right only, so that the down-sampling grid starts at the
        # input's first pixel: tiles starting at multiples of m then see the grid of one pass
        # over the whole image, and tiled restoration matches it.
        padded = nn.functional.pad(x, (0, -w % m, 0, -h % m), mode="reflect")
        levels = self.encoder.levels(padded)  # [(e_0, 1), ..., (e_d, m), (bottleneck, m)]
        skips = [f for f, _ in levels[:-2]]  # e_0 .. e_{d-1}
        y = levels[-1][0]
        for block, skip in zip(self.up, skips[::-1], strict=True):
            y = nn.functional.interpolate(y, scale_factor=2, mode="nearest")
            y = block(torch.cat([y, skip], dim=1))
        return self.head(y)[..., :h, :w]  # (N, C, H, W)


class InpaintingUNet(UNet):
    """The U-Net that fills holes: ``(N, 2, H, W)`` image (holes set to 0) and hole mask in,
    ``(N, 1, H, W)`` image out (:mod:`emae.train.holes`).

    Given a one-channel image it fills no hole (the mask is all 0): what it returns is then its
    reproduction of the image, which is what a reconstruction-based anomaly score and the
    exported graph see. Parameters as :class:`UNet`'s, without the channel counts.
    """

    def __init__(
        self,
        *,
        channels: tuple[int, ...] = (32, 64, 128),
        latent_channels: int = 64,
        norm: Norm = "batch",
        activation: Activation = "leaky_relu",
    ) -> None:
        super().__init__(
            in_channels=2,
            channels=channels,
            latent_channels=latent_channels,
            norm=norm,
            activation=activation,
            out_channels=1,
        )

    def _with_mask(self, x: Tensor) -> Tensor:
        return x if x.shape[1] == 2 else torch.cat([x, torch.zeros_like(x)], dim=1)

    def features(self, x: Tensor) -> Tensor:
        """The bottleneck of ``(N, 1 or 2, H, W)``."""
        return super().features(self._with_mask(x))

    def forward(self, x: Tensor) -> Tensor:
        """``(N, 2, H, W)`` (or ``(N, 1, H, W)``: no holes) -> ``(N, 1, H, W)``."""
        return super().forward(self._with_mask(x))
