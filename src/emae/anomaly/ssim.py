"""Structural similarity (SSIM, Wang et al. 2004) as a map: the ``"ssim"`` anomaly score and
the SSIM training losses (:mod:`emae.train.losses`) share this one implementation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from emae.errors import EmaeError

#: The constants of the paper, relative to the data range.
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _gaussian_window(window: int, sigma: float, device: torch.device) -> Tensor:
    """Normalized 1D Gaussian of ``window`` taps: ``(window,)`` float32."""
    r = torch.arange(window, dtype=torch.float32, device=device) - (window - 1) / 2
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    return g / g.sum()


def _blur(x: Tensor, g: Tensor) -> Tensor:
    """Separable Gaussian blur of ``(B, 1, H, W)`` with reflect padding; same shape."""
    r = g.numel() // 2
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1))
    return F.conv2d(x, g.view(1, 1, -1, 1))


def ssim_map(
    x: Tensor,
    y: Tensor,
    *,
    window: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
) -> Tensor:
    """Local structural similarity of two images (Wang et al., 2004).

    Local means, variances and the covariance are Gaussian-weighted (population, not sample,
    statistics), as in the paper; the image is reflect-padded so the map keeps the input's size.

    Parameters
    ----------
    x, y
        ``(N, C, H, W)`` float tensors of the same shape, with H, W > ``window // 2``.
    window
        Odd width of the Gaussian window in pixels (11 in the paper, 7 for small patches).
    sigma
        Standard deviation of the Gaussian window in pixels.
    data_range
        Range of the pixel values (1 for images normalized to [0, 1]).

    Returns
    -------
    Tensor
        ``(N, 1, H, W)`` float32, 1 where the images agree, the mean over channels for C > 1.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise EmaeError(
            f"ssim_map needs two (N, C, H, W) tensors of the same shape, "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if window < 1 or window % 2 == 0:
        raise EmaeError(f"window must be a positive odd number of pixels, got window={window}")
    if min(x.shape[-2:]) <= window // 2:
        raise EmaeError(
            f"ssim_map needs H, W > {window // 2} for window={window}, "
            f"got an image of {x.shape[-2]}x{x.shape[-1]}"
        )
    n, c, h, w = x.shape
    x = x.float().reshape(n * c, 1, h, w)
    y = y.float().reshape(n * c, 1, h, w)
    g = _gaussian_window(window, sigma, x.device)
    # One blur for the five local moments: (5 * N * C, 1, H, W).
    moments = _blur(torch.cat([x, y, x * x, y * y, x * y]), g).chunk(5)
    mu_x, mu_y, xx, yy, xy = moments
    var_x = xx - mu_x.square()
    var_y = yy - mu_y.square()
    cov = xy - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2)
    )
    return s.reshape(n, c, h, w).mean(dim=1, keepdim=True)
