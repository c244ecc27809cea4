"""Reconstruction error maps: what an autoencoder failed to reproduce, pixel by pixel.

Pure functions on normalized images ``(N, H, W)`` float32 (axes ``"NYX"``): the reconstruction,
the smoothed squared or absolute error, ``1 - SSIM``, and the local standard deviation that
describes image structure. :mod:`emae.anomaly.statistics` and :mod:`emae.anomaly.scores` build on
them.

Each map has one implementation, in torch, float32: :func:`pixel_error` and :func:`ssim_error`
on tensors, which the scores run on the model's device batch by batch right after the forward
pass (:func:`batched_apply` with ``then``), and the numpy functions :func:`pixel_error_map`,
:func:`ssim_error_map` and :func:`local_std`, which run them on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from emae.anomaly import filters
from emae.anomaly.filters import gaussian_filter
from emae.anomaly.ssim import ssim_map
from emae.errors import EmaeError
from emae.models.inference import inference_copy


def as_images(x: Any, what: str = "x") -> np.ndarray:
    """``x`` as a C-contiguous float32 ``(N, H, W)`` array of finite values."""
    a = np.asarray(x)
    if a.ndim != 3 or a.dtype.kind not in "uif" or 0 in a.shape:
        raise EmaeError(
            f"{what} must be a non-empty (N, H, W) array of numbers, "
            f"got shape {a.shape} dtype {a.dtype}"
        )
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise EmaeError(f"{what} of shape {a.shape} holds NaN or infinite values")
    return a


def _same_shape(x: np.ndarray, recon: np.ndarray) -> None:
    if x.shape != recon.shape:
        raise EmaeError(f"x and recon must have the same shape, got {x.shape} and {recon.shape}")


def batched_apply(
    model: nn.Module,
    method: str,
    x: np.ndarray,
    *,
    batch_size: int,
    device: str | torch.device | None,
    precision: str = "fp32",
    then: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> np.ndarray:
    """``model.<method>`` applied to ``(B, 1, H, W)`` (or ``(B, C, H, W)``) batches of ``x``,
    optionally followed by ``then`` on the device: results concatenated, float32, CPU.

    The forward passes run on an :func:`emae.models.inference.inference_copy` of the model
    (``model`` keeps its mode, device and memory format). ``device=None`` uses the device of
    the model's parameters. ``precision``: ``"fp32"`` computes in float32 in the default memory
    format; ``"bf16"`` uses bfloat16 autocast and, on the CPU, channels-last tensors (several
    times faster on CPUs with native bf16 instructions, AMX or AVX512-BF16, and on GPUs, with
    outputs within about 1% of fp32); ``"auto"`` picks bf16 where the device supports it
    natively, fp32 elsewhere (:func:`emae.runtime.select_precision`).

    Parameters
    ----------
    model, method
        ``getattr(model, method)`` maps ``(B, 1, H, W)`` float32 to a tensor ``(B, ...)``.
    x
        ``(N, H, W)`` float32 images (see :func:`as_images`), or ``(N, C, H, W)`` for a model
        of C input channels.
    batch_size
        Images per forward pass; only one batch's tensors are on the device at a time.
    device, precision
        Where and how the forward passes run (see above).
    then
        ``then(inputs, outputs)``, with ``inputs`` the batch ``(B, 1, H, W)`` and ``outputs``
        the method's result, both float32 on the device, returns the ``(B, ...)`` tensor kept
        for the batch. It runs in inference mode, in float32 (outside autocast). ``None``
        keeps the outputs.

    Returns
    -------
    numpy.ndarray
        ``(N, ...)`` float32, the batches' results concatenated along axis 0.
    """
    from emae.runtime import model_device, select_precision

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EmaeError(f"batch_size must be a positive int, got {batch_size!r}")
    device = model_device(model) if device is None else torch.device(device)
    amp = select_precision(device, precision)
    channels_last = amp is not None and device.type == "cpu"
    fused = inference_copy(model).to(device)
    if channels_last:
        fused.to(memory_format=torch.channels_last)
    fn = getattr(fused, method)
    results = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            part = x[start : start + batch_size]
            batch = torch.from_numpy(part if part.ndim == 4 else part[:, None]).to(device)
            inputs = batch.contiguous(memory_format=torch.channels_last) if channels_last else batch
            with torch.autocast(device.type, amp, enabled=amp is not None):
                outputs = fn(inputs)
            result = outputs.float() if then is None else then(batch, outputs.float())
            results.append(result.float().cpu().numpy())
    return np.concatenate(results)


def reconstruct(
    model: nn.Module,
    x: Any,
    *,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Reconstructions of ``x`` by an autoencoder, in eval mode and without autograd.

    Parameters
    ----------
    model
        Maps ``(B, 1, H, W)`` to ``(B, 1, H, W)``; its train/eval mode is restored afterwards.
    x
        ``(N, H, W)`` normalized images, float32 (other real dtypes are converted).
    batch_size
        Images per forward pass.
    device
        Where to compute; ``None`` uses the model's device, another device moves the model.
    precision
        ``"fp32"``, ``"bf16"`` or ``"auto"`` (see :func:`batched_apply`).

    Returns
    -------
    numpy.ndarray
        ``(N, H, W)`` float32.
    """
    x = as_images(x)
    return batched_apply(
        model, "forward", x, batch_size=batch_size, device=device, precision=precision
    )[:, 0]


