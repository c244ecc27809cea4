"""The configuration of ``emae pipeline``: the whole job on one's own data, in one YAML file.

One shallow pydantic model. Inputs are files, folders or globs; relative paths are resolved
against the folder of the YAML file, so a configuration travels with the data it describes.
``pretrain`` and ``finetune`` hold the options of :class:`~emae.train.config.PretrainConfig` and
:class:`~emae.classify.config.FinetuneConfig` (validated here, at the edge, so a typo fails before
any training starts). ``configs/demo.yaml`` is the documented example; it describes the folder
that ``emae sample-data`` writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from emae.classify.config import FinetuneConfig
from emae.compress.config import CompressSettings
from emae.config import read_options
from emae.data.folds import parse_budgets
from emae.errors import EmaeError, config_error
from emae.latent.config import LatentSettings
from emae.train.config import PretrainConfig


class PipelineConfig(BaseModel):
    """Inputs and settings of every pipeline step; paths already resolved (absolute)."""

    model_config = ConfigDict(extra="forbid")

    unlabeled: list[str] = Field(min_length=1, description="Images to pretrain on.")
    labels: str = Field(description="Labels CSV for fine-tuning and the comparison.")
    test_labels: str | None = Field(
        None, description="Held-out labels CSV; None: hold out groups of `labels`."
    )
    test_share: float = Field(
        0.25, gt=0, lt=1, description="Share of the label groups held out when no test_labels."
    )
    test_images: list[str] = Field(default_factory=list, description="Images to score.")
    test_masks: str | None = Field(
        None, description="Folder of ground-truth masks named as the test images (overlays)."
    )
    detect_input: str | None = Field(
        None, description="Volume to map with `emae detect`; None: skip detection."
    )
    seed: int = Field(0, ge=0, description="Seed of every step.")
    pretrain: PretrainConfig = Field(
        default_factory=PretrainConfig,
        description="PretrainConfig options (seed is set from `seed`).",
    )
    finetune: FinetuneConfig = Field(
        default_factory=FinetuneConfig,
        description="FinetuneConfig options (seed is set from `seed`).",
    )
    compare_methods: list[str] = Field(
        default_factory=lambda: ["cnn-residual", "head", "cnn-scratch", "svm-features"],
        description="Methods of the cross-validated comparison; empty: skip it.",
    )
    compare_folds: int = Field(5, ge=2, le=50, description="Folds of the comparison.")
    compare_budgets: str = Field("5,25,all", description="Labels per class, comma-separated.")
    compare_steps: int | None = Field(
        None, ge=1, description="Classifier steps per fit; None: finetune's steps."
    )
    detect_tile: int | None = Field(
        None, ge=16, description="Tile side of `emae detect`; None: chunk + 2 x overlap."
    )
    detect_chunk: int = Field(1024, ge=16, description="Chunk side of `emae detect`.")
    detect_workers: int | None = Field(None, ge=1, description="Dask workers; None: auto.")
    denoise: PretrainConfig | None = Field(
        None,
        description="Options of a blind-spot denoiser pretrained on `unlabeled`, which then "
        "denoises `detect_input`; None: no denoising.",
    )
    denoise_noise: str = Field(
        "auto",
        description="How the denoiser's prediction is combined with each pixel (`emae denoise "
        "--noise`): auto, fit, off or A,B[,FLOOR].",
    )
    inpaint: PretrainConfig | None = Field(
        None,
        description="Options of an inpainting-ae pretrained on `unlabeled`, with which "
        "`emae repair` fills what the autoencoder finds in `detect_input`; None: no repair.",
    )
    repair_margin: int = Field(8, ge=0, le=64, description="Pixels added around each hole.")
    latent: LatentSettings | None = Field(
        None,
        description="Latent map of the unlabeled images (emae embed, emae map), the labeled and "
        "test patches placed in it, and emae generate; None: skip.",
    )
    compress: CompressSettings | None = Field(
        None,
        description="Codecs pretrained on `unlabeled` at several qualities, each compressing and "
        "decompressing `detect_input` (emae compress, emae decompress); None: skip.",
    )

    @field_validator("denoise_noise")
    @classmethod
    def _noise(cls, value: str) -> str:
        from emae.restore.noise import NoiseModel

        if value not in ("auto", "fit", "off"):
            try:
                NoiseModel.parse(value)
            except EmaeError as error:
                raise ValueError(str(error)) from None
        return value

    @field_validator("compare_budgets")
    @classmethod
    def _budgets(cls, text: str) -> str:
        try:
            parse_budgets(text)
        except EmaeError as exc:
            raise ValueError(str(exc)) from None
        return text

    @model_validator(mode="after")
    def _sub_configs(self) -> PipelineConfig:
        from emae.commands.compare import METHODS

        # Every step runs with the pipeline's seed.
        self.pretrain = self.pretrain.model_copy(update={"seed": self.seed})
        self.finetune = self.finetune.model_copy(update={"seed": self.seed})
        for name, model in (("denoise", "blind-spot"), ("inpaint", "inpainting-ae")):
            options = getattr(self, name)
            if options is not None:
                if options.model not in ("conv-ae", model):  # conv-ae: the field's default
                    raise ValueError(f"{name}: the model is {model}, not {options.model}")
                fixed = PretrainConfig(
                    **{**options.model_dump(), "model": model, "seed": self.seed}
                )
                setattr(self, name, fixed)
        if self.latent is not None:
            self.latent = self.latent.model_copy(
                update={
                    "embed": self.latent.embed.model_copy(update={"seed": self.seed}),
                    "map": self.latent.map.model_copy(update={"seed": self.seed}),
                }
            )
        if self.latent is not None and self.latent.generator is not None:
            generator = self.latent.generator
            if generator.model not in ("conv-ae", "vae", "beta-vae"):
                raise ValueError(f"latent.generator: a vae or beta-vae, not {generator.model}")
            model = "beta-vae" if generator.model == "conv-ae" else generator.model
            fixed = PretrainConfig(**{**generator.model_dump(), "model": model, "seed": self.seed})
            self.latent = self.latent.model_copy(update={"generator": fixed})
        if (self.denoise or self.inpaint) and self.detect_input is None:
            raise ValueError("denoise and inpaint restore `detect_input`, which is not set")
        if self.compress is not None and self.detect_input is None:
            raise ValueError("compress codes `detect_input`, which is not set")
        unknown = sorted(set(self.compare_methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown compare methods {unknown}; available: {list(METHODS)}")
        return self

    def pretrain_config(self) -> PretrainConfig:
        """The :class:`~emae.train.config.PretrainConfig` of the pretrain step."""
        return self.pretrain

    def finetune_config(self, steps: int | None = None) -> FinetuneConfig:
        """The :class:`~emae.classify.config.FinetuneConfig` of fine-tuning (or of ``steps``
        steps)."""
        return self.finetune if steps is None else self.finetune.model_copy(update={"steps": steps})


def _resolve(value: str, root: Path) -> str:
    """``value`` made absolute against ``root``; ``file.h5:/key`` and globs keep their tail."""
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else root / path)


PATH_FIELDS = ("labels", "test_labels", "test_masks", "detect_input")
LIST_FIELDS = ("unlabeled", "test_images")


def resolve_paths(data: dict[str, Any], root: Path) -> dict[str, Any]:
    """A copy of raw configuration ``data`` with every input path made absolute."""
    out = dict(data)
    for name in PATH_FIELDS:
        if isinstance(out.get(name), str):
            out[name] = _resolve(out[name], root)
    for name in LIST_FIELDS:
        value = out.get(name)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            out[name] = [_resolve(v, root) if isinstance(v, str) else v for v in value]
    return out


def load_pipeline_config(
    path: str | Path, *, root: str | Path | None = None, **overrides: Any
) -> PipelineConfig:
    """Read a pipeline YAML file; relative paths are resolved against ``root``.

    Parameters
    ----------
    path
        The YAML file.
    root
        Folder that relative input paths are relative to; default the YAML file's folder.
    **overrides
        Option values that replace the file's (``None`` ignored).

    Returns
    -------
    PipelineConfig
        The validated configuration; unknown keys are errors, named with the file.
    """
    path = Path(path)
    data = read_options(path)
    data.update({k: v for k, v in overrides.items() if v is not None})
    data = resolve_paths(data, Path(root) if root is not None else path.resolve().parent)
    try:
        return PipelineConfig(**data)
    except Exception as exc:
        raise config_error(exc, str(path)) from None
