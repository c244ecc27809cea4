"""The vector of each patch, in one of four forms:

``"levels"``
    the mean and standard deviation of every encoder level over the patch (the classifier
    head's input, :mod:`emae.models.pooling`): texture at every scale, where it lies does not
    matter;
``"latent"``
    the mean of the latent map over the patch (:mod:`emae.models.pooling`): the coarsest
    texture, ``feature_channels`` values;
``"code"``
    the whole latent code, flattened: a spatial latent ``(C, P/m, P/m)`` or a vector latent
    (a VAE's posterior mean), so where things lie in the patch counts (shapes, not only
    textures). Needs patches of one size, the model's.

``"residual"`` is the default: on EM it separates artifact kinds best (the highest NMI and
purity of the four on the sample data's labeled patches, level with the others on nanofibre
micrographs), at 4.5x the cost of ``"levels"`` per patch; ``"code"`` clusters digits best.
Which separates what: docs/benchmarks.md, "Latent space" (``bench/bench_latent.py``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from emae.classify.features import feature_names, handcrafted_features
from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError
from emae.models.inference import inference_copy
from emae.models.pooling import check_pooling, global_features, pooled_channels
from emae.runtime import model_device, select_precision

Vector = Literal["levels", "latent", "code", "residual"]
VECTORS: tuple[str, ...] = ("levels", "latent", "code", "residual")

#: The residual's unit scale for the handcrafted features (normalized inputs lie mostly in
#: 0..1; the features take values outside the scale as they are, the histogram clips them).
RESIDUAL_RANGE = (-1.0, 1.0)


def _code(model: nn.Module, x: Tensor) -> Tensor:
    """The latent code of ``x`` flattened: ``(N, D)`` (a VAE's posterior mean)."""
    z = model.encode(x)
    if isinstance(z, tuple):  # a VAE: (mu, logvar)
        z = z[0]
    return z.float().flatten(1)


def _residual_features(residual: np.ndarray) -> np.ndarray:
    """Handcrafted features of residuals ``(N, P, P)`` float32: ``(N, 74)`` float32."""
    features = handcrafted_features(residual, value_range=RESIDUAL_RANGE)
    return features.astype(np.float32)


def _check(model: nn.Module, vector: str) -> None:
    if vector not in VECTORS:
        raise EmaeError(f"vector must be one of {', '.join(VECTORS)}, got {vector!r}")
    if vector == "code" and not hasattr(model, "encode"):
        raise EmaeError(
            f"vector='code' needs a model with a latent code, not {type(model).__name__}"
        )
    if vector in ("levels", "latent"):
        check_pooling(model, vector)


def vector_size(model: nn.Module, vector: Vector, patch_size: int) -> int:
    """Values per patch that :func:`patch_vectors` gives for patches of ``patch_size``."""
    _check(model, vector)
    if vector == "residual":
        return len(feature_names())
    if vector != "code":
        return pooled_channels(model, vector)
    x = torch.zeros(1, 1, patch_size, patch_size, device=model_device(model))
    model.eval()
    with torch.inference_mode():
        return int(_code(model, x).shape[1])


def patch_vectors(
    model: nn.Module,
    normalizer: PercentileNormalizer,
    patches: Any,
    *,
    vector: Vector = "residual",
    batch_size: int = 256,
    precision: str = "fp32",
) -> np.ndarray:
    """Vectors of raw patches.

    Parameters
    ----------
    model
        A trained autoencoder (``features``; ``encoder.levels`` for ``"levels"``; ``encode``
        for ``"code"``), in eval mode.
    normalizer
        The model's intensity normalization, applied to the raw patches.
    patches
        ``(N, P, P)`` raw intensities, any real dtype.
    vector
        ``"levels"``, ``"latent"``, ``"code"`` or ``"residual"`` (module doc).
    batch_size
        Patches per forward pass.
    precision
        ``"fp32"``, ``"bf16"`` (bfloat16 autocast, channels-last on the CPU, batch norm folded
        into the convolutions, as the anomaly maps) or ``"auto"`` (bf16 where the device has
        it natively; :func:`emae.runtime.select_precision`). The pooling is in float32; the
        ``"residual"`` vector is computed in float32 whatever the precision, since bf16's
        rounding of the reconstruction (about 0.2%) is of the size of the fine structure its
        features measure.

    Returns
    -------
    numpy.ndarray
        ``(N, D)`` float32, ``D = vector_size(model, vector, P)``.
    """
    patches = np.asarray(patches)
    if patches.ndim != 3:
        raise EmaeError(f"patches must be (N, P, P), got shape {patches.shape}")
    size = vector_size(model, vector, patches.shape[-1])
    device = model_device(model)
    # the residual's fine structure is of the size of bf16's rounding of the reconstruction
    amp = None if vector == "residual" else select_precision(device, precision)
    fused = inference_copy(model)
    if amp is not None and device.type == "cpu":
        fused.to(memory_format=torch.channels_last)
    out = np.empty((len(patches), size), dtype=np.float32)
    with torch.inference_mode(), torch.autocast(device.type, amp, enabled=amp is not None):
        for start in range(0, len(patches), batch_size):
            x = normalizer(patches[start : start + batch_size])
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)[:, None]).to(device)
            if amp is not None and device.type == "cpu":
                t = t.contiguous(memory_format=torch.channels_last)
            if vector == "residual":
                residual = t.float() - fused(t).float()
                values = torch.from_numpy(_residual_features(residual[:, 0].cpu().numpy()))
            elif vector == "code":
                values = _code(fused, t)
            else:
                values = global_features(fused, t, vector)[:, :, 0, 0]
            out[start : start + len(t)] = values.float().cpu().numpy()
    return out
