"""Gaussian filtering of image tensors in torch, on any device, matching ``scipy.ndimage``.

The anomaly maps smooth errors and measure local structure with Gaussian windows.
:func:`gaussian_filter` computes what ``scipy.ndimage.gaussian_filter(x, (0, sigma, sigma),
mode="reflect")`` computes (same kernel, same radius, same border), on the device of the tensor
and batched, so the maps can stay where the model ran. :func:`local_std` and :func:`interp`
are the two other pieces of the maps with a numpy counterpart.

The border is scipy's ``"reflect"``, half-sample symmetric (``d c b a | a b c d``), which is
not ``torch.nn.functional.pad(mode="reflect")`` (scipy's ``"mirror"``, ``d c b | a b c d``). It
is built by gathering through an index map, valid for a kernel radius larger than the image.

Each 1D pass is a matrix product: the padded axis is cut into overlapping segments of
``T + 2r`` samples and multiplied by the ``(T + 2r, T)`` banded Toeplitz matrix of the kernel,
``T = max(64, 4 r)``. On a CPU this is several times faster than a one-channel convolution
(which unrolls every pixel's window), and on a GPU it keeps full float32 precision where cuDNN
convolutions may round inputs to TF32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from emae.errors import EmaeError

#: Smallest output segment of a 1D pass; the segments are ``max(MIN_SEGMENT, 4 r)`` long.
MIN_SEGMENT = 64


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """The normalized 1D Gaussian of ``scipy.ndimage.gaussian_filter``.

    Parameters
    ----------
    sigma
        Standard deviation in samples, > 0.
    truncate
        The kernel's radius in standard deviations: ``r = int(truncate * sigma + 0.5)``.

    Returns
    -------
    numpy.ndarray
        ``(2 r + 1,)`` float64 summing to 1.
    """
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 / (sigma * sigma) * offsets**2)
    return kernel / kernel.sum()


def reflect_index(index: Tensor, n: int) -> Tensor:
    """Positions on an axis of ``n`` samples extended by half-sample symmetric reflection.

    ``i -> i mod 2n``, then ``2n - 1 - i`` where that is ``>= n``: ``-1 -> 0``, ``-2 -> 1``,
    ``n -> n - 1``, for any integer ``i`` (periodic with period ``2n``).

    Parameters
    ----------
    index
        Integer tensor of any shape, any values.
    n
        Length of the axis, >= 1.

    Returns
    -------
    Tensor
        Same shape and dtype as ``index``, values in ``[0, n)``.
    """
    index = torch.remainder(index, 2 * n)
    return torch.where(index >= n, 2 * n - 1 - index, index)


def _toeplitz(kernel: np.ndarray, segment: int, like: Tensor) -> Tensor:
    """``(segment + 2r, segment)`` banded matrix: column ``t`` holds the kernel in rows ``t``
    to ``t + 2r``; dtype and device of ``like``."""
    taps = torch.as_tensor(kernel, dtype=like.dtype, device=like.device)
    t = torch.arange(segment, device=like.device)
    rows = t + torch.arange(len(kernel), device=like.device)[:, None]  # (2r + 1, segment)
    matrix = torch.zeros(segment + len(kernel) - 1, segment, dtype=like.dtype, device=like.device)
    matrix[rows, t.expand_as(rows)] = taps[:, None].expand_as(rows)
    return matrix


def _filter_columns(x: Tensor, kernel: np.ndarray) -> Tensor:
    """Correlate each column of ``(..., H, W)`` with ``kernel`` (odd length), reflect border.

    One gather of whole rows builds the overlapping segments, padding included.
    """
    n, radius = x.shape[-2], len(kernel) // 2
    segment = min(max(MIN_SEGMENT, 4 * radius), n)
    n_segments = -(-n // segment)
    window = segment + 2 * radius
    # Output row t of segment s reads padded rows s * segment + t - r ... + t + r.
    starts = torch.arange(n_segments, device=x.device)[:, None] * segment - radius
    index = reflect_index(starts + torch.arange(window, device=x.device), n).reshape(-1)
    segments = x.index_select(-2, index).unflatten(-2, (n_segments, window))
    out = _toeplitz(kernel, segment, x).T @ segments  # (..., n_segments, segment, W)
    return out.flatten(-3, -2)[..., :n, :]


def _filter_rows(x: Tensor, kernel: np.ndarray) -> Tensor:
    """Correlate each row of ``(..., H, W)`` with ``kernel`` (odd length), reflect border.

    Only the ``2r`` border columns are gathered through the index map (a gather along the last
    axis is slow); the segments are overlapping views of the padded rows.
    """
    n, radius = x.shape[-1], len(kernel) // 2
    segment = min(max(MIN_SEGMENT, 4 * radius), n)
    n_segments = -(-n // segment)
    window = segment + 2 * radius
    left = reflect_index(torch.arange(-radius, 0, device=x.device), n)
    right = reflect_index(torch.arange(n, n + radius, device=x.device), n)
    # Samples past n + r only reach outputs past n, which are cropped: zeros will do.
    tail = x.new_zeros((*x.shape[:-1], n_segments * segment - n))
    padded = torch.cat([x.index_select(-1, left), x, x.index_select(-1, right), tail], dim=-1)
    segments = padded.unfold(-1, window, segment)  # (..., H, n_segments, window), a view
    out = segments.reshape(-1, window) @ _toeplitz(kernel, segment, x)
    return out.reshape(*x.shape[:-1], n_segments * segment)[..., :n]


def gaussian_filter(x: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """Gaussian smoothing of each image over its two last axes, reflect border.

    Equal, up to float rounding, to ``scipy.ndimage.gaussian_filter`` with ``sigma`` on the
    two image axes, 0 on the others, and ``mode="reflect"``, ``truncate`` as given.

    Parameters
    ----------
    x
        ``(N, H, W)`` or ``(N, 1, H, W)`` (any ``(..., H, W)``) floating tensor, any device.
    sigma
        Standard deviation in pixels, >= 0; 0 returns ``x`` itself.
    truncate
        Radius of the kernel in standard deviations, ``r = int(truncate * sigma + 0.5)``.

    Returns
    -------
    Tensor
        The shape, dtype and device of ``x``.
    """
    if not sigma >= 0:
        raise EmaeError(f"sigma must be >= 0 pixels, got sigma={sigma}")
    if not x.is_floating_point() or x.ndim < 2:
        raise EmaeError(
            f"gaussian_filter needs a (..., H, W) floating tensor, "
            f"got shape {tuple(x.shape)} dtype {x.dtype}"
        )
    if sigma == 0:
        return x
    kernel = gaussian_kernel(sigma, truncate)
    return _filter_columns(_filter_rows(x, kernel), kernel).contiguous()


def local_std(x: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """Gaussian-weighted local standard deviation: ``sqrt(max(G(x**2) - G(x)**2, 0))``.

    ``G`` is :func:`gaussian_filter` of ``sigma`` pixels. Each image is first shifted by its
    mean, which leaves the result unchanged (``G`` preserves constants) and keeps the float32
    cancellation of ``G(x**2) - G(x)**2`` small.

    Parameters
    ----------
    x
        ``(..., H, W)`` floating tensor, any device.
    sigma
        Standard deviation of the window in pixels, >= 0.
    truncate
        Radius of the window in standard deviations.

    Returns
    -------
    Tensor
        The shape, dtype and device of ``x``, >= 0.
    """
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    mean = gaussian_filter(x, sigma, truncate)
    variance = gaussian_filter(x * x, sigma, truncate) - mean * mean
    return variance.clamp_(min=0).sqrt_()


def interp(x: Tensor, xp: Any, fp: Any) -> Tensor:
    """Piecewise linear interpolation, like ``numpy.interp``: ``fp[0]`` and ``fp[-1]`` beyond
    the ends; several functions sampled at the same ``xp`` in one call.

    Each sample is located once (``torch.searchsorted``); the segments' origins and slopes
    are tabulated in float64 first, so ``y = fp[j] + slope[j] * (x - xp[j])`` as numpy does.

    Parameters
    ----------
    x
        Floating tensor of any shape, any device: where to evaluate.
    xp
        ``(K,)`` non-decreasing sample positions, K >= 1 (a tensor or an array).
    fp
        ``(K,)`` values at ``xp``, or ``(M, K)``: M functions.

    Returns
    -------
    Tensor
        Dtype and device of ``x``; shape of ``x`` for ``(K,)`` values, ``(M, *x.shape)`` for
        ``(M, K)``.
    """
    xp = torch.as_tensor(xp, dtype=torch.float64, device="cpu")
    fp = torch.as_tensor(fp, dtype=torch.float64, device="cpu")
    if xp.ndim != 1 or fp.ndim not in (1, 2) or fp.shape[-1] != xp.numel() or not xp.numel():
        raise EmaeError(
            f"interp needs (K,) positions and (K,) or (M, K) values, K >= 1, got "
            f"{tuple(xp.shape)} and {tuple(fp.shape)}"
        )
    rows = fp.reshape(-1, xp.numel())  # (M, K)
    # Segment j in 1 .. K-1 spans [xp[j-1], xp[j]); 0 and K are the constant ends.
    width = xp.diff()
    slope = rows.diff(dim=-1) / torch.where(width > 0, width, 1.0)
    flat = torch.zeros(len(rows), 1, dtype=torch.float64)
    origin = torch.cat([xp[:1], xp])  # (K + 1,)
    start = torch.cat([rows[:, :1], rows], dim=-1)  # (M, K + 1)
    slope = torch.cat([flat, slope, flat], dim=-1)  # (M, K + 1)
    to_x = {"dtype": x.dtype, "device": x.device}
    index = torch.searchsorted(xp.to(**to_x), x.contiguous(), right=True).reshape(-1)
    offset = (x.reshape(-1) - origin.to(**to_x).index_select(0, index)).reshape(x.shape)
    out = torch.stack(
        [
            s.to(**to_x).index_select(0, index).reshape(x.shape)
            + m.to(**to_x).index_select(0, index).reshape(x.shape) * offset
            for s, m in zip(start, slope, strict=True)
        ]
    )
    return out.reshape(*fp.shape[:-1], *x.shape)
