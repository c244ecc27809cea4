"""The trained classifier: prediction in memory, and its folder of plain files.

A classifier folder holds::

    config.json          {"emae_version", "kind": "classifier", "model": backbone name,
                          "model_kwargs", "head", "classes", "features", "run",
                          "checksums": sha256 of every .safetensors file}
    model.safetensors    the EncoderClassifier's state dict (backbone and head)
    normalization.json   the intensity normalization of its input
    extra.safetensors    mean and std of the extra feature columns (when it uses them)
    training.json        the training summary

Like the autoencoder folder (:mod:`emae.folders.autoencoder`) it is read with ``json`` and
``safetensors`` only (:mod:`emae.folders.files`): nothing is unpickled, and the ``.safetensors``
files are checked against their checksums (:mod:`emae.folders.integrity`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import safetensors.torch
import torch

import emae
from emae.anomaly.maps import as_images, batched_apply
from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError
from emae.folders.files import (
    BUNDLE_ONLY,
    CONFIG,
    FORMAT,
    NORMALIZATION,
    WEIGHTS,
    check_kind,
    check_version,
    load_weights,
    read_json,
    read_tensors,
)
from emae.folders.integrity import CHECKSUMS, check_checksums, folder_checksums
from emae.io.atomic import atomic_dir, write_errors
from emae.models.classifier import EncoderClassifier
from emae.models.residual import build_backbone
from emae.runtime import model_device

EXTRA = "extra.safetensors"
#: Keys of a classifier's config.json (``checksums`` too, except in folders from before them).
HEADER_KEYS = (
    "emae_version",
    "kind",
    "model",
    "model_kwargs",
    "head",
    "classes",
    "features",
    "run",
)


@dataclass
class FittedClassifier:
    """A trained :class:`EncoderClassifier` with what its inputs need.

    Attributes
    ----------
    model
        The classifier, in eval mode; on the CPU when loaded. Moved to a GPU (``model.to``),
        the methods below compute there and still return CPU arrays.
    classes
        Class names, in the order of the probability columns (``classes_``).
    normalizer
        Maps raw intensities to the model's input range.
    backbone_name, backbone_kwargs
        Registry name and arguments of the backbone, to rebuild it.
    feature_names
        Names of the extra feature columns (empty when none).
    extra_mean, extra_std
        ``(F,)`` standardization of the extra features, or None.
    """

    model: EncoderClassifier
    classes: tuple[str, ...]
    normalizer: PercentileNormalizer
    backbone_name: str
    backbone_kwargs: dict[str, Any]
    feature_names: tuple[str, ...] = ()
    extra_mean: np.ndarray | None = None
    extra_std: np.ndarray | None = None

    @property
    def classes_(self) -> np.ndarray:
        """Class names as an array, scikit-learn style."""
        return np.array(self.classes)

    def _device(self) -> torch.device:
        """Where the model's weights are (inputs go there, outputs come back to the CPU)."""
        return model_device(self.model)

    def _extra(self, extra: Any, n: int) -> torch.Tensor | None:
        if not self.feature_names:
            return None
        if extra is None:
            raise EmaeError(f"this classifier needs the features {list(self.feature_names)}")
        e = np.asarray(extra, dtype=np.float64)
        if e.shape != (n, len(self.feature_names)) or not np.isfinite(e).all():
            raise EmaeError(
                f"extra features must be finite, shape ({n}, {len(self.feature_names)}), "
                f"got {e.shape}"
            )
        return torch.from_numpy(((e - self.extra_mean) / self.extra_std).astype(np.float32))

    def _pooled(
        self, x: Any, extra: Any, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """What the head reads of raw patches, batch by batch: ``(B, C, 1, 1)`` pooled
        features (before standardizing) and the batch's extra features, on the device."""
        self.normalizer.check_dtype(np.asarray(x).dtype, "x", "this classifier", strict=False)
        images = self.normalizer(as_images(x))
        extras = self._extra(extra, len(images))
        self.model.eval()
        device = self._device()
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start : start + batch_size, None]).to(device)
            e = None if extras is None else extras[start : start + batch_size].to(device)
            yield self.model.global_features(batch), e

    @torch.inference_mode()
    def predict_proba(self, x: Any, extra: Any = None, *, batch_size: int = 64) -> np.ndarray:
        """Class probabilities of raw patches ``(N, S, S)`` (``S = model.input_size``):
        ``(N, K)`` float32."""
        return self.proba_and_features(x, extra, batch_size=batch_size)[0]

    @torch.inference_mode()
    def proba_and_features(
        self, x: Any, extra: Any = None, *, batch_size: int = 64
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities ``(N, K)`` and what the head reads, standardized, ``(N, C)``
        (the pooled backbone features before any extra features), both float32, of raw patches
        ``(N, S, S)`` in one forward pass."""
        proba, features = [], []
        mean = std = None
        for pooled, e in self._pooled(x, extra, batch_size):
            if mean is None:
                mean = self.model.feature_mean.to(pooled)[None, :, None, None]
                std = self.model.feature_std.to(pooled)[None, :, None, None]
            logits = self.model.logits_from_features(pooled, e)[:, :, 0, 0]
            proba.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
            features.append(((pooled - mean) / std)[:, :, 0, 0].float().cpu().numpy())
        return np.concatenate(proba), np.concatenate(features)

    def features(self, x: Any, *, batch_size: int = 64) -> np.ndarray:
        """What the head reads of raw patches ``(N, S, S)``, standardized: ``(N, C)`` float32."""
        return self.proba_and_features(x, batch_size=batch_size)[1]

    def predict(self, x: Any, extra: Any = None) -> np.ndarray:
        """Predicted class indices ``(N,)`` int64 (names: ``classes[i]``)."""
        return self.predict_proba(x, extra).argmax(axis=1)

    def dense_probabilities(self, image: Any, precision: str = "fp32") -> np.ndarray:
        """Per-class probability map of one raw 2D image ``(H, W)``: ``(K, h', w')`` float32.

        Cell ``(i, j)`` classifies the patch whose top-left feature cell is ``(i, j)``
        (``downsample_factor`` pixels per cell). Classifiers with extra features cannot map.
        ``precision`` of the forward pass: ``"fp32"``, ``"bf16"`` or ``"auto"``
        (:func:`emae.anomaly.maps.batched_apply`).
        """
        if self.feature_names:
            raise EmaeError("a classifier that uses extra features cannot map whole images")
        self.normalizer.check_dtype(np.asarray(image).dtype, "image", "it", strict=False)
        x = self.normalizer(as_images(np.asarray(image)[None]))
        return batched_apply(
            self.model,
            "dense_probabilities",
            x,
            batch_size=1,
            device=self._device(),
            precision=precision,
        )[0]

    def probability_maps(self, tiles: Any, precision: str = "fp32") -> np.ndarray:
        """Full-resolution class probabilities of raw tiles ``(B, H, W)``: ``(B, K, H, W)`` float32.

        The tiles are reflect-padded by half a patch, so the dense map's cell ``(i, j)`` classifies
        the patch centred on pixel ``(m i, m j)`` (``m = downsample_factor``); the cells are then
        upsampled bilinearly to pixels. Each pixel's probabilities are those of the patch around it.
        ``precision`` of the forward pass: ``"fp32"``, ``"bf16"`` (bfloat16 autocast and
        channels-last on the CPU, as the anomaly maps) or ``"auto"``
        (:func:`emae.anomaly.maps.batched_apply`); the upsampling is in float32.
        """
        if self.feature_names:
            raise EmaeError("a classifier that uses extra features cannot map whole images")
        self.normalizer.check_dtype(np.asarray(tiles).dtype, "tiles", "it", strict=False)
        x = self.normalizer(as_images(tiles))
        h, w = x.shape[-2:]
        half = self.model.patch_size // 2
        mode = "reflect" if min(h, w) > half else "edge"
        padded = np.pad(x, ((0, 0), (half, half), (half, half)), mode=mode)
        m = self.model.downsample_factor
        shift = (m - 1) // 2  # cell i covers pixels m i - m/2 .. m i + m/2 after upsampling

        def to_pixels(_: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
            fine = torch.nn.functional.interpolate(
                cells, scale_factor=m, mode="bilinear", align_corners=False
            )
            fine = torch.nn.functional.pad(fine, (0, w, 0, h), mode="replicate")
            out = fine[:, :, shift : shift + h, shift : shift + w]
            return out / out.sum(dim=1, keepdim=True)

        return batched_apply(
            self.model,
            "dense_probabilities",
            padded,
            batch_size=len(padded),
            device=self._device(),
            precision=precision,
            then=to_pixels,
        )


def save_classifier(
    path: str | Path,
    fitted: FittedClassifier,
    *,
    config: dict[str, Any],
    summary: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a classifier folder atomically (see the module docstring)."""
    path = Path(path)
    m = fitted.model
    header = {
        "emae_version": emae.__version__,
        "kind": "classifier",
        "format": FORMAT,
        "model": fitted.backbone_name,
        "model_kwargs": fitted.backbone_kwargs,
        "head": {
            "n_classes": m.n_classes,
            "patch_size": m.patch_size,
            "hidden": m.head[0].out_channels,
            "dropout": float(m.head[2].p),
            "n_extra": m.n_extra,
            "pooling": m.pooling,
        },
        "classes": list(fitted.classes),
        "features": list(fitted.feature_names),
        "run": config,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in m.state_dict().items()}
    with write_errors(path), atomic_dir(path, overwrite=overwrite, **BUNDLE_ONLY) as tmp:
        safetensors.torch.save_file(state, str(tmp / WEIGHTS))
        (tmp / NORMALIZATION).write_text(json.dumps(fitted.normalizer.to_dict(), indent=2))
        if fitted.feature_names:
            arrays = {"mean": fitted.extra_mean, "std": fitted.extra_std}
            safetensors.numpy.save_file(
                {k: np.asarray(v) for k, v in arrays.items()}, str(tmp / EXTRA)
            )
        if summary is not None:
            (tmp / "training.json").write_text(json.dumps(summary, indent=2, default=float))
        header[CHECKSUMS] = folder_checksums(tmp)
        (tmp / CONFIG).write_text(json.dumps(header, indent=2) + "\n")
    return path


def training_summary(path: str | Path) -> dict[str, Any]:
    """The ``training.json`` of a classifier folder (``{}`` when it has none)."""
    summary = Path(path) / "training.json"
    return read_json(summary) if summary.is_file() else {}


def trained_from(path: str | Path, *, needed_for: str, otherwise: str) -> str | None:
    """The autoencoder folder a classifier was trained from (its training summary's
    ``encoder``; None from scratch), refused in one line when it no longer holds its fitted
    score: ``needed_for`` says what needs it, ``otherwise`` how to go on without it."""
    encoder = training_summary(path).get("encoder")
    if encoder and not Path(encoder, "scoring.json").is_file():
        raise EmaeError(
            f"{path}: the autoencoder it was trained from, {encoder}, is gone (or holds no "
            f"fitted score), and {needed_for} needs it; put it back, or {otherwise}"
        )
    return encoder


def is_classifier(path: str | Path) -> bool:
    """Whether ``path`` is a classifier folder (rather than an autoencoder folder)."""
    try:
        return json.loads((Path(path) / CONFIG).read_text()).get("kind") == "classifier"
    except (OSError, ValueError, AttributeError):
        return False


def _header(path: Path) -> dict[str, Any]:
    """The checked ``config.json`` of a classifier folder."""
    if not (path / CONFIG).is_file():
        raise EmaeError(f"{path}: not an emae model folder (no {CONFIG})")
    header = read_json(path / CONFIG)
    if isinstance(header, dict) and header.get("kind", "autoencoder") == "autoencoder":
        raise EmaeError(
            f"{path}: an autoencoder folder, not a classifier; train one with emae finetune"
        )
    if not isinstance(header, dict) or set(HEADER_KEYS) - set(header):
        found = sorted(header) if isinstance(header, dict) else type(header).__name__
        raise EmaeError(f"{path / CONFIG}: expected keys {sorted(HEADER_KEYS)}, found {found}")
    check_kind(header, "classifier", path / CONFIG)
    types = {"model_kwargs": dict, "head": dict, "classes": list, "features": list}
    for key, kind in types.items():
        value = header[key]
        if not isinstance(value, kind) or (
            kind is list and not all(isinstance(v, str) for v in value)
        ):
            expected = "an object" if kind is dict else "a list of names"
            raise EmaeError(f"{path / CONFIG}: {key} must be {expected}, got {value!r}")
    return header


def load_classifier(path: str | Path) -> FittedClassifier:
    """Load a folder written by :func:`save_classifier`; nothing is unpickled.

    Raises
    ------
    EmaeError
        When a file is missing or corrupt, ``config.json`` lacks a key, a ``.safetensors`` file
        does not match its checksum, or the weights lack, add or reshape a tensor.
    """
    path = Path(path)
    header = _header(path)
    check_version(header["emae_version"], path)
    check_checksums(path, header)
    try:
        backbone = build_backbone(header["model"], header["model_kwargs"])
        model = EncoderClassifier(backbone, **header["head"])
    except (EmaeError, TypeError) as exc:
        raise EmaeError(f"{path / CONFIG}: {exc}") from None
    load_weights(path, model)
    try:
        normalizer = PercentileNormalizer.from_dict(read_json(path / NORMALIZATION))
    except (EmaeError, TypeError) as exc:
        raise EmaeError(f"{path / NORMALIZATION}: {exc}") from None
    mean = std = None
    if header["features"]:
        arrays = read_tensors(path / EXTRA, safetensors.numpy.load_file)
        shape = (len(header["features"]),)
        if any(arrays.get(k, np.empty(0)).shape != shape for k in ("mean", "std")):
            raise EmaeError(f"{path / EXTRA}: expected arrays 'mean' and 'std' of shape {shape}")
        mean, std = arrays["mean"], arrays["std"]
    return FittedClassifier(
        model=model,
        classes=tuple(header["classes"]),
        normalizer=normalizer,
        backbone_name=header["model"],
        backbone_kwargs=header["model_kwargs"],
        feature_names=tuple(header["features"]),
        extra_mean=mean,
        extra_std=std,
    )
