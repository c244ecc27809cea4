"""Blind-spot training: learn to denoise from noisy images alone (Noise2Void).

EM has no clean images to train against. If the noise of each pixel is independent of its
neighbours' and has zero mean, a network that predicts a pixel from its surroundings *without
seeing the pixel itself* can only learn the signal: the noise there is unpredictable from the
context, so the best prediction of the noisy value is the clean one (Krull et al., 2019,
"Noise2Void"). Training makes the network blind where it is scored:

- **which pixels**: one pixel per ``cell x cell`` box of every patch, at a uniformly random
  place within the box (stratified, so the masked pixels spread evenly: ``1 / cell**2`` of the
  pixels, 1.6% for the default ``cell=8``);
- **replaced by**: the value of another pixel of the same patch drawn uniformly from the
  ``(2 radius + 1)**2 - 1`` others of its window (default 5 x 5), never itself, reflected at the
  patch border;
- **loss**: the squared (or absolute) difference between the network's output and the *original
  noisy* value, on the masked pixels only; every other output pixel is ignored.

At inference the network sees the whole image unmasked (as Noise2Void does).
"""

from __future__ import annotations

import torch
from torch import Tensor

from emae.errors import EmaeError

#: Default side of the boxes that each contribute one masked pixel.
CELL = 8
#: Default radius of the window the replacement value is drawn from.
RADIUS = 2


def blind_spot_mask(
    shape: tuple[int, ...], generator: torch.Generator, *, cell: int = CELL
) -> Tensor:
    """Which pixels to mask: boolean ``(N, 1, H, W)``, one pixel per ``cell x cell`` box.

    Boxes at the bottom and right border may be cut by the patch; their pixel is drawn inside
    the patch. Drawn on ``generator``'s device.
    """
    if cell < 1:
        raise EmaeError(f"cell must be >= 1, got {cell}")
    n, _, h, w = shape
    device = generator.device
    rows, cols = -(-h // cell), -(-w // cell)
    offsets = torch.rand((2, n, rows, cols), generator=generator, device=device)
    box_y = torch.arange(rows, device=device).view(1, rows, 1) * cell
    box_x = torch.arange(cols, device=device).view(1, 1, cols) * cell
    ys = box_y + (offsets[0] * torch.clamp(h - box_y, max=cell)).long()  # (N, rows, cols)
    xs = box_x + (offsets[1] * torch.clamp(w - box_x, max=cell)).long()
    mask = torch.zeros((n, 1, h, w), dtype=torch.bool, device=device)
    batch = torch.arange(n, device=device).view(n, 1, 1).expand_as(ys)
    mask[batch.reshape(-1), 0, ys.reshape(-1), xs.reshape(-1)] = True
    return mask


def _reflect(i: Tensor, size: int) -> Tensor:
    """Indices reflected into ``0..size-1`` (edge not repeated: -1 -> 1, size -> size - 2)."""
    i = i.abs()
    return torch.where(i >= size, 2 * (size - 1) - i, i)


def blind_spot_inputs(
    x: Tensor, mask: Tensor, generator: torch.Generator, *, radius: int = RADIUS
) -> Tensor:
    """``x`` with every masked pixel replaced by another pixel of its window (module docstring).

    Parameters
    ----------
    x
        ``(N, C, H, W)`` float batch; not modified.
    mask
        ``(N, 1, H, W)`` bool, from :func:`blind_spot_mask`; the channels share it.
    generator
        Source of the replacement offsets.
    radius
        Half-side of the window; the patch must be larger than ``2 * radius``.
    """
    h, w = x.shape[-2:]
    if radius < 1 or min(h, w) <= 2 * radius:
        raise EmaeError(f"need radius >= 1 and patches larger than {2 * radius}, got {h}x{w}")
    b, _, y, xx = mask.nonzero(as_tuple=True)  # (M,) each
    side = 2 * radius + 1
    k = torch.randint(side * side - 1, b.shape, generator=generator, device=generator.device)
    k = (k + (k >= side * side // 2).long()).to(x.device)  # skip the centre of the window
    dy, dx = k // side - radius, k % side - radius
    sy, sx = _reflect(y + dy, h), _reflect(xx + dx, w)
    itself = (sy == y) & (sx == xx)  # a reflection back onto the pixel: take the other side
    sy = torch.where(itself, _reflect(y - dy, h), sy)
    sx = torch.where(itself, _reflect(xx - dx, w), sx)
    out = x.clone()
    out[b, :, y, xx] = x[b, :, sy, sx]
    return out


def blind_spot_loss(
    model: torch.nn.Module,
    x: Tensor,
    generator: torch.Generator,
    *,
    loss: str = "mse",
    cell: int = CELL,
    radius: int = RADIUS,
) -> Tensor:
    """The blind-spot loss of ``model`` on the noisy batch ``x`` ``(N, C, H, W)``: a scalar.

    ``loss="mse"`` (squared) or ``"l1"`` (absolute) difference between ``model`` of the masked
    batch and ``x``, averaged over the masked pixels and the channels only.
    """
    if loss not in ("mse", "l1"):
        raise EmaeError(f"the blind-spot loss is 'mse' or 'l1', got {loss!r}")
    mask = blind_spot_mask(tuple(x.shape), generator, cell=cell).to(x.device)
    out = model(blind_spot_inputs(x, mask, generator, radius=radius))
    diff = (out.float() - x.float())[mask.expand_as(x)]
    return diff.square().mean() if loss == "mse" else diff.abs().mean()
