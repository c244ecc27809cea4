"""Training a classifier on raw patches in memory: the one computation behind ``emae finetune``,
``emae compare`` and :class:`emae.classify.estimator.PatchClassifier`.

A pretrained encoder (or the same architecture from random weights) plus the 1x1-conv head of
:class:`~emae.models.classifier.EncoderClassifier`, trained with the plain loop of
:mod:`emae.train.loop`: frozen encoder (features cached over the 8 flips and turns), fine-tuned
encoder at a lower rate, or frozen then unfrozen; class weights, over/undersampling, SMOTE in
latent space, artificial artifacts; augmentation, dropout, label smoothing; optionally
semi-supervised on unlabeled patches (:mod:`emae.classify.semi`). No files are written but the
checkpoint and TensorBoard logs it is given.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from emae.classify.config import FinetuneConfig
from emae.classify.inputs import (
    check_semi_supervised,
    hold_out,
    load_backbone,
    pooled_views,
    with_artificial,
)
from emae.classify.semi import WithUnlabeled, consistency_loss, random_views
from emae.classify.stream import FeatureStream, LabeledPatchStream, class_weights
from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError
from emae.folders.classifier import FittedClassifier
from emae.models.classifier import EncoderClassifier
from emae.train.loop import LoopSettings, train_loop

logger = logging.getLogger(__name__)


def train_classifier(
    patches: np.ndarray,
    labels: np.ndarray,
    classes: tuple[str, ...],
    config: FinetuneConfig,
    *,
    encoder: str | Path | None,
    extra: np.ndarray | None = None,
    feature_names: tuple[str, ...] = (),
    unlabeled: np.ndarray | None = None,
    progress: bool = False,
    checkpoint: Path | None = None,
    resume: bool = False,
    log_dir: Path | None = None,
    source_dtype: str | None = None,
) -> tuple[FittedClassifier, dict[str, Any]]:
    """Train a classifier on raw patches in memory; the one computation of finetune and compare.

    Parameters
    ----------
    patches
        ``(N, P, P)`` raw patches (intensities as read).
    labels
        ``(N,)`` int class indices into ``classes``.
    classes
        Class names.
    config
        Run configuration.
    encoder
        A pretrained model folder, or None to train the same architecture from scratch.
    extra
        ``(N, F)`` extra numeric features (``feat_*`` columns), or None.
    feature_names
        Names of the extra features; ``feature_0``, ``feature_1``, ... when ``extra`` is given
        without names.
    unlabeled
        ``(M, P, P)`` raw unlabeled patches (same intensities as ``patches``) for semi-supervised
        training (:mod:`emae.classify.semi`), or None.
    progress
        Show a progress bar.
    checkpoint, resume
        Checkpoint file of the loop, and whether to continue from it.
    log_dir
        TensorBoard folder: losses, and up to 2 samples per class titled with prediction and
        target at every log step; None logs nothing.
    source_dtype
        Pixel dtype of the images the patches were read from: checked strictly against the
        encoder's normalization and recorded in the classifier's, so that inputs of another
        dtype are refused later (:mod:`emae.data.normalization`). By default ``patches.dtype``,
        and float patches pass the check (they may be intensities already converted).

    Returns
    -------
    (FittedClassifier, dict)
        The classifier, ready to predict, and the training summary.
    """
    config = config.resolved(pretrained=encoder is not None)  # patches: "auto" is residual
    backbone, name, kwargs, normalizer, patch_size = load_backbone(encoder, config)
    strict = source_dtype is not None  # arrays given to the API may be converted to float
    source_dtype = str(np.dtype(source_dtype or patches.dtype))
    side = config.input_size(patch_size)
    if patches.shape[-1] != side or patches.shape[-2] != side:
        around = f" ({patch_size} and {config.context} of context)" if side != patch_size else ""
        raise EmaeError(f"patches must be {side}x{side}{around}, got {patches.shape[-2:]}")
    if normalizer is None or config.rescale:
        low, high = (1.0, 99.0) if normalizer is None else (normalizer.low, normalizer.high)
        normalizer = PercentileNormalizer.from_array(
            patches, low=low, high=high, source_dtype=source_dtype, what="the labeled patches"
        )
    normalizer.check_dtype(
        source_dtype, "the labeled images", f"the encoder {encoder}", strict=strict
    )
    if unlabeled is not None:
        normalizer.check_dtype(
            unlabeled.dtype, "the unlabeled images", "a model of the labeled ones", strict=strict
        )
    extra_mean = extra_std = None
    if extra is not None:
        if not feature_names:
            feature_names = tuple(f"feature_{i}" for i in range(extra.shape[1]))
        if len(feature_names) != extra.shape[1]:
            raise EmaeError(
                f"{len(feature_names)} feature names for {extra.shape[1]} extra features"
            )
        extra_mean = extra.mean(axis=0)
        extra_std = np.where(extra.std(axis=0) > 0, extra.std(axis=0), 1.0)
        extra = ((extra - extra_mean) / extra_std).astype(np.float32)
    # A pretrained encoder on the image; a residual view trains its CNN like one from scratch.
    pretrained = encoder is not None and config.view == "image"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = EncoderClassifier(
            backbone,
            n_classes=len(classes),
            patch_size=patch_size,
            hidden=config.hidden,
            dropout=config.dropout,
            n_extra=0 if extra is None else extra.shape[1],
            # a CNN from scratch reads its latent's mean; any autoencoder's view the config's
            pooling=config.pooling if encoder is not None else "latent",
        )
    frozen_from_start = pretrained and config.freeze != "finetune"
    model.freeze(frozen_from_start)
    weight = None
    if config.balance == "weights":
        weight = torch.from_numpy(class_weights(labels, len(classes)))
    unfreeze = pretrained and config.freeze == "unfreeze"
    semi = unlabeled is not None and config.unlabeled_weight > 0
    if semi:
        check_semi_supervised(config, len(classes), extra is not None)
    if unlabeled is not None and unlabeled.shape[1:] != patches.shape[1:]:
        raise EmaeError(
            f"unlabeled patches must be {patches.shape[-2]}x{patches.shape[-1]} like the labeled "
            f"ones, got {unlabeled.shape[1:]}"
        )
    cached = pretrained and config.freeze == "frozen" and config.cache_features and not semi
    n_views = 8 if config.orientation == "any" else 1
    if config.balance == "smote" and not cached:
        raise EmaeError(
            "balance 'smote' interpolates cached latent vectors: it needs a pretrained, "
            "frozen encoder with cache_features on"
        )
    normalized = normalizer(patches)
    val_fn = None
    if config.val_fraction > 0:
        normalized, labels, extra, val_fn = hold_out(normalized, labels, extra, weight, config)
    n_items = config.steps * config.batch_size
    if cached:
        balance = config.balance
        views = pooled_views(model, normalized, n_views)  # cached: a pretrained encoder
        model.set_feature_statistics(torch.from_numpy(views.reshape(-1, views.shape[-1])))
        if balance == "artificial":
            normalized, labels, extra = with_artificial(
                normalized, labels, classes, extra, config.clean_class, config.seed
            )
            balance = "none"
        stream: Any = FeatureStream(
            views if balance == config.balance else pooled_views(model, normalized, n_views),
            labels,
            len(classes),
            n_items,
            seed=config.seed,
            extra=extra,
            balance=balance,
        )
    else:
        if pretrained:  # random features change scale as they train: standardizing them by
            # their statistics at initialization wrecks a network trained from scratch
            model.set_feature_statistics(torch.from_numpy(pooled_views(model, normalized, 1)[0]))
        stream = LabeledPatchStream(
            normalized,
            labels,
            classes,
            n_items,
            seed=config.seed,
            extra=extra,
            balance=config.balance,
            augment_items=config.augment,
            orientation=config.orientation,
            clean_class=config.clean_class,
        )
        if semi:
            stream = WithUnlabeled(
                stream, unlabeled, normalizer, config.unlabeled_ratio, seed=config.seed
            )

    channels = model.feature_mean.numel()  # what the head reads before any extra features

    def forward(net: EncoderClassifier, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if cached:  # (vectors (B, C [+ F]), labels): the head alone
            v, y = batch
            e = v[:, channels:] if v.shape[1] > channels else None
            return net.logits_from_features(v[:, :channels, None, None], e)[:, :, 0, 0], y
        x, y, *rest = batch
        return net(x, rest[0] if rest else None), y

    def semi_forward(net: EncoderClassifier, batch: Any, generator: torch.Generator) -> tuple:
        """Labeled, weak and strong views in one forward pass (batch statistics of all)."""
        x, y, u = batch
        u = u.flatten(0, 1)  # (B, R, 1, P, P) -> (B R, 1, P, P)
        weak = random_views(u, generator, strong=False, orientation=config.orientation)
        strong = random_views(u, generator, strong=True, orientation=config.orientation)
        logits = net(torch.cat([x, weak.to(x.dtype), strong.to(x.dtype)]))
        return logits[: len(x)], y, logits[len(x) : len(x) + len(u)], logits[len(x) + len(u) :]

    def loss_fn(net, batch, step, generator):
        if unfreeze:
            net.freeze(step < config.unfreeze_after)
        # Dropout draws from torch's global generator: seed it from the step's own, so a run
        # (and a resumed run) draws the same masks, without touching the caller's RNG state.
        device = batch[0].device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            if semi:
                logits, y, weak, strong = semi_forward(net, batch, generator)
            else:
                logits, y = forward(net, batch)
        w = None if weight is None else weight.to(logits.device)
        loss = F.cross_entropy(logits.float(), y, weight=w, label_smoothing=config.label_smoothing)
        if not semi:
            return loss, {}
        unlabeled_loss, used = consistency_loss(weak, strong, config.confidence)
        logs = {"unlabeled_loss": float(unlabeled_loss.detach()), "pseudo_labeled": float(used)}
        return loss + config.unlabeled_weight * unlabeled_loss, logs

    head = list(model.head.parameters())
    groups = [{"params": head}]
    encoder_params = list(model.backbone.parameters())
    if not pretrained:
        groups = [{"params": head + encoder_params}]
    elif config.freeze != "frozen" and encoder_params:
        start = config.unfreeze_after if config.freeze == "unfreeze" else 0
        groups.append(
            {"params": encoder_params, "lr_scale": config.encoder_lr_scale, "start_step": start}
        )
    settings = LoopSettings(
        steps=config.steps,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        val_every=min(config.val_every, config.steps),
        patience=config.patience,
        checkpoint_every=max(config.steps // 4, 1),
        seed=config.seed,
        device=config.device,
        precision=config.precision,
        progress=progress,
    )
    board = None
    if log_dir is not None and extra is None:  # panels need the patches alone
        from emae.train.tensorboard import TensorBoardLogger, classification_figure

        shown = np.concatenate([np.flatnonzero(labels == k)[:2] for k in range(len(classes))])
        figure = classification_figure(normalized[shown][:, None], labels[shown], classes)
        board = TensorBoardLogger(log_dir, figure_fn=figure)
    try:
        summary = train_loop(
            model,
            loss_fn,
            stream,
            settings,
            param_groups=groups,
            val_fn=val_fn,
            checkpoint=checkpoint,
            resume=resume,
            on_log=board,
        )
    finally:
        if board is not None:
            board.close()
    model.to("cpu", memory_format=torch.contiguous_format).eval()
    fitted = FittedClassifier(
        model=model,
        classes=tuple(classes),
        normalizer=normalizer,
        backbone_name=name,
        backbone_kwargs=kwargs,
        feature_names=tuple(feature_names),
        extra_mean=extra_mean,
        extra_std=extra_std,
    )
    return fitted, summary
