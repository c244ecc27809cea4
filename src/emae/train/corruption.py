"""Input corruptions for training the denoising autoencoder.

Each function maps an ``(N, C, H, W)`` float batch (intensities roughly in [0, 1]) to a new
corrupted batch of the same shape and dtype; inputs are never modified in place, and every
random draw comes from the ``generator`` passed in, so a seeded generator reproduces the batch.
Masks are drawn per pixel and shared by the channels. Values are not clipped.

:class:`Corruption` bundles a choice of corruptions and strengths and applies one, chosen at
random, to each sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from emae.errors import EmaeError

Fill = Literal["zero", "mean"]
CorruptionKind = Literal["gaussian", "poisson", "salt_pepper", "mask", "blank"]
KINDS: tuple[str, ...] = get_args(CorruptionKind)


def _check_batch(x: Tensor) -> None:
    if x.ndim != 4 or not x.is_floating_point():
        raise EmaeError(
            f"corruptions take an (N, C, H, W) float tensor, "
            f"got shape {tuple(x.shape)} of dtype {x.dtype}"
        )


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise EmaeError(f"{name} must be in [0, 1], got {name}={value}")


def _uniform(shape: tuple[int, ...], x: Tensor, generator: torch.Generator) -> Tensor:
    """Uniform [0, 1) draws of ``shape`` from ``generator``, moved to ``x``'s device."""
    return torch.rand(shape, generator=generator, device=generator.device).to(x.device)


