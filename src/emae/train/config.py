"""The options of an autoencoder's pretraining: one shallow pydantic model.

:class:`PretrainConfig` is what ``emae pretrain --config`` reads, what the pipeline's
``pretrain:`` section holds, and what :func:`emae.train.autoencoder.fit_autoencoder` takes.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from emae.anomaly.detector import DEFAULT_SCORE
from emae.models import available_models, model_spec
from emae.train.loop import LoopSettings
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


class PretrainConfig(BaseModel):
    """Everything that defines a pretraining run; one flat level, validated at the edge.

    The defaults train on 64,000 patches of 64 x 64 (2,000 steps of 32); the run logs its own
    time estimate after its first steps.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field("conv-ae", description="Registered model name (see `emae.models`).")
    patch_size: int = Field(64, ge=16, le=1024, description="Side of the square patches.")
    channels: tuple[int, ...] = Field((32, 64, 128), description="Channels per encoder level.")
    latent: Literal["spatial", "vector"] = Field("spatial", description="Latent map or vector.")
    latent_channels: int = Field(16, ge=1, le=1024, description="Channels of a spatial latent.")
    latent_dim: int = Field(128, ge=1, le=65536, description="Size of a vector latent.")
    norm: Literal["batch", "group", "none"] = Field(
        "batch", description="Normalization; batch keeps inference local and tile-independent."
    )
    loss: Literal["mse", "l1", "ssim", "mse+ssim"] = Field("mse", description="Reconstruction.")
    beta: float | None = Field(None, ge=0, description="KL weight; None: the model's default.")
    kl_warmup_steps: int = Field(500, ge=0, description="Steps of linear KL warm-up (VAEs).")
    rd_lambda: float = Field(
        0.01,
        gt=0,
        le=100,
        description="codec: weight of the distortion in R + lambda * 255^2 * MSE; larger gives "
        "higher quality and more bits per pixel.",
    )
    steps: Steps = 2000
    batch_size: BatchSize = 32
    lr: LearningRate = 1e-3
    weight_decay: WeightDecay = 1e-4
    warmup_steps: WarmupSteps = 100
    grad_clip: float = Field(1.0, ge=0, description="Gradient norm clip; 0 disables.")
    val_patches: int = Field(256, ge=1, description="Validation patches (a separate draw).")
    val_every: ValEvery = 250
    patience: Patience = 0
    checkpoint_every: int = Field(250, ge=1, description="Checkpoint every N steps.")
    seed: Seed = 0
    device: Device = "auto"
    precision: Precision = "auto"
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes.")
    low_percentile: float = Field(1.0, ge=0, lt=50, description="Maps to 0 when normalizing.")
    high_percentile: float = Field(99.0, gt=50, le=100, description="Maps to 1.")
    scale: int = Field(0, ge=0, description="Pyramid level of multiscale inputs.")
    pca_tile: int = Field(16, ge=2, le=256, description="pca: side of the tiles PCA works on.")
    score: Literal["pixel", "ssim", "feature", "error-z", "typicality", "discriminative"] = Field(
        DEFAULT_SCORE, description="Anomaly score fitted after training (see emae.anomaly.scores)."
    )
    reduce: Literal["mean", "max", "p99"] = Field("mean", description="Map -> patch score.")
    target_fpr: float = Field(
        0.01, ge=0, lt=1, description="Thresholds flag this fraction of normal held-out data."
    )
    score_patches: int = Field(
        512, ge=8, description="Patches drawn after training to fit the score and thresholds."
    )
    score_steps: int = Field(
        800,
        ge=1,
        description="discriminative: training steps of the segmenter of drawn artifacts.",
    )
    tensorboard: TensorBoard = False
    skip_padding: bool = Field(
        True,
        description="Skip patches that are mostly 0 or the dtype maximum (scan padding); turn "
        "off for images on a black background, e.g. isolated particles.",
    )
    threads: int | None = Field(
        None, ge=1, le=1024, description="CPU threads of torch; None: torch's default."
    )

    @field_validator("model")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in available_models():
            raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}")
        return name

    @model_validator(mode="after")
    def _model_defaults(self) -> PretrainConfig:
        """Apply the registered model's own defaults to the options the run did not set."""
        for name, value in model_spec(self.model).defaults.items():
            if name not in self.model_fields_set:
                setattr(self, name, value)
        return self

    @model_validator(mode="after")
    def _patch_fits_depth(self) -> PretrainConfig:
        if model_spec(self.model).fitted_in_closed_form:
            if self.pca_tile > self.patch_size:
                raise ValueError(
                    f"pca_tile={self.pca_tile} must not exceed patch_size={self.patch_size}"
                )
            return self
        spec = model_spec(self.model)
        if (spec.blind_spot or spec.inpainting) and self.loss not in ("mse", "l1"):
            raise ValueError(
                f"model {self.model!r} scores masked pixels only: loss must be mse or l1, "
                f"got {self.loss!r}"
            )
        if "latent" not in inspect.signature(spec.build).parameters and self.latent != "spatial":
            raise ValueError(f"model {self.model!r} has a spatial bottleneck only, not a vector")
        multiple = 2 ** len(self.channels)
        if self.patch_size % multiple:
            raise ValueError(
                f"patch_size must be a multiple of {multiple} for {len(self.channels)} levels, "
                f"got patch_size={self.patch_size}"
            )
        return self

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the registered model's constructor.

        For ``pca``: tiles of ``pca_tile`` pixels and ``latent_channels`` components; a model
        without a vector latent (the U-Net) gets no latent options.
        """
        spec = model_spec(self.model)
        if spec.fitted_in_closed_form:
            return {"patch_size": self.pca_tile, "n_components": self.latent_channels}
        kwargs: dict[str, Any] = {
            "channels": tuple(self.channels),
            "norm": self.norm,
            "latent": self.latent,
            "latent_channels": self.latent_channels,
            "latent_dim": self.latent_dim,
        }
        if self.latent == "vector":
            kwargs["patch_size"] = self.patch_size
        accepted = inspect.signature(spec.build).parameters
        return {k: v for k, v in kwargs.items() if k in accepted}

    def loop_settings(self, progress: bool = True) -> LoopSettings:
        """The loop's settings: plain keyword arguments, made once here."""
        return LoopSettings(
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            warmup_steps=self.warmup_steps,
            grad_clip=self.grad_clip,
            val_every=self.val_every,
            patience=self.patience,
            checkpoint_every=self.checkpoint_every,
            seed=self.seed,
            num_workers=self.num_workers,
            device=self.device,
            precision=self.precision,
            progress=progress,
        )
