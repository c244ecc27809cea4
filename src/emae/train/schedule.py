"""What changes from step to step of the training loop: the learning rate and the random draws.

Both are functions of the step alone, so a resumed run continues with the same rates and the
same random numbers as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from emae.train.loop import LoopSettings


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The generator of step ``step`` on process ``rank``: independent of how the run was
    interrupted; rank 0 draws what a single process draws.

    Torch's CPU generator keeps the low 32 bits of a seed, so ranks are spread over that range
    by multiples of the 32-bit golden ratio, far from the nearby seeds of the next steps.
    """
    return torch.Generator().manual_seed(seed * 1_000_003 + step + rank * 2_654_435_761)


def lr_schedule(settings: LoopSettings) -> Callable[[int], float]:
    """The learning-rate factor of step ``step``: linear warm-up, then cosine decay to 5%."""
    warmup = min(settings.warmup_steps, max(settings.steps - 1, 0))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(settings.steps - warmup, 1)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def group_schedule(
    schedule: Callable[[int], float], scale: float, start: int
) -> Callable[[int], float]:
    def factor(step: int) -> float:
        return scale * schedule(step) if step >= start else 0.0

    return factor
