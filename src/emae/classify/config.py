"""The options of a classifier's training: one shallow pydantic model, validated at the edge.

:class:`FinetuneConfig` is what ``emae finetune --config`` reads, what the pipeline's
``finetune:`` section holds, and what :func:`emae.classify.training.train_classifier` and
:class:`emae.classify.estimator.PatchClassifier` take.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from emae.errors import EmaeError
from emae.train.options import (
    BatchSize,
    Device,
    LearningRate,
    Patience,
    Precision,
    Seed,
    Steps,
    TensorBoard,
    ValEvery,
    WarmupSteps,
    WeightDecay,
)

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
    view: Literal["auto", "image", "residual", "both"] = Field(
        "auto",
        description="What the classifier looks at. image: the patch (through the pretrained "
        "encoder, frozen or fine-tuned as freeze says, or a CNN from scratch without one); "
        "residual: what the pretrained autoencoder could not reconstruct, through a CNN "
        "trained on the labels (emae.models.residual); both: the patch and its residual as "
        "two channels; auto (default): residual for patch labels with a pretrained "
        "autoencoder (the best measured on EM artifacts, docs/benchmarks.md), image otherwise.",
    )
    context: int = Field(
        16,
        ge=0,
        le=256,
        description="views residual and both: pixels of surroundings on every side of a "
        "patch that the autoencoder sees, so it reconstructs the border from real tissue.",
    )
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout before the last 1x1 conv.")
    label_smoothing: float = Field(0.05, ge=0, lt=1, description="Cross-entropy smoothing.")
    steps: Steps = 400
    batch_size: BatchSize = 32
    lr: LearningRate = 3e-3  # of the head; a fine-tuned encoder learns at encoder_lr_scale
    weight_decay: WeightDecay = 1e-3
    warmup_steps: WarmupSteps = 20
    seed: Seed = 0
    device: Device = "auto"
    precision: Precision = "auto"
    clean_class: str = Field("clean", description="The artifact-free class (balance artificial).")
    scratch_channels: tuple[int, ...] = Field(
        (32, 64, 128), description="Encoder channels when training from scratch (no encoder)."
    )
    patch_size: int | None = Field(
        None, ge=8, description="Patch side; default the encoder's training patch size."
    )
    tensorboard: TensorBoard = False
    val_fraction: float = Field(
        0.0, ge=0, le=0.5, description="Stratified share of labels held out for validation."
    )
    patience: Patience = 0
    val_every: ValEvery = 50
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

    def resolved(self, *, pretrained: bool, kind: str = "patch") -> FinetuneConfig:
        """This configuration with ``view="auto"`` made concrete: ``"residual"`` for patch
        labels (``kind="patch"``) with a pretrained autoencoder, ``"image"`` otherwise."""
        if self.view != "auto":
            return self
        view = "residual" if pretrained and kind == "patch" else "image"
        return self.model_copy(update={"view": view})

    def input_size(self, patch_size: int) -> int:
        """Side of the patches to read for ``patch_size``: with the context of a residual view
        (``view`` must be resolved, see :meth:`resolved`)."""
        if self.view == "auto":
            raise EmaeError("resolve view 'auto' first (FinetuneConfig.resolved)")
        return patch_size + 2 * (self.context if self.view != "image" else 0)
