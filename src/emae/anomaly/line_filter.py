"""Oriented line responses: how much a pixel lies on a long, thin, straight line.

A scratch in an EM section is a thin line like a membrane; across a few pixels the two look
alike, and a network that sees 40 pixels around each one cannot tell them apart. What differs
is the length: a scratch runs straight for hundreds of pixels, a membrane bends within a cell.
:func:`line_responses` measures, at every pixel and for ``angles`` orientations, the mean of the
image along a segment of ``length`` pixels through it minus the mean of the two parallel
segments ``offset`` pixels to either side, and keeps the largest bright and the largest dark
response over the orientations::

    line(p, theta)  = mean of x over the segment through p at angle theta, ``length`` long
    R(p, theta)     = line(p, theta) - (line(p + offset n, theta) + line(p - offset n, theta)) / 2
    bright(p)       = max over theta of  R(p, theta)             (N, H, W)
    dark(p)         = max over theta of -R(p, theta)

with ``n`` the unit normal to the segment. A uniform region gives 0, a straight step of height
``c`` at most ``c / 2`` (within ``offset`` of it), a straight line of contrast ``c`` narrower
than ``offset`` about ``c``, a curved or short one less, the more it bends or the shorter it is
within ``length``.

Each orientation is computed by rotating the image onto a canvas (bilinear, half-sample
reflection at the image's borders), averaging along the canvas's rows, differencing rows and
rotating the response back: two resamplings and one box filter per orientation, in torch on the
tensor's device; the cost does not grow with ``length``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from emae.errors import EmaeError


def _rotation_grid(
    angles: Tensor, out_hw: tuple[int, int], in_hw: tuple[int, int], inverse: bool
) -> Tensor:
    """``affine_grid`` sampling an ``in_hw`` image on an ``out_hw`` canvas, both centred, the
    canvas's rows along each of ``angles`` (or, ``inverse``, back): ``(K, Ho, Wo, 2)``."""
    (ho, wo), (hi, wi) = out_hw, in_hw
    c, s = torch.cos(angles), torch.sin(angles)
    if inverse:
        s = -s
    # Pixel offsets from the centres: input = R(angle) @ output; normalized coordinates are
    # pixel offsets times 2 / size (align_corners=False).
    theta = torch.stack(
        [
            torch.stack([c * wo / wi, -s * ho / wi, torch.zeros_like(c)], dim=-1),
            torch.stack([s * wo / hi, c * ho / hi, torch.zeros_like(c)], dim=-1),
        ],
        dim=-2,
    )
    return F.affine_grid(theta, [len(angles), 1, ho, wo], align_corners=False)


def line_responses(x: Tensor, length: int = 41, angles: int = 16, offset: int = 4) -> Tensor:
    """The largest bright and dark straight-line response at every pixel.

    Parameters
    ----------
    x
        ``(N, 1, H, W)`` float images (normalized, any device).
    length
        Pixels along each segment, >= 3: lines shorter than this respond less.
    angles
        Orientations, evenly spaced over 180 degrees, >= 1.
    offset
        Pixels between the segment and each flanking segment, >= 1: lines wider than about
        ``offset`` respond less.

    Returns
    -------
    torch.Tensor
        ``(N, 2, H, W)`` of ``x``'s dtype: the bright response (max over orientations of
        ``R``), then the dark one (max of ``-R``), in the units of ``x``.
    """
    if x.ndim != 4 or x.shape[1] != 1:
        raise EmaeError(f"line_responses expects (N, 1, H, W) images, got {tuple(x.shape)}")
    if length < 3 or angles < 1 or offset < 1:
        raise EmaeError(
            f"line responses need length >= 3, angles >= 1 and offset >= 1, got "
            f"{length}, {angles} and {offset}"
        )
    n, _, h, w = x.shape
    side = math.ceil(math.hypot(h, w)) + length + 2 * offset
    # The canvas's sides have the image's parity, so that at angle 0 (and at 90 degrees if H
    # and W have one parity) its pixels fall on the image's and the response is exact.
    canvas_hw = (side + (side - h) % 2, side + (side - w) % 2)
    theta = torch.arange(angles, dtype=torch.float64, device=x.device) * (math.pi / angles)
    to_canvas = _rotation_grid(theta, canvas_hw, (h, w), inverse=False).to(x.dtype)
    back = _rotation_grid(theta, (h, w), canvas_hw, inverse=True).to(x.dtype)
    bright = dark = None
    for k in range(angles):
        canvas = F.grid_sample(
            x,
            to_canvas[k : k + 1].expand(n, -1, -1, -1),
            mode="bilinear",
            padding_mode="reflection",
            align_corners=False,
        )
        lines = F.avg_pool2d(
            canvas, (1, length), stride=1, padding=(0, length // 2), count_include_pad=False
        )
        flanks = F.pad(lines, (0, 0, offset, offset), mode="replicate")
        response = lines - 0.5 * (flanks[:, :, : -2 * offset] + flanks[:, :, 2 * offset :])
        response = F.grid_sample(
            response,
            back[k : k + 1].expand(n, -1, -1, -1),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
        bright = response if bright is None else torch.maximum(bright, response)
        dark = -response if dark is None else torch.maximum(dark, -response)
    return torch.cat([bright, dark], dim=1)