def _pixel_mask(x: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    """Boolean ``(N, 1, H, W)``, each pixel True with probability ``fraction``."""
    n, _, h, w = x.shape
    return _uniform((n, 1, h, w), x, generator) < fraction


def _sample_mean(x: Tensor) -> Tensor:
    """Per-sample, per-channel mean: ``(N, C, 1, 1)``."""
    return x.mean(dim=(2, 3), keepdim=True)


def gaussian_noise(x: Tensor, sigma: float, *, generator: torch.Generator) -> Tensor:
    """Add white Gaussian noise of standard deviation ``sigma`` (in intensity units)."""
    _check_batch(x)
    if sigma < 0:
        raise EmaeError(f"sigma must be >= 0, got sigma={sigma}")
    noise = torch.randn(x.shape, generator=generator, device=generator.device)
    return x + sigma * noise.to(x)


def poisson_noise(x: Tensor, photons: float, *, generator: torch.Generator) -> Tensor:
    """Shot noise: ``Poisson(photons * x) / photons``.

    ``photons`` is the expected count at intensity 1, so the noise at intensity v has standard
    deviation ``sqrt(v / photons)``: fewer photons, noisier image. Negative values count as 0.
    """
    _check_batch(x)
    if photons <= 0:
        raise EmaeError(f"photons must be > 0, got photons={photons}")
    rate = (x.detach().float().clamp(min=0) * photons).to(generator.device)
    counts = torch.poisson(rate, generator=generator)
    return (counts / photons).to(x)


def salt_and_pepper(
    x: Tensor,
    fraction: float,
    *,
    generator: torch.Generator,
    low: float = 0.0,
    high: float = 1.0,
) -> Tensor:
    """Set a ``fraction`` of the pixels to ``low`` or ``high`` (each with probability 1/2)."""
    _check_batch(x)
    _check_fraction("fraction", fraction)
    hit = _pixel_mask(x, fraction, generator)
    salt = _uniform(hit.shape, x, generator) < 0.5
    value = torch.where(salt, high, low).to(x)
    return torch.where(hit, value, x)


def mask_pixels(
    x: Tensor, fraction: float, *, generator: torch.Generator, fill: Fill = "zero"
) -> Tensor:
    """Replace a ``fraction`` of the pixels by 0 or by the sample's mean intensity."""
    _check_batch(x)
    _check_fraction("fraction", fraction)
    hit = _pixel_mask(x, fraction, generator)
    value = torch.zeros_like(x) if fill == "zero" else _sample_mean(x).expand_as(x)
    return torch.where(hit, value, x)


def blank_patches(
    x: Tensor,
    *,
    generator: torch.Generator,
    count: int = 1,
    size: tuple[float, float] = (0.1, 0.3),
    fill: Fill = "mean",
) -> Tensor:
    """Fill ``count`` random rectangles per sample with 0 or with their own mean intensity.

    Each side of a rectangle is a fraction of the image side drawn uniformly from ``size``
    (at least one pixel); rectangles lie inside the image and may overlap.
    """
    _check_batch(x)
    lo, hi = size
    if not 0.0 < lo <= hi <= 1.0:
        raise EmaeError(f"size must be (min, max) fractions with 0 < min <= max <= 1, got {size}")
    if count < 0:
        raise EmaeError(f"count must be >= 0, got count={count}")
    n, _, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    out = x
    for _ in range(count):
        u = _uniform((4, n), x, generator)
        ph = (lo + (hi - lo) * u[0]).mul(h).round().clamp(1, h).long()  # (N,) rectangle sides
        pw = (lo + (hi - lo) * u[1]).mul(w).round().clamp(1, w).long()
        top = (u[2] * (h - ph + 1)).long()  # (N,) in [0, h - ph]
        left = (u[3] * (w - pw + 1)).long()
        top, left, ph, pw = (t.view(n, 1, 1) for t in (top, left, ph, pw))
        inside = (rows >= top) & (rows < top + ph) & (cols >= left) & (cols < left + pw)
        inside = inside.unsqueeze(1)  # (N, 1, H, W)
        if fill == "zero":
            value = torch.zeros_like(out)
        else:
            area = (ph * pw).to(out.dtype).unsqueeze(1)  # (N, 1, 1, 1)
            value = ((out * inside).sum(dim=(2, 3), keepdim=True) / area).expand_as(out)
        out = torch.where(inside, value, out)
    return out


@dataclass(frozen=True)
class Corruption:
    """A random corruption per sample, for training the denoising autoencoder.

    ``corruption(x, generator)`` picks one of ``kinds`` uniformly at random for each sample and
    applies it with the strengths below; the result is a new ``(N, C, H, W)`` tensor.

    Attributes
    ----------
    kinds
        Corruptions to choose from: ``"gaussian"``, ``"poisson"``, ``"salt_pepper"``,
        ``"mask"``, ``"blank"``.
    gaussian_sigma
        Standard deviation of the Gaussian noise (:func:`gaussian_noise`).
    poisson_photons
        Expected photon count at intensity 1 (:func:`poisson_noise`).
    salt_pepper_fraction
        Fraction of pixels set to 0 or 1 (:func:`salt_and_pepper`).
    mask_fraction
        Fraction of pixels masked (:func:`mask_pixels`).
    blank_count, blank_size
        Rectangles per sample and their side range as fractions (:func:`blank_patches`).
    fill
        What masked pixels and blanked rectangles are set to: ``"zero"`` or ``"mean"``.
    """

    kinds: tuple[CorruptionKind, ...] = ("gaussian", "poisson", "salt_pepper", "mask", "blank")
    gaussian_sigma: float = 0.1
    poisson_photons: float = 20.0
    salt_pepper_fraction: float = 0.02
    mask_fraction: float = 0.1
    blank_count: int = 1
    blank_size: tuple[float, float] = (0.1, 0.3)
    fill: Fill = "mean"

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))
        object.__setattr__(self, "blank_size", tuple(self.blank_size))
        if not self.kinds:
            raise EmaeError(f"kinds must name at least one of {', '.join(KINDS)}, got none")
        for kind in self.kinds:
            if kind not in KINDS:
                raise EmaeError(f"unknown corruption {kind!r}; known: {', '.join(KINDS)}")
        if self.fill not in get_args(Fill):
            raise EmaeError(f"fill must be 'zero' or 'mean', got {self.fill!r}")
        if self.gaussian_sigma < 0:
            raise EmaeError(f"gaussian_sigma must be >= 0, got {self.gaussian_sigma}")
        if self.poisson_photons <= 0:
            raise EmaeError(f"poisson_photons must be > 0, got {self.poisson_photons}")
        _check_fraction("salt_pepper_fraction", self.salt_pepper_fraction)
        _check_fraction("mask_fraction", self.mask_fraction)
        if self.blank_count < 0:
            raise EmaeError(f"blank_count must be >= 0, got {self.blank_count}")
        lo, hi = self.blank_size
        if not 0.0 < lo <= hi <= 1.0:
            raise EmaeError(
                f"blank_size must be (min, max) with 0 < min <= max <= 1, got {self.blank_size}"
            )

    def apply(self, kind: CorruptionKind, x: Tensor, generator: torch.Generator) -> Tensor:
        """Apply the corruption ``kind`` with this object's strengths to the whole batch."""
        if kind == "gaussian":
            return gaussian_noise(x, self.gaussian_sigma, generator=generator)
        if kind == "poisson":
            return poisson_noise(x, self.poisson_photons, generator=generator)
        if kind == "salt_pepper":
            return salt_and_pepper(x, self.salt_pepper_fraction, generator=generator)
        if kind == "mask":
            return mask_pixels(x, self.mask_fraction, generator=generator, fill=self.fill)
        if kind == "blank":
            return blank_patches(
                x,
                generator=generator,
                count=self.blank_count,
                size=self.blank_size,
                fill=self.fill,
            )
        raise EmaeError(f"unknown corruption {kind!r}; known: {', '.join(KINDS)}")

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Corrupt each sample of ``(N, C, H, W)`` with one randomly chosen kind."""
        _check_batch(x)
        choice = torch.randint(
            len(self.kinds), (x.shape[0],), generator=generator, device=generator.device
        ).cpu()  # (N,) index into kinds
        out = x.clone()
        for i, kind in enumerate(self.kinds):
            idx = (choice == i).nonzero().flatten().to(x.device)
            if idx.numel():
                out[idx] = self.apply(kind, x[idx], generator)
        return out
