"""``emae finetune``: a pretrained encoder plus a 1x1-conv head, trained on a few labels.

:func:`finetune` reads the labeled patches of a labels CSV, normalizes them like the encoder's
training data, and trains an :class:`~emae.models.classifier.EncoderClassifier` with the plain
loop of :mod:`emae.train.loop`: frozen encoder (``freeze="frozen"``, default), fine-tuned encoder
at ``encoder_lr_scale`` times the head's rate (``"finetune"``), or frozen for ``unfreeze_after``
steps then fine-tuned (``"unfreeze"``). Class imbalance, augmentation and regularization are
options of :class:`FinetuneConfig`. The classifier folder (:mod:`emae.folders.classifier`) holds
everything needed to classify new patches and to map whole images.

With ``encoder=None`` the same architecture starts from random weights and trains end to end:
the "CNN from scratch" baseline of ``emae compare``.

Given unlabeled patches too (``unlabeled=``, ``--unlabeled DATA``), every step also trains on
them through FixMatch's pseudo-labels and consistency (:mod:`emae.classify.semi`): the unlabeled
images
then shape the classifier itself, not only the encoder's pretraining.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from emae.classify.semi import WithUnlabeled, consistency_loss, random_views
from emae.classify.stream import FeatureStream, LabeledPatchStream, class_weights, dihedral
from emae.config import read_options
from emae.data.labels import load_labels
from emae.data.normalization import PercentileNormalizer
from emae.data.objects import labeled_dtype, object_patches
from emae.errors import EmaeError, config_error
from emae.folders.autoencoder import load_bundle
from emae.folders.classifier import FittedClassifier, save_classifier
from emae.models import build_model
from emae.models.classifier import EncoderClassifier
from emae.synth.artifacts import INJECTORS, inject
from emae.train.loop import LoopSettings, read_run_state, train_loop

logger = logging.getLogger(__name__)


class FinetuneConfig(BaseModel):
    """Everything that defines a classifier run; one flat level, validated at the edge."""

    model_config = ConfigDict(extra="forbid")

    freeze: Literal["frozen", "finetune", "unfreeze"] = Field(
        "frozen", description="Encoder: frozen, fine-tuned, or unfrozen after unfreeze_after."
    )
    unfreeze_after: int = Field(200, ge=0, description="Steps with a frozen encoder (unfreeze).")
    encoder_lr_scale: float = Field(0.1, gt=0, le=1, description="Encoder rate / head rate.")
    balance: Literal["none", "weights", "oversample", "undersample", "artificial", "smote"] = Field(
        "weights", description="Class-imbalance handling (see emae.classify.stream)."
    )
    cache_features: bool = Field(
        True, description="Frozen encoder: train the head on cached features of 8 flips/turns."
    )
    augment: bool = Field(True, description="Flips, rotations, intensity jitter, noise.")
    orientation: Literal["any", "fixed"] = Field(
        "any",
        description="any: flips and 90-degree turns keep the class (EM); fixed: they do not "
        "(digits, letters): augmentation shifts instead, cached views are the patch alone.",
    )
    hidden: int = Field(64, ge=1, le=4096, description="Channels of the hidden 1x1 conv.")
    pooling: Literal["latent", "levels"] = Field(
        "levels",
        description="Head input of a pretrained encoder: the mean and std of every encoder "
        "level over the patch (default; 2-3x the macro-F1 of the latent alone on the sample "
        "data, docs/benchmarks.md) or the latent's mean.",
    )
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout before the last 1x1 conv.")
    label_smoothing: float = Field(0.05, ge=0, lt=1, description="Cross-entropy smoothing.")
    steps: int = Field(400, ge=1, description="Optimizer steps (items seen = steps x batch).")
    batch_size: int = Field(32, ge=1, le=4096, description="Patches per step.")
    lr: float = Field(3e-3, gt=0, le=1, description="Peak learning rate of the head.")
    weight_decay: float = Field(1e-3, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(20, ge=0, description="Linear learning-rate warm-up steps.")
    seed: int = Field(0, ge=0, description="Seed of initialization, draws and augmentation.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="Autocast dtype.")
    clean_class: str = Field("clean", description="The artifact-free class (balance artificial).")
    scratch_channels: tuple[int, ...] = Field(
        (32, 64, 128), description="Encoder channels when training from scratch (no encoder)."
    )
    patch_size: int | None = Field(
        None, ge=8, description="Patch side; default the encoder's training patch size."
    )
    tensorboard: bool = Field(False, description="Write TensorBoard logs to OUT/tensorboard.")
    val_fraction: float = Field(
        0.0, ge=0, le=0.5, description="Stratified share of labels held out for validation."
    )
    patience: int = Field(0, ge=0, description="Stop after N validations without gain; 0: off.")
    val_every: int = Field(50, ge=1, description="Validate and log every N steps.")
    input: Literal["surrounding", "cropped", "masked", "whole"] = Field(
        "surrounding", description="Object-centred images: what the classifier sees."
    )
    unlabeled_weight: float = Field(
        1.0, ge=0, description="Weight of the unlabeled (FixMatch) loss, when unlabeled given."
    )
    unlabeled_ratio: int = Field(
        3,
        ge=1,
        le=32,
        description="Unlabeled patches per labeled patch in a step; each is seen twice, so a "
        "step computes batch_size x (1 + 2 ratio) patches.",
    )
    confidence: float = Field(
        0.95,
        gt=0,
        le=1,
        description="Smallest weak-view probability that makes a pseudo-label; at most "
        "1 - label_smoothing (K - 1) / K.",
    )
    rescale: bool = Field(
        False,
        description="Normalize the patches by their own percentiles instead of the encoder's "
        "intensity values: for labels on data of another dtype or range than the pretraining.",
    )
    unlabeled_patches: int = Field(
        20000,
        ge=1,
        description="Patches drawn from the unlabeled images (--unlabeled), held in memory "
        "in the images' dtype.",
    )


def load_finetune_config(path: str | Path | None = None, **overrides: Any) -> FinetuneConfig:
    """A YAML file's options with flag overrides (``None`` ignored); unknown keys are errors."""
    data: dict[str, Any] = read_options(path) if path is not None else {}
    flags = {k: v for k, v in overrides.items() if v is not None}
    data.update(flags)
    try:
        return FinetuneConfig(**data)
    except Exception as exc:
        raise config_error(exc, str(path or "options"), flags) from None


