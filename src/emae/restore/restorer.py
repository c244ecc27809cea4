"""Restore raw tiles with a trained model: denoise them, or fill their holes.

A :class:`Restorer` is a tile function of :func:`emae.volume.tiling.predict_tiled`: raw tiles
``(B, h, w)`` in, restored tiles ``(B, 1, h, w)`` float32 out, in the input's own intensity
units (the model's normalization is undone). Which job it does follows from how its model was
trained (:mod:`emae.models.registry`):

``"denoise"``
    a blind-spot U-Net (``blind-spot``, the recommended denoiser) or a denoising autoencoder
    (``denoising-ae``): every pixel is replaced by the model's output or, for a blind-spot
    model given a noise model, by that output combined with the pixel's own value
    (:func:`emae.restore.noise.posterior_mean`).
``"inpaint"``
    an inpainting model (``inpainting-ae``): holes are the tile's NaN pixels. The model sees the
    image with the holes set to 0 (in normalized units) and the hole mask as a second channel;
    its prediction replaces the holes and is blended into the image over ``feather`` pixels
    around them, so no edge is left where a hole was. Every pixel farther away keeps its exact
    input value.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage
from torch import nn

from emae.anomaly.maps import batched_apply
from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError
from emae.models import model_spec
from emae.restore.noise import WINDOW, NoiseModel, fit_noise_model, posterior_mean

logger = logging.getLogger(__name__)

Mode = Literal["denoise", "inpaint"]
#: Models that do each job, for messages.
MODELS_FOR = {"denoise": "blind-spot or denoising-ae", "inpaint": "inpainting-ae"}
#: Default width of the blend around a hole, in pixels.
FEATHER = 3


def mode_of(model_name: str) -> Mode | None:
    """The job a registered model was trained for, or None (it reconstructs: no restorer)."""
    spec = model_spec(model_name)
    if spec.inpainting:
        return "inpaint"
    if spec.blind_spot or spec.denoising:
        return "denoise"
    return None


def feather_weights(holes: np.ndarray, feather: int) -> np.ndarray:
    """Weight of the prediction per pixel of ``holes`` ``(..., h, w)`` bool: 1 in a hole,
    falling linearly to 0 over ``feather`` pixels outside it, 0 beyond; float32."""
    if feather <= 0 or not holes.any():
        return holes.astype(np.float32)
    out = np.empty(holes.shape, np.float32)
    for index in np.ndindex(holes.shape[:-2]):
        distance = ndimage.distance_transform_edt(~holes[index])  # 0 in the holes
        out[index] = np.clip(1.0 - distance / (feather + 1), 0.0, 1.0)
    return out


@dataclass
class Restorer:
    """Raw tiles ``(B, h, w)`` -> restored ``(B, 1, h, w)`` float32, raw units (module docstring).

    Attributes
    ----------
    model
        The trained module (``(N, 1, H, W) -> (N, 1, H, W)``; for ``"inpaint"``
        ``(N, 2, H, W)``: image and hole mask).
    normalizer
        The model's intensity normalization; undone on the output.
    mode
        ``"denoise"`` or ``"inpaint"``.
    device, precision, batch_size
        Of the forward passes (:func:`emae.anomaly.maps.batched_apply`). fp32 by default: bf16
        rounds the output to about 3 significant digits, visible in an 8-bit image's levels.
    feather
        Pixels of blending around a hole (``"inpaint"``).
    blind_spot
        Whether the model is a blind-spot network (its output is a prior that never saw the
        pixel's noise, so it may be combined with the pixel).
    noise
        ``"denoise"`` with a blind-spot model: the noise model that combines the prediction
        with the noisy pixel (:func:`~emae.restore.noise.posterior_mean`); ``"fit"`` or
        ``"auto"`` until :meth:`fitted_to` fits one on the input (``"auto"`` falls back to the
        prediction alone, with a warning, where no model can be fitted); None: the prediction
        alone.
    window
        Gaussian sigma (pixels, finite, >= 0) of the prior's local variance in that
        combination.
    """

    model: nn.Module
    normalizer: PercentileNormalizer
    mode: Mode
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 8
    feather: int = FEATHER
    blind_spot: bool = False
    noise: NoiseModel | Literal["fit", "auto"] | None = None
    window: float = WINDOW

    def __post_init__(self) -> None:
        if self.noise is not None and not (self.mode == "denoise" and self.blind_spot):
            raise EmaeError(
                "a noise model combines a blind-spot model's prediction with the noisy pixel; "
                "this model is not a blind-spot denoiser (use --noise off)"
            )
        if not (np.isfinite(self.window) and self.window >= 0):
            raise EmaeError(f"--window must be a finite number >= 0, got {self.window}")

    def fitted_to(self, images: list[np.ndarray], *, name: str = "the input") -> Restorer:
        """A copy whose noise model is fitted on ``images`` (2D arrays ``(H, W)`` in the
        input's units, e.g. :func:`emae.restore.noise.noise_sample` of it) when it is
        ``"fit"`` or ``"auto"``; itself otherwise. ``name`` (the input's path) heads the
        messages.

        Raises
        ------
        EmaeError
            With ``"fit"``, when no noise model can be fitted (too small, or noiseless).
        """
        if not isinstance(self.noise, str):
            return self
        try:
            return replace(self, noise=fit_noise_model(images))
        except EmaeError as error:
            if self.noise == "fit":
                raise EmaeError(f"{name}: {error}") from None
            logger.warning("%s: denoising with the prediction alone: %s", name, error)
            return replace(self, noise=None)

    @classmethod
    def from_folder(
        cls,
        path: str | Path,
        mode: Mode,
        *,
        precision: str = "fp32",
        feather: int = FEATHER,
        noise: NoiseModel | Literal["fit", "auto"] | None = None,
        window: float = WINDOW,
    ) -> Restorer:
        """The restorer of a model folder written by ``emae pretrain``.

        Raises
        ------
        EmaeError
            When the model was not trained for ``mode`` (a plain ``conv-ae`` reconstructs a
            blurred image, not a restored one), naming the models that were.
        """
        from emae.folders.autoencoder import load_bundle

        bundle = load_bundle(path)
        trained = mode_of(bundle.model_name)
        if trained != mode:
            what = "is not a restoration model" if trained is None else f"was trained to {trained}"
            raise EmaeError(
                f"{path}: its model {bundle.model_name!r} {what}, so it cannot {mode}; "
                f"train one with `emae pretrain --model {MODELS_FOR[mode].split(' or ')[0]}` "
                f"({MODELS_FOR[mode]})"
            )
        blind = model_spec(bundle.model_name).blind_spot
        if noise == "auto":
            noise = "auto" if blind and mode == "denoise" else None
        elif noise is not None and not blind:
            raise EmaeError(
                f"{path}: a noise model combines a blind-spot prediction with the noisy pixel, "
                f"but its model {bundle.model_name!r} sees the pixel; use --noise off"
            )
        return cls(
            bundle.model,
            bundle.normalizer,
            mode,
            precision=precision,
            feather=feather,
            blind_spot=blind,
            noise=noise,
            window=window,
        )

    def on(self, device: str) -> Restorer:
        """A shallow copy mapping on ``device`` (the module is shared)."""
        moved = copy.copy(self)
        moved.device = device
        return moved

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """The model on normalized inputs ``(B, C, h, w)`` float32 -> ``(B, h, w)``."""
        return batched_apply(
            self.model,
            "forward",
            np.ascontiguousarray(x if x.shape[1] > 1 else x[:, 0]),
            batch_size=self.batch_size,
            device=self.device,
            precision=self.precision,
        )[:, 0]

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        tiles = np.asarray(tiles)
        if tiles.ndim != 3:
            raise EmaeError(f"a restorer takes (B, h, w) tiles, got shape {tiles.shape}")
        norm = self.normalizer
        scale = np.float32(norm.high_value - norm.low_value)
        if self.mode == "denoise":
            mu = self._forward(norm(tiles)[:, None]) * scale + np.float32(norm.low_value)
            if isinstance(self.noise, NoiseModel):
                mu = posterior_mean(tiles.astype(np.float32), mu, self.noise, window=self.window)
            elif self.noise is not None:
                raise EmaeError(
                    "the restorer's noise model is not fitted yet: use restorer.fitted_to("
                    "noise_sample(image)), give a NoiseModel, or noise=None"
                )
            return mu[:, None]
        holes = np.isnan(tiles) if tiles.dtype.kind == "f" else np.zeros(tiles.shape, bool)
        if not holes.any():
            return tiles.astype(np.float32)[:, None]
        x = norm(np.where(holes, norm.low_value, tiles))
        x[holes] = 0.0
        predicted = self._forward(np.stack([x, holes.astype(np.float32)], axis=1))
        w = feather_weights(holes, self.feather)
        blended = (w * predicted + (1 - w) * x) * scale + np.float32(norm.low_value)
        return np.where(w > 0, blended, tiles).astype(np.float32)[:, None]
