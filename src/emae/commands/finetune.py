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
images then shape the classifier itself, not only the encoder's pretraining.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emae.classify.config import FinetuneConfig
from emae.classify.inputs import check_semi_supervised, load_backbone
from emae.classify.training import train_classifier
from emae.commands.run_dir import begin, check_fresh, check_resumable, training_dir
from emae.config import read_options
from emae.data.labels import load_label_files, load_labels
from emae.data.objects import labeled_dtype, object_patches
from emae.errors import EmaeError, config_error
from emae.folders.classifier import save_classifier

logger = logging.getLogger(__name__)


def load_finetune_config(path: str | Path | None = None, **overrides: Any) -> FinetuneConfig:
    """A YAML file's options with flag overrides (``None`` ignored); unknown keys are errors."""
    data: dict[str, Any] = read_options(path) if path is not None else {}
    flags = {k: v for k, v in overrides.items() if v is not None}
    data.update(flags)
    try:
        return FinetuneConfig(**data)
    except Exception as exc:
        raise config_error(exc, str(path or "options"), flags) from None


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
    labels_csv: str | Path | Sequence[str | Path],
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
        The labels CSV (see :mod:`emae.data.labels`), or several: the first defines the classes,
        the others add samples (e.g. filled ``emae suggest`` files; rows left without a label
        are skipped).
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
    from emae.folders.files import BUNDLE_ONLY
    from emae.io.atomic import check_writable
    from emae.io.provenance import check_not_input

    out = Path(out)
    work = training_dir(out)
    csvs = [labels_csv] if isinstance(labels_csv, (str, Path)) else list(labels_csv)
    named = [str(Path(c).resolve()) for c in csvs]
    for path in (out, work):
        check_not_input(path, [encoder, *csvs, *unlabeled])
    check_writable(out, overwrite=overwrite, **BUNDLE_ONLY)
    identity = {
        "config": config.model_dump(mode="json"),
        "labels": named[0] if len(named) == 1 else named,
        "encoder": None if encoder is None else str(Path(encoder).resolve()),
        "unlabeled": [str(Path(u).resolve()) for u in unlabeled],
    }
    if resume:
        check_resumable(work, identity, out)
    else:
        check_fresh(work, overwrite)
    kind = load_labels(csvs[0], check_images=False).kind  # "auto" views depend on it
    config = config.resolved(pretrained=encoder is not None, kind=kind)
    patch_size = (
        load_backbone(encoder, config)[4] if config.patch_size is None else config.patch_size
    )
    context = (config.input_size(patch_size) - patch_size) // 2  # read for a residual view
    labeled = load_label_files(csvs, patch_size=patch_size)
    for path in (out, work):
        check_not_input(path, {s.image for s in labeled.samples})
    if len(labeled.classes) < 2:
        raise EmaeError(f"{csvs[0]}: a classifier needs at least 2 classes")
    patches, labels = object_patches(labeled, patch_size, config.input, context=context)
    extra = None
    if labeled.features:
        extra = np.array([s.features for s in labeled.samples], dtype=np.float64)
    pool = None
    if unlabeled and config.unlabeled_weight > 0:
        check_semi_supervised(config, len(labeled.classes), extra is not None)
        size = config.input_size(patch_size)
        pool = unlabeled_patches(unlabeled, config.unlabeled_patches, size, config.seed)
    if not resume:  # the inputs are readable: only now replace an old run folder
        begin(work, identity)
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
    summary["view"] = config.view
    summary["labels"] = identity["labels"]
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
