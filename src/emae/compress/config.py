"""The compression step of ``emae pipeline``: codecs at several qualities, applied to a volume."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from emae.train.config import PretrainConfig


class CompressSettings(BaseModel):
    """One codec per ``lambdas`` value, pretrained on the unlabeled images with ``codec``'s
    options, each compressing and decompressing the pipeline's ``detect_input``."""

    model_config = ConfigDict(extra="forbid")

    lambdas: list[float] = Field(
        default_factory=lambda: [0.002, 0.006, 0.02],
        min_length=1,
        description="Quality levels: the rate-distortion weight of each codec.",
    )
    codec: PretrainConfig = Field(
        default_factory=lambda: PretrainConfig(model="codec"),
        description="Options of emae pretrain for the codecs (model: codec).",
    )
    chunk: int = Field(512, ge=16, le=8192, description="Side of the coded chunks.")

    @field_validator("lambdas")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        if any(v <= 0 for v in values):
            raise ValueError(f"lambdas must be > 0, got {values}")
        return sorted(set(values))

    @field_validator("codec", mode="before")
    @classmethod
    def _codec(cls, value: object) -> object:
        if isinstance(value, dict):
            if value.get("model", "codec") != "codec":
                raise ValueError(f"codec: the model is codec, not {value['model']}")
            return {**value, "model": "codec"}
        return value
