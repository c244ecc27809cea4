"""Building blocks shared by the autoencoders: the convolutional encoder and decoder.

With ``channels = (c0, ..., c_{d-1})`` (depth ``d``, total down-sampling ``m = 2**d``)::

    Encoder  (N, C, H, W)
      pad    -> (N, C, Hp, Wp)              reflect-pad H, W up to multiples of m
      stem   -> (N, c0, Hp, Wp)             conv3x3
      down i -> (N, c_i, Hp/2^(i+1), ...)   conv3x3 stride 2, conv3x3      (i = 0 .. d-1)
      head   -> (N, out, Hp/m, Wp/m)        conv1x1, linear (no norm, no activation)

    Decoder  (N, in, h, w)
      stem   -> (N, c_{d-1}, h, w)          conv3x3
      up i   -> (N, c_{i-1}, 2h, 2w)        nearest x2, conv3x3, conv3x3   (c_{-1} = c0)
      head   -> (N, C, h*m, w*m)            conv3x3, linear output

Up-sampling is nearest-neighbour followed by a convolution rather than a transposed
convolution: a stride-2 transposed convolution overlaps its kernels unevenly and paints a
checkerboard pattern (Odena et al., 2016, "Deconvolution and checkerboard artifacts"), which an
anomaly detector would then report as structure. There are no skip connections: with them the
decoder could copy the input and would reconstruct artifacts as well as tissue.

Every convolution except the two linear heads is followed by a normalization and an activation.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch.nn.functional as F
from torch import Tensor, nn

from emae.errors import EmaeError

Norm = Literal["batch", "group", "none"]
Activation = Literal["leaky_relu", "relu", "gelu", "silu"]
Latent = Literal["spatial", "vector"]
NORMS: tuple[str, ...] = get_args(Norm)
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
LATENTS: tuple[str, ...] = get_args(Latent)

#: Upper bound on the number of groups of a GroupNorm; the actual number divides the channels.
MAX_GROUPS = 8
#: Negative slope of the default LeakyReLU.
LEAKY_SLOPE = 0.2


def check_choice(name: str, value: object, choices: tuple[object, ...]) -> None:
    """Raise an :class:`EmaeError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        known = ", ".join(repr(c) for c in choices)
        raise EmaeError(f"{name} must be one of {known}, got {value!r}")


def check_channels(channels: tuple[int, ...]) -> tuple[int, ...]:
    """Return ``channels`` as a tuple of positive ints, or raise an :class:`EmaeError`."""
    channels = tuple(channels)
    if not channels or not all(isinstance(c, int) and c > 0 for c in channels):
        raise EmaeError(f"channels must be a non-empty sequence of positive ints, got {channels!r}")
    return channels


def check_positive(name: str, value: int) -> None:
    """Raise an :class:`EmaeError` unless ``value`` is a positive int."""
    if not isinstance(value, int) or value <= 0:
        raise EmaeError(f"{name} must be a positive int, got {value!r}")


def check_architecture(
    *,
    in_channels: int,
    channels: tuple[int, ...],
    latent_channels: int,
    norm: str,
    latent: str,
    latent_dim: int,
    patch_size: int | None,
    activation: str,
) -> tuple[int, ...]:
    """Validate the constructor arguments shared by the autoencoders; return ``channels``.

    Raises an :class:`EmaeError` naming the first bad value. In ``"vector"`` mode ``patch_size``
    is required and must be a multiple of ``2**len(channels)``.
    """
    check_positive("in_channels", in_channels)
    channels = check_channels(channels)
    check_positive("latent_channels", latent_channels)
    check_choice("norm", norm, NORMS)
    check_choice("latent", latent, LATENTS)
    check_choice("activation", activation, ACTIVATIONS)
    if latent == "vector":
        check_positive("latent_dim", latent_dim)
        m = 2 ** len(channels)
        if not isinstance(patch_size, int) or patch_size < m or patch_size % m:
            raise EmaeError(
                f'latent="vector" needs patch_size, a positive multiple of {m} '
                f"(2**len(channels)), got patch_size={patch_size!r}"
            )
    return channels


def check_patch(x: Tensor, patch_size: int) -> None:
    """Raise an :class:`EmaeError` unless ``x`` is ``(N, C, patch_size, patch_size)``."""
    if x.ndim != 4 or tuple(x.shape[-2:]) != (patch_size, patch_size):
        raise EmaeError(
            f'a latent="vector" model takes (N, C, {patch_size}, {patch_size}) patches, '
            f"got shape {tuple(x.shape)}"
        )


def make_norm(norm: Norm, channels: int) -> nn.Module:
    """A normalization layer over ``channels`` feature maps.

    ``"group"`` uses ``gcd(channels, 8)`` groups. It does not depend on the other samples of the
    batch, so it behaves the same with batches of 4 on a laptop as with 256 on a GPU, and the
    same in training and evaluation. ``"batch"`` is BatchNorm, ``"none"`` the identity.
    """
    if norm == "group":
        return nn.GroupNorm(math.gcd(channels, MAX_GROUPS), channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def make_activation(activation: Activation) -> nn.Module:
    """The activation module named by ``activation`` (LeakyReLU has slope 0.2)."""
    if activation == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE)
    if activation == "relu":
        return nn.ReLU()
    if activation == "gelu":
        return nn.GELU()
    return nn.SiLU()


class ConvBlock(nn.Sequential):
    """Convolution, normalization, activation: ``(N, c_in, H, W) -> (N, c_out, H/s, W/s)``.

    The convolution has a bias only when ``norm="none"`` (a normalization cancels it).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        norm: Norm,
        activation: Activation,
        stride: int = 1,
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=norm == "none"),
            make_norm(norm, out_channels),
            make_activation(activation),
        )


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Reflect-pad ``(N, C, H, W)`` up to the next multiples of ``multiple`` in H and W.

    The padding is split between both sides (the extra row or column, if odd, goes to the bottom
    or right); :func:`center_crop` undoes it. ``x`` is returned as is when nothing is needed.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), "reflect")


def center_crop(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Crop ``(N, C, Hp, Wp)`` to ``(N, C, *size)``, undoing :func:`pad_to_multiple`."""
    h, w = size
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top : top + h, left : left + w]


class Encoder(nn.Module):
    """``(N, in_channels, H, W) -> (N, out_channels, ceil(H/m), ceil(W/m))`` with ``m = 2**depth``.

    Any H, W >= m are accepted: the input is reflect-padded up to multiples of m first, so the
    encoder can be reused alone (by a classifier) on patches of any size.

    Parameters
    ----------
    in_channels
        Channels of the image, 1 for grayscale EM.
    channels
        Feature channels after each down-sampling level; ``depth = len(channels)``.
    out_channels
        Channels of the output map (the latent map of a spatial autoencoder).
    norm, activation
        See :func:`make_norm` and :func:`make_activation`.
    """

    def __init__(
        self,
        in_channels: int,
        channels: tuple[int, ...],
        out_channels: int,
        *,
        norm: Norm,
        activation: Activation,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.channels = tuple(channels)
        self.downsample_factor = 2 ** len(channels)
        self.stem = ConvBlock(in_channels, channels[0], norm=norm, activation=activation)
        levels = []
        for c_in, c_out in zip((channels[0], *channels[:-1]), channels, strict=True):
            levels.append(
                nn.Sequential(
                    ConvBlock(c_in, c_out, norm=norm, activation=activation, stride=2),
                    ConvBlock(c_out, c_out, norm=norm, activation=activation),
                )
            )
        self.down = nn.Sequential(*levels)
        self.head = nn.Conv2d(channels[-1], out_channels, 1)

    def check_input(self, x: Tensor) -> None:
        """Raise an :class:`EmaeError` unless ``x`` is ``(N, in_channels, H, W)`` with H, W >= m."""
        m = self.downsample_factor
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise EmaeError(
                f"expected a tensor of shape (N, {self.in_channels}, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        if min(x.shape[-2:]) < m:
            raise EmaeError(
                f"H and W must be >= {m} (the encoder halves them {len(self.down)} times), "
                f"got an input of {x.shape[-2]}x{x.shape[-1]}"
            )

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        x = pad_to_multiple(x, self.downsample_factor)  # (N, C, Hp, Wp)
        x = self.stem(x)  # (N, c0, Hp, Wp)
        x = self.down(x)  # (N, c_{d-1}, Hp/m, Wp/m)
        return self.head(x)  # (N, out_channels, Hp/m, Wp/m)

    def levels(self, x: Tensor) -> list[tuple[Tensor, int]]:
        """Every level's feature map with its downsampling ``d``: ``[(stem, 1), (level 1, 2),
        ..., (output, m)]``, each map ``(N, C_level, Hp / d, Wp / d)`` float (``Hp, Wp``: the
        input reflect-padded to multiples of ``m``); the last map is :meth:`forward`'s output."""
        self.check_input(x)
        x = self.stem(pad_to_multiple(x, self.downsample_factor))
        maps = [(x, 1)]
        for i, level in enumerate(self.down, start=1):
            x = level(x)
            maps.append((x, 2**i))
        maps.append((self.head(x), self.downsample_factor))
        return maps

    def level_channels(self) -> int:
        """Channels of all :meth:`levels` together."""
        return self.channels[0] + sum(self.channels) + self.head.out_channels


class Decoder(nn.Module):
    """``(N, in_channels, h, w) -> (N, out_channels, h*m, w*m)`` with ``m = 2**len(channels)``.

    Mirrors :class:`Encoder`: ``channels`` are given in the encoder's order. The output is linear
    (no final activation), so reconstructions are not clipped to the input range.
    """

    def __init__(
        self,
        in_channels: int,
        channels: tuple[int, ...],
        out_channels: int,
        *,
        norm: Norm,
        activation: Activation,
    ) -> None:
        super().__init__()
        self.stem = ConvBlock(in_channels, channels[-1], norm=norm, activation=activation)
        levels = []
        for c_in, c_out in zip(channels[::-1], (*channels[-2::-1], channels[0]), strict=True):
            levels.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    ConvBlock(c_in, c_out, norm=norm, activation=activation),
                    ConvBlock(c_out, c_out, norm=norm, activation=activation),
                )
            )
        self.up = nn.Sequential(*levels)
        self.head = nn.Conv2d(channels[0], out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        z = self.stem(z)  # (N, c_{d-1}, h, w)
        z = self.up(z)  # (N, c0, h*m, w*m)
        return self.head(z)  # (N, out_channels, h*m, w*m)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
