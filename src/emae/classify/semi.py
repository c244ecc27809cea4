"""Semi-supervised classifier training: the unlabeled patches take part, through consistency.

A few hundred labels leave the unlabeled images unused once the encoder is pretrained. Given
unlabeled patches, :func:`emae.classify.training.train_classifier` adds FixMatch (Sohn et al. 2020)
to every step: besides the labeled batch of ``B`` patches, ``ratio * B`` unlabeled patches are
seen twice, once weakly and once strongly augmented. Where the prediction on the weak view is
confident (largest probability at least ``confidence``), its class becomes the pseudo-label the
strong view is trained to predict::

    loss = CE(labeled) + weight * mean_u( [max p_weak >= confidence] * CE(strong_u, argmax p_weak) )

Pseudo-labels carry no gradient. The views are drawn on the batch, in torch, from the loop's
generator of the step, so a resumed run draws the same views.

Geometry follows ``orientation``:

``"any"``
    The class does not depend on orientation (EM: a turned scratch is still a scratch). Both
    views take one of the 8 flips / 90-degree turns.
``"fixed"``
    It does (digits, letters): no flips, no turns.

Both views shift by a whole number of pixels, up to 1/8 of the patch side (reflected at the
border). The strong view also rotates by up to 30 degrees, scales by 0.9-1.1, jitters contrast
and brightness, adds noise and blanks a random square of half the patch side to the patch's
mean (cutout).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from emae.errors import EmaeError

Orientation = Literal["any", "fixed"]


class WithUnlabeled(Dataset):
    """Labeled items with ``ratio`` unlabeled patches each; item ``i`` is fixed for a seed.

    Parameters
    ----------
    labeled
        A dataset of labeled items (``(patch (1, P, P), label)`` tensors).
    unlabeled
        ``(M, P, P)`` raw unlabeled patches (any numeric dtype), normalized per item.
    normalizer
        Callable mapping raw patches to float32 normalized ones (the encoder's).
    ratio
        Unlabeled patches per labeled item.
    seed
        Seed of the draws.

    Items are the labeled item's tensors followed by ``(ratio, 1, P, P)`` float32 unlabeled
    patches, not yet augmented.
    """

    def __init__(
        self, labeled: Dataset, unlabeled: np.ndarray, normalizer: Any, ratio: int, *, seed: int
    ) -> None:
        if unlabeled.ndim != 3 or not len(unlabeled):
            raise EmaeError(
                f"unlabeled patches must be a non-empty (M, P, P) array, got {unlabeled.shape}"
            )
        if ratio < 1:
            raise EmaeError(f"unlabeled ratio must be >= 1, got {ratio}")
        self.labeled, self.unlabeled, self.normalizer = labeled, unlabeled, normalizer
        self.ratio, self.seed = int(ratio), seed

    def __len__(self) -> int:
        return len(self.labeled)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        item = self.labeled[index]
        rng = np.random.default_rng((self.seed, index, 1))
        picks = np.sort(rng.integers(len(self.unlabeled), size=self.ratio))
        patches = self.normalizer(self.unlabeled[picks]).astype(np.float32, copy=False)
        return (*item, torch.from_numpy(patches[:, None]))


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def random_views(
    x: Tensor, generator: torch.Generator, *, strong: bool, orientation: Orientation
) -> Tensor:
    """One random view of every patch (see the module docstring).

    Parameters
    ----------
    x
        ``(N, 1, P, P)`` float normalized patches, on any device.
    generator
        CPU generator every random number is drawn from.
    strong
        Strong view (rotation, scale, intensity, noise, cutout) or weak view (shift, and the
        flips / turns of ``orientation="any"``).
    orientation
        ``"any"`` or ``"fixed"``.

    Returns
    -------
    Tensor
        ``(N, 1, P, P)`` float32 on ``x``'s device.
    """
    if orientation not in ("any", "fixed"):
        raise EmaeError(f"orientation must be 'any' or 'fixed', got {orientation!r}")
    # In float32 whatever the autocast around: a bf16 sampling grid misses the pixel centres.
    with torch.autocast(x.device.type, enabled=False):
        return _views(x.float(), generator, strong, orientation)


def _views(x: Tensor, generator: torch.Generator, strong: bool, orientation: str) -> Tensor:
    """:func:`random_views` on float32 ``x``."""
    n, _, h, w = x.shape
    angle = torch.zeros(n, dtype=torch.float64)
    flip = torch.ones(n, dtype=torch.float64)
    if orientation == "any":
        angle = torch.randint(4, (n,), generator=generator).double() * (math.pi / 2)
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).double()
    scale = torch.ones(n, dtype=torch.float64)
    if strong:
        angle = angle + _uniform(n, -math.pi / 6, math.pi / 6, generator)
        scale = _uniform(n, 0.9, 1.1, generator)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    reach = max(h // 8, 0)  # whole pixels, so the weak view stays on the pixel grid
    shift = torch.randint(-reach, reach + 1, (n, 2), generator=generator).double()
    theta[:, 0, 2], theta[:, 1, 2] = 2 * shift[:, 0] / w, 2 * shift[:, 1] / h
    grid = F.affine_grid(theta.float().to(x.device), [n, 1, h, w], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if not strong:
        return out
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    contrast = _uniform(n, 0.6, 1.4, generator).float().to(x.device)[:, None, None, None]
    bright = _uniform(n, -0.15, 0.15, generator).float().to(x.device)[:, None, None, None]
    sigma = _uniform(n, 0.0, 0.08, generator).float().to(x.device)[:, None, None, None]
    noise = torch.randn(out.shape, generator=generator).to(x.device)
    out = (out - mean) * contrast + mean + bright + sigma * noise
    side = max(h // 2, 1)
    y0 = torch.randint(0, h - side + 1, (n,), generator=generator).to(x.device)
    x0 = torch.randint(0, w - side + 1, (n,), generator=generator).to(x.device)
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    inside = (rows >= y0[:, None, None]) & (rows < y0[:, None, None] + side)
    inside = inside & (cols >= x0[:, None, None]) & (cols < x0[:, None, None] + side)
    return torch.where(inside[:, None], out.mean(dim=(1, 2, 3), keepdim=True), out)


def consistency_loss(
    weak_logits: Tensor, strong_logits: Tensor, confidence: float
) -> tuple[Tensor, Tensor]:
    """FixMatch's unlabeled loss and the share of patches above ``confidence``.

    Parameters
    ----------
    weak_logits, strong_logits
        ``(U, K)`` logits of the weak and the strong view of the same ``U`` patches.
    confidence
        Smallest largest-probability of the weak view that makes a pseudo-label.

    Returns
    -------
    (loss, used)
        Scalar mean over all ``U`` patches of the masked cross-entropy, and the fraction of
        patches that got a pseudo-label.
    """
    probs = torch.softmax(weak_logits.detach().float(), dim=1)
    top, pseudo = probs.max(dim=1)
    mask = (top >= confidence).float()
    ce = F.cross_entropy(strong_logits.float(), pseudo, reduction="none")
    return (ce * mask).mean(), mask.mean()