def _backbone(encoder: str | Path | None, config: FinetuneConfig) -> tuple[Any, ...]:
    """``(backbone, name, kwargs, normalizer or None, patch size)``."""
    if encoder is None:
        kwargs = {"channels": list(config.scratch_channels), "latent_channels": 16, "norm": "batch"}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            backbone = build_model("conv-ae", **kwargs)
        return backbone, "conv-ae", kwargs, None, config.patch_size or 64
    bundle = load_bundle(encoder)
    patch = config.patch_size or int(bundle.config.get("patch_size", 64))
    return bundle.model, bundle.model_name, bundle.model_kwargs, bundle.normalizer, patch


def _pooled_views(model: EncoderClassifier, patches: np.ndarray, n: int) -> np.ndarray:
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


def _with_artificial(
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


def _hold_out(
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
        device = next(iter(model.state_dict().values())).device
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
        Names of the extra features.
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
    backbone, name, kwargs, normalizer, patch_size = _backbone(encoder, config)
    strict = source_dtype is not None  # arrays given to the API may be converted to float
    source_dtype = str(np.dtype(source_dtype or patches.dtype))
    if patches.shape[-1] != patch_size or patches.shape[-2] != patch_size:
        raise EmaeError(f"patches must be {patch_size}x{patch_size}, got {patches.shape[-2:]}")
    if normalizer is None or config.rescale:
        low, high = (1.0, 99.0) if normalizer is None else (normalizer.low, normalizer.high)
        low_value, high_value = np.percentile(patches, [low, high])
        if not high_value > low_value:
            raise EmaeError("the labeled patches are constant; cannot normalize them")
        normalizer = PercentileNormalizer(
            float(low_value), float(high_value), low, high, source_dtype=source_dtype
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
        extra_mean = extra.mean(axis=0)
        extra_std = np.where(extra.std(axis=0) > 0, extra.std(axis=0), 1.0)
        extra = ((extra - extra_mean) / extra_std).astype(np.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = EncoderClassifier(
            backbone,
            n_classes=len(classes),
            patch_size=patch_size,
            hidden=config.hidden,
            dropout=config.dropout,
            n_extra=0 if extra is None else extra.shape[1],
            pooling=config.pooling if encoder is not None else "latent",
        )
    pretrained = encoder is not None
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
        normalized, labels, extra, val_fn = _hold_out(normalized, labels, extra, weight, config)
    n_items = config.steps * config.batch_size
    if cached:
        balance = config.balance
        views = _pooled_views(model, normalized, n_views)  # cached: a pretrained encoder
        model.set_feature_statistics(torch.from_numpy(views.reshape(-1, views.shape[-1])))
        if balance == "artificial":
            normalized, labels, extra = _with_artificial(
                normalized, labels, classes, extra, config.clean_class, config.seed
            )
            balance = "none"
        stream: Any = FeatureStream(
            views if balance == config.balance else _pooled_views(model, normalized, n_views),
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
            model.set_feature_statistics(torch.from_numpy(_pooled_views(model, normalized, 1)[0]))
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


def unlabeled_patches(
    sources: Sequence[str | Path], n: int, patch_size: int, seed: int
) -> np.ndarray | None:
    """``n`` random patches of the unlabeled images: ``(n, P, P)`` in their dtype, or None
    without sources. Padding (mostly-zero patches) is skipped, as in pretraining."""
    if not sources:
        return None
    from emae.data.sampling import sample_patches
    from emae.io import expand_inputs, open_image

    images = [open_image(s) for s in expand_inputs([str(s) for s in sources])]
    return sample_patches(images, n, patch_size, seed=seed)[1]


def finetune(
    encoder: str | Path | None,
    labels_csv: str | Path,
    out: str | Path,
    config: FinetuneConfig | None = None,
    *,
    unlabeled: Sequence[str | Path] = (),
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a classifier on every sample of a labels CSV and write its folder.

    While training, the checkpoint lives in ``OUT.training/``; an interrupted run continues
    with ``resume=True`` (same configuration, labels and encoder), and ``OUT`` appears only
    when training has finished.

    Parameters
    ----------
    encoder
        Model folder of a pretrained autoencoder (``emae pretrain``), or None (from scratch).
    labels_csv
        The labels CSV (see :mod:`emae.data.labels`).
    out
        Classifier folder to create.
    config
        Run configuration; defaults when None.
    unlabeled
        Unlabeled images (any reader of :func:`emae.io.open_image`): ``unlabeled_patches``
        random patches of them train the classifier semi-supervised (:mod:`emae.classify.semi`).
    overwrite
        Replace an existing model folder.
    resume
        Continue the interrupted run of ``out``.
    progress
        Show a progress bar.

    Returns
    -------
    dict
        The training summary, with the class counts.
    """
    config = config or FinetuneConfig()
    from emae.folders.autoencoder import BUNDLE_ONLY
    from emae.io.atomic import check_writable
    from emae.io.provenance import check_not_input

    out = Path(out)
    work = out.with_name(out.name + ".training")
    for path in (out, work):
        check_not_input(path, [encoder, labels_csv, *unlabeled])
    check_writable(out, overwrite=overwrite, **BUNDLE_ONLY)
    identity = {
        "config": config.model_dump(mode="json"),
        "labels": str(Path(labels_csv).resolve()),
        "encoder": None if encoder is None else str(Path(encoder).resolve()),
        "unlabeled": [str(Path(u).resolve()) for u in unlabeled],
    }
    if resume:
        saved = work / "run.json"
        if not saved.is_file() or read_run_state(saved) != identity:
            raise EmaeError(
                f"cannot resume {out}: {work} holds no interrupted run with this configuration, "
                f"labels and encoder"
            )
    elif work.exists() and not overwrite:
        raise EmaeError(
            f"{work} holds an interrupted run; pass --resume to continue it or "
            "--overwrite to start again"
        )
    patch_size = _backbone(encoder, config)[4] if config.patch_size is None else config.patch_size
    labeled = load_labels(labels_csv, patch_size=patch_size)
    for path in (out, work):
        check_not_input(path, {s.image for s in labeled.samples})
    if len(labeled.classes) < 2:
        raise EmaeError(f"{labels_csv}: a classifier needs at least 2 classes")
    patches, labels = object_patches(labeled, patch_size, config.input)
    extra = None
    if labeled.features:
        extra = np.array([s.features for s in labeled.samples], dtype=np.float64)
    pool = None
    if unlabeled and config.unlabeled_weight > 0:
        check_semi_supervised(config, len(labeled.classes), extra is not None)
        pool = unlabeled_patches(unlabeled, config.unlabeled_patches, patch_size, config.seed)
    if not resume:  # the inputs are readable: only now replace an old run folder
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()
        (work / "run.json").write_text(json.dumps(identity, indent=2))
    try:
        fitted, summary = train_classifier(
            patches,
            labels,
            labeled.classes,
            config,
            encoder=encoder,
            extra=extra,
            feature_names=labeled.features,
            unlabeled=pool,
            progress=progress,
            checkpoint=work / "checkpoint.pt",
            resume=resume,
            log_dir=work / "tensorboard" if config.tensorboard else None,
            source_dtype=str(labeled_dtype(labeled)),
        )
    except EmaeError:
        if not resume and not (work / "checkpoint.pt").exists():
            shutil.rmtree(work, ignore_errors=True)  # refused before training: leave nothing
        raise
    summary["class_counts"] = labeled.class_counts()
    summary["labels"] = str(Path(labels_csv).resolve())
    summary["encoder"] = identity["encoder"]
    summary["unlabeled"] = identity["unlabeled"]
    summary["unlabeled_patches"] = 0 if pool is None else len(pool)
    save_classifier(
        out, fitted, config=config.model_dump(mode="json"), summary=summary, overwrite=overwrite
    )
    if (work / "tensorboard").is_dir():
        shutil.move(work / "tensorboard", out / "tensorboard")
    shutil.rmtree(work)
    return summary
