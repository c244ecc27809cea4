"""One vector per patch from an autoencoder's encoder: what a classifier head or a latent map sees.

Two representations, both of every input as a whole or over sliding windows of its latent cells:

``"latent"``
    the mean of the backbone's features (its latent map, ``feature_channels`` values);
``"levels"``
    the mean and standard deviation of every encoder level, from the full-resolution stem to the
    latent (``2 * encoder.level_channels()`` values), so fine texture counts as much as the
    coarse code. Needs a backbone whose ``encoder`` exposes ``levels``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emae.errors import EmaeError

Pooling = Literal["latent", "levels"]
POOLINGS: tuple[str, ...] = ("latent", "levels")


def check_pooling(backbone: nn.Module, pooling: str) -> None:
    """Refuse an unknown pooling, or ``"levels"`` on a backbone without encoder levels."""
    if pooling not in POOLINGS:
        raise EmaeError(f"pooling must be 'latent' or 'levels', got {pooling!r}")
    if pooling == "levels" and not hasattr(getattr(backbone, "encoder", None), "levels"):
        raise EmaeError(f"pooling='levels' needs an encoder with levels; {type(backbone)}")


def pooled_channels(backbone: nn.Module, pooling: str) -> int:
    """Length of the vector that :func:`global_features` gives with this ``pooling``."""
    check_pooling(backbone, pooling)
    if pooling == "levels":
        return 2 * int(backbone.encoder.level_channels())
    return int(backbone.feature_channels)


def level_statistics(backbone: nn.Module, x: Tensor, cells: int | None) -> Tensor:
    """Mean and std of every encoder level over windows of ``cells`` latent cells.

    Level ``l`` (downsampling ``d``) is pooled over ``cells * m / d`` of its pixels with a
    stride of ``m / d`` (``m`` the backbone's ``downsample_factor``), so every level lands on the
    latent grid: ``(N, C, h', w')`` float32. ``cells=None`` pools over the whole input:
    ``(N, C, 1, 1)``.
    """
    m = int(backbone.downsample_factor)
    parts = []
    for f, d in backbone.encoder.levels(x):
        f = f.float()
        if cells is None:
            mean = f.mean(dim=(2, 3), keepdim=True)
            square = (f * f).mean(dim=(2, 3), keepdim=True)
        else:
            k = min(cells, f.shape[-2] * d // m, f.shape[-1] * d // m) * m // d
            mean = window_mean(f, k, m // d)
            square = window_mean(f * f, k, m // d)
        parts += [mean, (square - mean * mean).clamp_min(0).sqrt()]
    return torch.cat(parts, dim=1)


def window_mean(f: Tensor, k: int, stride: int) -> Tensor:
    """The mean of ``f`` ``(N, C, H, W)`` over ``k x k`` windows at ``stride``, as
    ``F.avg_pool2d(f, k, stride)`` computes it, but separably: along y, then along x.

    The same sums in another order (within float32 rounding), for ``2 k`` additions per output
    instead of ``k * k`` (the dense maps of a classifier pool 64-pixel windows of its first
    level at every 8th pixel; ``docs/benchmarks.md``, "Classifier maps in detect").
    """
    rows = F.avg_pool2d(f, kernel_size=(k, 1), stride=(stride, 1))
    return F.avg_pool2d(rows, kernel_size=(1, k), stride=(1, stride))


def global_features(backbone: nn.Module, x: Tensor, pooling: Pooling) -> Tensor:
    """The representation of each whole input: ``(N, 1, H, W) -> (N, C, 1, 1)`` float32."""
    if pooling == "levels":
        return level_statistics(backbone, x, None)
    return F.adaptive_avg_pool2d(backbone.features(x).float(), 1)
