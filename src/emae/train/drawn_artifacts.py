"""Training a segmenter of drawn artifacts on top of a frozen autoencoder (DRAEM-style).

Normal EM holds almost no artifacts, and nobody has outlined the few it holds. What a
segmenter can learn from instead is artifacts drawn onto normal crops with
:func:`emae.synth.artifacts.inject`, whose masks are exact. The segmenter sees the crop and
the frozen autoencoder's reconstruction of it, so what it learns is how an artifact makes the
two differ, not only what the drawn kinds look like; whether that carries over to kinds it
was never shown is measured with kinds held out (docs/benchmarks.md).

:func:`draw_artifacts` corrupts a batch of normalized crops; :func:`train_segmenter` is the
plain training loop (focal loss, as DRAEM's discriminative network).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from emae.errors import EmaeError
from emae.models.inference import inference_copy
from emae.runtime import select_precision
from emae.synth.artifacts import ARTIFACT_TYPES, INJECTORS, inject

logger = logging.getLogger(__name__)


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """``kinds`` as a tuple of known artifact kinds, at least one, without repeats."""
    kinds = tuple(kinds)
    unknown = sorted(set(kinds) - set(ARTIFACT_TYPES))
    if unknown or not kinds or len(set(kinds)) != len(kinds):
        raise EmaeError(
            f"kinds must be distinct artifact kinds among {', '.join(ARTIFACT_TYPES)}, "
            f"got {list(kinds)}"
        )
    return kinds


def random_crops(images: np.ndarray, n: int, crop: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random ``crop`` x ``crop`` crops of ``images`` ``(N, H, W)``, each flipped and
    rotated by a random multiple of 90 degrees: ``(n, crop, crop)`` float32."""
    _, h, w = images.shape
    out = np.empty((n, crop, crop), np.float32)
    for i, k in enumerate(rng.integers(0, len(images), n)):
        y, x = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
        c = np.rot90(images[k, y : y + crop, x : x + crop], rng.integers(4))
        out[i] = c[:, ::-1] if rng.random() < 0.5 else c
    return out


def draw_artifacts(
    crops: np.ndarray,
    kinds: Sequence[str],
    rng: np.random.Generator,
    *,
    share: float = 0.5,
    reference_side: float = 512.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one artifact onto a ``share`` of normalized ``crops``; the others stay normal.

    Parameters
    ----------
    crops
        ``(B, H, W)`` float32 normalized images (about ``[0, 1]``); not modified.
    kinds
        The artifact kinds to draw from, uniformly.
    rng
        Source of every draw.
    share
        Fraction of the crops that get an artifact.
    reference_side
        Sizes are drawn as each kind's range (a fraction of an image side,
        :data:`emae.synth.artifacts.INJECTORS`) times this many pixels: the side of the images
        whose artifacts are to be found, not of the crop, so a 128-pixel crop sees a piece of
        a 300-pixel scratch as it appears in a 512-pixel section.

    Returns
    -------
    corrupted : numpy.ndarray
        ``(B, H, W)`` float32; outside the drawn artifacts equal to ``crops`` (up to
        :data:`emae.synth.artifacts.MASK_LEVEL`).
    masks : numpy.ndarray
        ``(B, H, W)`` bool, the artifacts' pixels.

    Notes
    -----
    :func:`~emae.synth.artifacts.inject` works on ``[0, 1]``: the artifact is drawn on the crop
    clipped to that range and its change is added to the crop, so intensities outside the
    range survive where nothing was drawn.
    """
    kinds = check_kinds(kinds)
    corrupted = crops.astype(np.float32, copy=True)
    masks = np.zeros(crops.shape, bool)
    _, h, w = crops.shape
    for i in np.flatnonzero(rng.random(len(crops)) < share):
        kind = kinds[rng.integers(len(kinds))]
        size = rng.uniform(*INJECTORS[kind].size) * reference_side
        center = (rng.uniform(0, h - 1), rng.uniform(0, w - 1))
        unit = np.clip(crops[i], 0.0, 1.0)
        new, masks[i] = inject(unit, kind, seed=rng, center=center, size=size)
        corrupted[i] += new - unit
    return corrupted, masks


def focal_loss(logits: Tensor, target: Tensor, gamma: float = 2.0) -> Tensor:
    """Mean binary focal loss: BCE weighted by ``(1 - p_t) ** gamma``, so the many easy normal
    pixels count less than a thin scratch's few."""
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return ((1.0 - torch.exp(-bce)) ** gamma * bce).mean()


def train_segmenter(
    model: nn.Module,
    head: nn.Module,
    images: np.ndarray,
    *,
    kinds: Sequence[str],
    steps: int,
    batch_size: int,
    crop: int,
    lr: float,
    share: float,
    reference_side: float,
    seed: int,
    device: torch.device,
    precision: str,
) -> list[float]:
    """Train ``head`` to segment artifacts drawn on crops of ``images``; returns the losses.

    Parameters
    ----------
    model
        The trained autoencoder, frozen (an inference copy runs; ``model`` is not changed).
    head
        ``(B, 2, H, W)`` (crop, reconstruction) to ``(B, 1, H, W)`` logits; trained in place.
    images
        ``(N, H, W)`` float32 normalized normal images, ``H, W >= crop``.
    kinds, share, reference_side
        What is drawn (:func:`draw_artifacts`).
    steps, batch_size, crop, lr, seed
        The loop: AdamW, ``steps`` batches of ``batch_size`` random ``crop``-pixel crops.
    device, precision
        Where, and ``"fp32"``, ``"bf16"`` or ``"auto"`` (autocast).
    """
    if images.shape[1] < crop or images.shape[2] < crop:
        raise EmaeError(f"images of {images.shape[1:]} pixels are smaller than the crop {crop}")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    amp = select_precision(device, precision)
    frozen = inference_copy(model).to(device)
    head.to(device).train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    losses = []
    for step in range(steps):
        crops = random_crops(images, batch_size, crop, rng)
        corrupted, masks = draw_artifacts(
            crops, kinds, rng, share=share, reference_side=reference_side
        )
        x = torch.from_numpy(corrupted[:, None]).to(device)
        target = torch.from_numpy(masks[:, None]).to(device, torch.float32)
        with torch.autocast(device.type, amp, enabled=amp is not None):
            with torch.no_grad():
                recon = frozen(x).float()
            logits = head(torch.cat([x, recon], dim=1))
        loss = focal_loss(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            logger.info("segmenter step %d/%d: loss %.4f", step + 1, steps, np.mean(losses[-100:]))
    head.eval()
    return losses
