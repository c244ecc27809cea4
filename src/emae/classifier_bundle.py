"""The trained classifier: prediction in memory, and its folder of plain files.

A classifier folder holds::

    config.json          {"emae_version", "kind": "classifier", "model": backbone name,
                          "model_kwargs", "head", "classes", "features", "run"}
    model.safetensors    the EncoderClassifier's state dict (backbone and head)
    normalization.json   the intensity normalization of its input
    extra.safetensors    mean and std of the extra feature columns (when it uses them)
    training.json        the training summary

Like the autoencoder folder (:mod:`emae.bundle`) it is read with ``json`` and ``safetensors``
only: nothing is unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import safetensors.torch
import torch

import emae
from emae.bundle import BUNDLE_ONLY, CONFIG, NORMALIZATION, WEIGHTS, _read_tensors
from emae.error_maps import as_images
from emae.errors import EmaeError
from emae.io.atomic import atomic_dir
from emae.models import build_model
from emae.models.classifier import EncoderClassifier
from emae.normalization import PercentileNormalizer

EXTRA = "extra.safetensors"


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
        return next(self.model.parameters()).device

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

    @torch.inference_mode()
    def predict_proba(self, x: Any, extra: Any = None, *, batch_size: int = 64) -> np.ndarray:
        """Class probabilities of raw patches ``(N, P, P)``: ``(N, K)`` float32."""
        images = self.normalizer(as_images(x))
        extras = self._extra(extra, len(images))
        self.model.eval()
        device = self._device()
        out = []
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start : start + batch_size, None]).to(device)
            e = None if extras is None else extras[start : start + batch_size].to(device)
            out.append(torch.softmax(self.model(batch, e).float(), dim=1).cpu().numpy())
        return np.concatenate(out)

    def predict(self, x: Any, extra: Any = None) -> np.ndarray:
        """Predicted class indices ``(N,)`` int64 (names: ``classes[i]``)."""
        return self.predict_proba(x, extra).argmax(axis=1)

    @torch.inference_mode()
    def dense_probabilities(self, image: Any) -> np.ndarray:
        """Per-class probability map of one raw 2D image ``(H, W)``: ``(K, h', w')`` float32.

        Cell ``(i, j)`` classifies the patch whose top-left feature cell is ``(i, j)``
        (``downsample_factor`` pixels per cell). Classifiers with extra features cannot map.
        """
        if self.feature_names:
            raise EmaeError("a classifier that uses extra features cannot map whole images")
        x = torch.from_numpy(self.normalizer(as_images(np.asarray(image)[None]))[:, None])
        self.model.eval()
        return self.model.dense_probabilities(x.to(self._device()))[0].float().cpu().numpy()

    def probability_maps(self, tiles: Any) -> np.ndarray:
        """Full-resolution class probabilities of raw tiles ``(B, H, W)``: ``(B, K, H, W)`` float32.

        The tiles are reflect-padded by half a patch, so the dense map's cell ``(i, j)`` classifies
        the patch centred on pixel ``(m i, m j)`` (``m = downsample_factor``); the cells are then
        upsampled bilinearly to pixels. Each pixel's probabilities are those of the patch around it.
        """
        if self.feature_names:
            raise EmaeError("a classifier that uses extra features cannot map whole images")
        x = torch.from_numpy(self.normalizer(as_images(tiles))[:, None]).to(self._device())
        h, w = x.shape[-2:]
        half = self.model.patch_size // 2
        mode = "reflect" if min(h, w) > half else "replicate"
        padded = torch.nn.functional.pad(x, (half, half, half, half), mode=mode)
        self.model.eval()
        with torch.inference_mode():
            cells = self.model.dense_probabilities(padded).float()  # (B, K, h', w')
        m = self.model.downsample_factor
        fine = torch.nn.functional.interpolate(
            cells, scale_factor=m, mode="bilinear", align_corners=False
        )
        shift = (m - 1) // 2  # cell i covers pixels m i - m/2 .. m i + m/2 after upsampling
        fine = torch.nn.functional.pad(fine, (0, w, 0, h), mode="replicate")
        out = fine[:, :, shift : shift + h, shift : shift + w]
        return (out / out.sum(dim=1, keepdim=True)).cpu().numpy()


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
    with atomic_dir(path, overwrite=overwrite, **BUNDLE_ONLY) as tmp:
        (tmp / CONFIG).write_text(json.dumps(header, indent=2) + "\n")
        safetensors.torch.save_file(state, str(tmp / WEIGHTS))
        (tmp / NORMALIZATION).write_text(json.dumps(fitted.normalizer.to_dict(), indent=2))
        if fitted.feature_names:
            arrays = {"mean": fitted.extra_mean, "std": fitted.extra_std}
            safetensors.numpy.save_file(
                {k: np.asarray(v) for k, v in arrays.items()}, str(tmp / EXTRA)
            )
        if summary is not None:
            (tmp / "training.json").write_text(json.dumps(summary, indent=2, default=float))
    return path


def is_classifier(path: str | Path) -> bool:
    """Whether ``path`` is a classifier folder (rather than an autoencoder folder)."""
    try:
        return json.loads((Path(path) / CONFIG).read_text()).get("kind") == "classifier"
    except (OSError, ValueError, AttributeError):
        return False


def load_classifier(path: str | Path) -> FittedClassifier:
    """Load a folder written by :func:`save_classifier`; nothing is unpickled."""
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise EmaeError(f"{path}: not an emae model folder (no {CONFIG})")
    try:
        header = json.loads((path / CONFIG).read_text())
    except ValueError as exc:
        raise EmaeError(f"{path / CONFIG}: not readable as JSON ({exc})") from None
    if header.get("kind") != "classifier":
        raise EmaeError(
            f"{path}: an autoencoder folder, not a classifier; train one with emae finetune"
        )
    backbone = build_model(header["model"], **header["model_kwargs"])
    head = header["head"]
    model = EncoderClassifier(backbone, **head)
    state = _read_tensors(path / WEIGHTS, safetensors.torch.load_file)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise EmaeError(f"{path / WEIGHTS}: weights do not match the classifier ({exc})") from None
    normalizer = PercentileNormalizer.from_dict(json.loads((path / NORMALIZATION).read_text()))
    mean = std = None
    if header["features"]:
        arrays = _read_tensors(path / EXTRA, safetensors.numpy.load_file)
        mean, std = arrays["mean"], arrays["std"]
    return FittedClassifier(
        model=model.eval(),
        classes=tuple(header["classes"]),
        normalizer=normalizer,
        backbone_name=header["model"],
        backbone_kwargs=header["model_kwargs"],
        feature_names=tuple(header["features"]),
        extra_mean=mean,
        extra_std=std,
    )
