"""The options of a classifier's training: one shallow pydantic model, validated at the edge.

:class:`FinetuneConfig` is what ``emae finetune --config`` reads, what the pipeline's
``finetune:`` section holds, and what :func:`emae.classify.training.train_classifier` and
:class:`emae.classify.estimator.PatchClassifier` take.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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
