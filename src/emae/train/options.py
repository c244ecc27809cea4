"""The training loop's options, declared once for every config that trains a model.

Each is an annotated type carrying its bounds and its one line of documentation;
:class:`~emae.train.config.PretrainConfig` and :class:`~emae.classify.config.FinetuneConfig`
give them their own defaults (``steps: Steps = 2000``) and nothing else.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

Steps = Annotated[int, Field(ge=1, description="Optimizer steps; patches seen = steps x batch.")]
BatchSize = Annotated[int, Field(ge=1, le=4096, description="Patches per step.")]
LearningRate = Annotated[float, Field(gt=0, le=1, description="Peak learning rate (AdamW).")]
WeightDecay = Annotated[float, Field(ge=0, description="AdamW weight decay.")]
WarmupSteps = Annotated[int, Field(ge=0, description="Linear learning-rate warm-up steps.")]
ValEvery = Annotated[int, Field(ge=1, description="Validate and log every N steps.")]
Patience = Annotated[int, Field(ge=0, description="Stop after N validations without gain; 0: off.")]
Seed = Annotated[int, Field(ge=0, description="Seed of every random draw of the run.")]
Device = Annotated[str, Field(description="auto, cpu, cuda, cuda:N or mps.")]
Precision = Annotated[Literal["auto", "fp32", "bf16"], Field(description="Autocast dtype.")]
TensorBoard = Annotated[bool, Field(description="Write TensorBoard logs to OUT/tensorboard.")]
