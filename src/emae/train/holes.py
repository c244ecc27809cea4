"""Inpainting training: cut holes of realistic shapes into patches and learn to fill them.

An artifact that destroys a region of a section has a shape: a dust particle or a beam
artifact is a blob, a scratch a line, a fold or a seam a band across the section. Training
draws the same shapes as holes (:func:`hole_masks`), each patch gets one to three of them:

- **blob**: a disk or ellipse of diameter 4 pixels to half the patch, its border roughened by
  smoothed noise;
- **line**: a straight stroke of width 2 to 8 pixels at any angle, a third to the whole of the
  patch long;
- **band**: a strip of width 4 pixels to a quarter of the patch across the whole patch, at any
  angle.

The model sees the patch with its holes set to 0 and the hole mask as a second channel
(:class:`emae.models.unet.InpaintingUNet`); the loss is the reconstruction loss on the hole
pixels and the ``FEATHER`` pixels around them, where :class:`emae.restore.Restorer` blends the
prediction into the image. Nothing else is scored: known pixels are kept from the input anyway.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from emae.errors import EmaeError
from emae.restore.restorer import FEATHER

KINDS = ("blob", "line", "band")


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _shape(kind: str, size: int, generator: torch.Generator) -> Tensor:
    """One hole of ``kind`` in a ``size x size`` patch: bool ``(size, size)``."""
    coords = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    cy, cx = (_uniform(generator, 0, size) for _ in range(2))
    angle = _uniform(generator, 0, math.pi)
    along = (yy - cy) * math.sin(angle) + (xx - cx) * math.cos(angle)
    across = -(yy - cy) * math.cos(angle) + (xx - cx) * math.sin(angle)
    if kind == "blob":
        a = _uniform(generator, 2, size / 4)
        b = a * _uniform(generator, 0.5, 1.0)
        rough = torch.rand((1, 1, size // 8 + 2, size // 8 + 2), generator=generator)
        rough = F.interpolate(rough, size=(size, size), mode="bilinear", align_corners=False)[0, 0]
        return (along / a) ** 2 + (across / b) ** 2 <= 0.75 + 0.5 * rough
    if kind == "line":
        width = _uniform(generator, 2, 8)
        length = _uniform(generator, size / 3, size)
        return (across.abs() <= width / 2) & (along.abs() <= length / 2)
    width = _uniform(generator, 4, max(size / 4, 5))
    return across.abs() <= width / 2


def hole_masks(shape: tuple[int, ...], generator: torch.Generator, *, max_holes: int = 3) -> Tensor:
    """Holes for a batch of ``shape = (N, C, P, P)``: bool ``(N, 1, P, P)``, one to
    ``max_holes`` shapes of the module docstring per sample, drawn on the CPU."""
    n, _, h, w = shape
    if h != w or h < 16:
        raise EmaeError(f"holes are drawn in square patches of at least 16 pixels, got {h}x{w}")
    masks = torch.zeros((n, 1, h, w), dtype=torch.bool)
    for i in range(n):
        count = int(torch.randint(1, max_holes + 1, (), generator=generator))
        for _ in range(count):
            kind = KINDS[int(torch.randint(len(KINDS), (), generator=generator))]
            masks[i, 0] |= _shape(kind, h, generator)
        if masks[i].all():  # nothing left to fill from: keep the first shape's complement
            masks[i, 0, : h // 2] = False
    return masks


def _ring(holes: Tensor, width: int) -> Tensor:
    """``holes`` grown by ``width`` pixels (a square neighbourhood)."""
    if width <= 0:
        return holes
    grown = F.max_pool2d(holes.float(), 2 * width + 1, stride=1, padding=width)
    return grown > 0


def inpainting_inputs(x: Tensor, holes: Tensor) -> Tensor:
    """The model's input: ``x`` ``(N, 1, H, W)`` with the holes set to 0, and the hole mask:
    ``(N, 2, H, W)``."""
    holes = holes.to(x.device)
    return torch.cat([x.masked_fill(holes, 0.0), holes.to(x.dtype)], dim=1)


def inpainting_loss(
    model: torch.nn.Module, x: Tensor, generator: torch.Generator, *, loss: str = "mse"
) -> Tensor:
    """The inpainting loss of ``model`` on the batch ``x`` ``(N, 1, P, P)``: a scalar, the
    squared (``"mse"``) or absolute (``"l1"``) error on the holes and their ``FEATHER`` ring."""
    if loss not in ("mse", "l1"):
        raise EmaeError(f"the inpainting loss is 'mse' or 'l1', got {loss!r}")
    holes = hole_masks(tuple(x.shape), generator).to(x.device)
    out = model(inpainting_inputs(x, holes))
    scored = _ring(holes, FEATHER)
    diff = (out.float() - x.float())[scored]
    return diff.square().mean() if loss == "mse" else diff.abs().mean()
