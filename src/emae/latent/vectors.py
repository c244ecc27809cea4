"""The vector of each patch: the encoder's pooled representation (:mod:`emae.models.pooling`).

The same representation the classifier head sees, so a map, its clusters and a classifier
trained on the same encoder look at the same numbers. ``pooling="levels"`` (the mean and std
of every encoder level) is the default: on the benchmarks of ``bench/bench_latent.py`` it
separates the classes better than the latent alone (docs/benchmarks.md, "Latent space").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from emae.data.normalization import PercentileNormalizer
from emae.models.pooling import Pooling, check_pooling, global_features, pooled_channels
from emae.runtime import model_device


def vector_size(model: nn.Module, pooling: Pooling) -> int:
    """Values per patch that :func:`patch_vectors` gives."""
    return pooled_channels(model, pooling)


def patch_vectors(
    model: nn.Module,
    normalizer: PercentileNormalizer,
    patches: Any,
    *,
    pooling: Pooling = "levels",
    batch_size: int = 256,
) -> np.ndarray:
    """Vectors of raw patches.

    Parameters
    ----------
    model
        A trained autoencoder (``features``; ``encoder.levels`` for ``"levels"``), in eval mode.
    normalizer
        The model's intensity normalization, applied to the raw patches.
    patches
        ``(N, P, P)`` raw intensities, any real dtype.
    pooling
        ``"levels"`` or ``"latent"`` (:mod:`emae.models.pooling`).
    batch_size
        Patches per forward pass.

    Returns
    -------
    numpy.ndarray
        ``(N, D)`` float32, ``D = vector_size(model, pooling)``.
    """
    check_pooling(model, pooling)
    device = model_device(model)
    out = np.empty((len(patches), vector_size(model, pooling)), dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(patches), batch_size):
            x = normalizer(np.asarray(patches[start : start + batch_size]))
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)[:, None]).to(device)
            out[start : start + len(t)] = global_features(model, t, pooling)[:, :, 0, 0].cpu()
    return out
