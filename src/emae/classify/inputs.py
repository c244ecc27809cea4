"""What a classifier trains on: its encoder, cached pooled views, artificial artifacts, a
validation share, and the checks of semi-supervised settings (for :mod:`emae.classify.training`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from emae.classify.config import FinetuneConfig
from emae.classify.stream import dihedral
from emae.errors import EmaeError
from emae.folders.autoencoder import load_bundle
from emae.models import build_model
from emae.models.classifier import EncoderClassifier
from emae.models.residual import RESIDUAL, ResidualBackbone
from emae.runtime import model_device
from emae.synth.artifacts import INJECTORS, inject


def _scratch_kwargs(config: FinetuneConfig) -> dict[str, Any]:
    """The ``conv-ae`` arguments of a backbone trained from random weights."""
    return {"channels": list(config.scratch_channels), "latent_channels": 16, "norm": "batch"}


def load_backbone(encoder: str | Path | None, config: FinetuneConfig) -> tuple[Any, ...]:
    """``(backbone, name, kwargs, normalizer or None, patch size)``."""
    if encoder is None:
        if config.view != "image":
            raise EmaeError(
                f"view {config.view!r} needs a pretrained autoencoder (an encoder folder)"
            )
        kwargs = _scratch_kwargs(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            backbone = build_model("conv-ae", **kwargs)
        return backbone, "conv-ae", kwargs, None, config.patch_size or 64
    bundle = load_bundle(encoder)
    patch = config.patch_size or int(bundle.config.get("patch_size", 64))
    if config.view != "image":
        kwargs = {
            "autoencoder": bundle.model_name,
            "autoencoder_kwargs": bundle.model_kwargs,
            "backbone_kwargs": _scratch_kwargs(config),
            "context": config.context,
            "with_image": config.view == "both",
        }
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            backbone = ResidualBackbone(**kwargs)
        backbone.autoencoder.load_state_dict(bundle.model.state_dict())
        return backbone, RESIDUAL, kwargs, bundle.normalizer, patch
    return bundle.model, bundle.model_name, bundle.model_kwargs, bundle.normalizer, patch


def pooled_views(model: EncoderClassifier, patches: np.ndarray, n: int) -> np.ndarray:
    """What the head sees (:meth:`EncoderClassifier.global_features`) of the first ``n`` of
    the 8 flips/turns of every patch: ``(n, N, C)`` float32."""
    views = dihedral(patches)[:n]  # (n, N, P, P)
    flat = views.reshape(-1, 1, *patches.shape[-2:])
    out = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(flat), 128):
            f = model.global_features(torch.from_numpy(flat[start : start + 128]))
            out.append(f[:, :, 0, 0].numpy())
    return np.concatenate(out).reshape(n, len(patches), -1)


def with_artificial(
    patches: np.ndarray,
    labels: np.ndarray,
    classes: tuple[str, ...],
    extra: np.ndarray | None,
    clean_class: str,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Add clean patches with synthetic artifacts drawn on them until each artifact class that
    has a synthetic kind (:data:`~emae.synth.artifacts.INJECTORS`) is as large as the largest."""
    if clean_class not in classes:
        raise EmaeError(f"balance 'artificial' needs the clean class {clean_class!r}")
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels, minlength=len(classes))
    clean = np.flatnonzero(labels == classes.index(clean_class))
    new_patches, new_labels, new_extra = [patches], [labels], [extra]
    for k, name in enumerate(classes):
        missing = int(counts.max() - counts[k])
        if name not in INJECTORS or missing <= 0 or not len(clean):
            continue
        picks = rng.choice(clean, missing)
        drawn = [inject(np.clip(patches[j], 0, 1), name, seed=rng)[0] for j in picks]
        new_patches.append(np.stack(drawn).astype(np.float32))
        new_labels.append(np.full(missing, k, dtype=labels.dtype))
        new_extra.append(None if extra is None else extra[picks])
    stacked_extra = None if extra is None else np.concatenate(new_extra)
    return np.concatenate(new_patches), np.concatenate(new_labels), stacked_extra


def hold_out(
    patches: np.ndarray,
    labels: np.ndarray,
    extra: np.ndarray | None,
    weight: torch.Tensor | None,
    config: FinetuneConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Any]:
    """Split off a stratified validation share; returns the rest and ``val_fn`` (weighted CE)."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    try:
        train, val = train_test_split(
            index, test_size=config.val_fraction, stratify=labels, random_state=config.seed
        )
    except ValueError as exc:
        raise EmaeError(
            f"cannot hold out {config.val_fraction:.0%} for validation: {exc}"
        ) from None
    x_val = torch.from_numpy(patches[val][:, None])
    y_val = torch.from_numpy(labels[val])
    e_val = None if extra is None else torch.from_numpy(extra[val])

    def val_fn(model: torch.nn.Module) -> float:
        device = model_device(model)
        e = None if e_val is None else e_val.to(device)
        logits = model(x_val.to(device), e).float()
        w = None if weight is None else weight.to(device)
        return float(F.cross_entropy(logits, y_val.to(device), weight=w))

    rest = None if extra is None else extra[train]
    return patches[train], labels[train], rest, val_fn


def check_semi_supervised(config: FinetuneConfig, n_classes: int, has_extra: bool) -> None:
    """Refuse semi-supervised settings that cannot work, before anything is trained.

    Raises
    ------
    EmaeError
        With feature columns (unlabeled patches have none), or a ``confidence`` above
        ``1 - label_smoothing (K - 1) / K``, the largest probability a smoothed model aims for.
    """
    if has_extra:
        raise EmaeError("semi-supervised training takes patches alone: no feature columns")
    reachable = 1 - config.label_smoothing * (n_classes - 1) / n_classes
    if config.confidence > reachable:
        raise EmaeError(
            f"confidence {config.confidence} is above {reachable:.3f}, the largest probability "
            f"a model trained with label_smoothing {config.label_smoothing} aims for over "
            f"{n_classes} classes: no patch would get a pseudo-label"
        )