def pixel_error(
    x: Tensor, recon: Tensor, *, kind: Literal["mse", "l1"] = "mse", smooth_sigma: float = 2.0
) -> Tensor:
    """:func:`pixel_error_map` of tensors, on their device.

    Parameters
    ----------
    x, recon
        ``(N, H, W)`` float32 tensors on one device.
    kind, smooth_sigma
        See :func:`pixel_error_map`.

    Returns
    -------
    Tensor
        ``(N, H, W)`` float32 on the device of ``x``, non-negative.
    """
    if kind not in ("mse", "l1"):
        raise EmaeError(f"kind must be 'mse' or 'l1', got {kind!r}")
    if not smooth_sigma >= 0:
        raise EmaeError(f"smooth_sigma must be >= 0 pixels, got smooth_sigma={smooth_sigma}")
    diff = x - recon
    error = diff.square() if kind == "mse" else diff.abs()
    return gaussian_filter(error, smooth_sigma)


def ssim_error(x: Tensor, recon: Tensor) -> Tensor:
    """``1 - SSIM`` of ``(N, H, W)`` float32 tensors: ``(N, H, W)`` float32 on their device."""
    return 1.0 - ssim_map(x[:, None], recon[:, None])[:, 0]


def pixel_error_map(
    x: Any, recon: Any, *, kind: Literal["mse", "l1"] = "mse", smooth_sigma: float = 2.0
) -> np.ndarray:
    """Per-pixel reconstruction error, Gaussian-smoothed within each image.

    Parameters
    ----------
    x, recon
        ``(N, H, W)`` images and their reconstructions.
    kind
        ``"mse"`` for ``(x - recon)**2``, ``"l1"`` for ``|x - recon|``.
    smooth_sigma
        Standard deviation in pixels of the smoothing (reflect at the borders, as
        :func:`emae.anomaly.filters.gaussian_filter`); 0 for none.

    Returns
    -------
    numpy.ndarray
        ``(N, H, W)`` float32, non-negative.
    """
    x, recon = as_images(x), as_images(recon, "recon")
    _same_shape(x, recon)
    with torch.inference_mode():
        error = pixel_error(
            torch.from_numpy(x), torch.from_numpy(recon), kind=kind, smooth_sigma=smooth_sigma
        )
        return error.numpy()


def ssim_error_map(x: Any, recon: Any) -> np.ndarray:
    """``1 - SSIM`` of each image and its reconstruction (:func:`emae.anomaly.ssim.ssim_map`).

    Parameters
    ----------
    x, recon
        ``(N, H, W)`` images and reconstructions, H and W > 5 (the 11-pixel SSIM window).

    Returns
    -------
    numpy.ndarray
        ``(N, H, W)`` float32 in ``[0, 2]``, 0 where the images agree.
    """
    x, recon = as_images(x), as_images(recon, "recon")
    _same_shape(x, recon)
    with torch.inference_mode():
        return ssim_error(torch.from_numpy(x), torch.from_numpy(recon)).numpy()


def local_std(x: Any, sigma: float) -> np.ndarray:
    """Gaussian-weighted local standard deviation of each image: ``(N, H, W)`` float32.

    ``sqrt(G(x**2) - G(x)**2)`` with ``G`` a Gaussian of ``sigma`` pixels (reflect borders),
    computed in float32 by :func:`emae.anomaly.filters.local_std`.
    """
    x = as_images(x)
    with torch.inference_mode():
        return filters.local_std(torch.from_numpy(x), sigma).numpy()
