"""``emae pretrain``: learn what normal EM looks like from unlabeled images.

:func:`pretrain` streams random patches from any number of large images (never loading one
whole), fits the intensity normalization on a sample, trains a registered autoencoder with the
plain loop of :mod:`emae.train.loop`, and writes the model folder.

While training, state lives in the sibling folder ``RUN.training/`` (checkpoint, normalization,
configuration); the model folder ``RUN/`` appears only when training has finished, atomically. A
run that was interrupted continues exactly with ``resume=True`` (``--resume``).

Several GPUs (or CPU processes) train one model through torchrun, e.g.
``torchrun --nproc_per_node 4 -m emae pretrain DATA --out RUN``: ``batch_size`` is then the
batch of all processes together (see :mod:`emae.train.loop`); rank 0 prepares the training folder,
fits the anomaly score and writes the model folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from emae.anomaly.detector import DEFAULT_SCORE, AutoencoderDetector
from emae.commands.run_dir import begin, check_fresh, check_resumable, read_run_state, training_dir
from emae.config import read_options
from emae.data.dataset import RandomPatchDataset
from emae.data.normalization import PercentileNormalizer
from emae.data.sampling import sample_patches
from emae.data.validity import PatchCheck, not_empty
from emae.errors import EmaeError, config_error
from emae.folders.autoencoder import BUNDLE_ONLY, save_bundle
from emae.io import expand_inputs, open_image
from emae.io.atomic import atomic_file, check_writable
from emae.io.provenance import check_not_input
from emae.io.sources import split_source
from emae.models import available_models, build_model, model_spec
from emae.train import distributed
from emae.train.corruption import Corruption
from emae.train.loop import LoopSettings, LossFn, train_loop
from emae.train.losses import kl_weight, reconstruction_loss, vae_loss
from emae.train.tensorboard import TensorBoardLogger

logger = logging.getLogger(__name__)

#: The identity file of an interrupted pretraining in ``OUT.training/``.
IDENTITY = "config.json"

#: Seed offsets of the validation and scoring patches, so they differ from every training draw.
VALIDATION_SEED_OFFSET = 7_919
SCORING_SEED_OFFSET = 15_485_863
#: At most this many patches fit a model in closed form (PCA).
MAX_CLOSED_FORM_PATCHES = 4_096


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
    steps: int = Field(2000, ge=1, description="Optimizer steps; patches seen = steps x batch.")
    batch_size: int = Field(32, ge=1, le=4096, description="Patches per step.")
    lr: float = Field(1e-3, gt=0, le=1, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(100, ge=0, description="Linear learning-rate warm-up steps.")
    grad_clip: float = Field(1.0, ge=0, description="Gradient norm clip; 0 disables.")
    val_patches: int = Field(256, ge=1, description="Validation patches (a separate draw).")
    val_every: int = Field(250, ge=1, description="Validate and log every N steps.")
    patience: int = Field(0, ge=0, description="Stop after N validations without gain; 0: off.")
    checkpoint_every: int = Field(250, ge=1, description="Checkpoint every N steps.")
    seed: int = Field(0, ge=0, description="Seed of sampling, initialization and noise.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="Autocast dtype.")
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes.")
    low_percentile: float = Field(1.0, ge=0, lt=50, description="Maps to 0 when normalizing.")
    high_percentile: float = Field(99.0, gt=50, le=100, description="Maps to 1.")
    scale: int = Field(0, ge=0, description="Pyramid level of multiscale inputs.")
    pca_tile: int = Field(16, ge=2, le=256, description="pca: side of the tiles PCA works on.")
    score: Literal["pixel", "ssim", "feature", "error-z", "typicality"] = Field(
        DEFAULT_SCORE, description="Anomaly score fitted after training (see emae.anomaly.scores)."
    )
    reduce: Literal["mean", "max", "p99"] = Field("mean", description="Map -> patch score.")
    target_fpr: float = Field(
        0.01, ge=0, lt=1, description="Thresholds flag this fraction of normal held-out data."
    )
    score_patches: int = Field(
        512, ge=8, description="Patches drawn after training to fit the score and thresholds."
    )
    tensorboard: bool = Field(False, description="Write TensorBoard logs to RUN/tensorboard.")
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
    def _patch_fits_depth(self) -> PretrainConfig:
        if model_spec(self.model).fitted_in_closed_form:
            if self.pca_tile > self.patch_size:
                raise ValueError(
                    f"pca_tile={self.pca_tile} must not exceed patch_size={self.patch_size}"
                )
            return self
        multiple = 2 ** len(self.channels)
        if self.patch_size % multiple:
            raise ValueError(
                f"patch_size must be a multiple of {multiple} for {len(self.channels)} levels, "
                f"got patch_size={self.patch_size}"
            )
        return self

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the registered model's constructor.

        For ``pca``: tiles of ``pca_tile`` pixels and ``latent_channels`` components.
        """
        if model_spec(self.model).fitted_in_closed_form:
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
        return kwargs

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


def load_config(path: str | Path | None = None, **overrides: Any) -> PretrainConfig:
    """Read a YAML run configuration and apply flag overrides (``None`` values are ignored).

    Unknown keys are errors, in the file and in the overrides alike.
    """
    data: dict[str, Any] = read_options(path) if path is not None else {}
    source = "options" if path is None else str(path)
    flags = {k: v for k, v in overrides.items() if v is not None}
    data.update(flags)
    try:
        return PretrainConfig(**data)
    except Exception as exc:
        raise config_error(exc, source, flags) from None


def _patch_check(config: PretrainConfig) -> PatchCheck | None:
    """The padding check of patch sampling, or None when the run keeps every patch."""
    return not_empty if config.skip_padding else None


def _loss_function(config: PretrainConfig) -> LossFn:
    spec = model_spec(config.model)
    recon = reconstruction_loss(config.loss)
    corrupt = Corruption() if spec.denoising else None
    beta = spec.beta if config.beta is None else config.beta

    def loss_fn(
        model: torch.nn.Module, x: torch.Tensor, step: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if spec.variational:
            weight = kl_weight(step, beta=beta, warmup_steps=config.kl_warmup_steps)
            total, rec, kl = vae_loss(model, x, beta=weight, recon_loss=recon, generator=generator)
            return total, {"recon": rec.item(), "kl": kl.item(), "beta": weight}
        inputs = corrupt(x, generator) if corrupt is not None else x
        return recon(model(inputs), x), {}

    return loss_fn


def _build(config: PretrainConfig) -> torch.nn.Module:
    """The model, initialized from the run's seed without touching torch's global state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_model(config.model, **config.model_kwargs())


def _absolute(source: str) -> str:
    """The source with an absolute file path, so a resumed run finds the same inputs."""
    path, dataset = split_source(source)
    return str(Path(path).resolve()) + (f":{dataset}" if dataset is not None else "")


def _prepare(
    out: Path, config: PretrainConfig, sources: list[str], resume: bool, overwrite: bool
) -> tuple[Path, PercentileNormalizer]:
    """Create or check the training folder; returns it and the normalizer.

    Under torchrun, rank 0 prepares the folder while the other processes wait, then read it.
    """
    work = training_dir(out)
    if not distributed.is_main():
        distributed.barrier()
        return work, read_run_state(work / "normalization.json", PercentileNormalizer.from_dict)
    try:
        return _prepare_main(work, out, config, sources, resume, overwrite)
    finally:
        distributed.barrier()


def _prepare_main(
    work: Path, out: Path, config: PretrainConfig, sources: list[str], resume: bool, overwrite: bool
) -> tuple[Path, PercentileNormalizer]:
    """What rank 0 (or the only process) does in :func:`_prepare`."""
    identity = {"config": config.model_dump(mode="json"), "sources": sources}
    if resume:
        check_resumable(work, identity, out, IDENTITY)
        return work, read_run_state(work / "normalization.json", PercentileNormalizer.from_dict)
    for path in (out, work):
        check_not_input(path, sources)
    check_writable(out, overwrite=overwrite, **BUNDLE_ONLY)
    check_fresh(work, overwrite)
    images = [open_image(s, scale=config.scale) for s in sources]
    for image in images:
        if min(image.yx_shape) < config.patch_size:
            h, w = image.yx_shape
            raise EmaeError(
                f"{image.path}: sections of {h}x{w} are smaller than the "
                f"{config.patch_size}x{config.patch_size} training patches; pass a smaller "
                f"--patch-size or larger images"
            )
        image.check_complete()
    try:
        normalizer = PercentileNormalizer.fit(
            images,
            low=config.low_percentile,
            high=config.high_percentile,
            seed=config.seed,
            patch_size=config.patch_size,
            is_valid=_patch_check(config),
        )
    except EmaeError as exc:
        if not config.skip_padding or "valid patches" not in str(exc):
            raise
        raise EmaeError(
            f"{exc}; for objects on a black background set skip_padding: false"
        ) from None
    begin(work, identity, IDENTITY)  # only now replace an interrupted run: the inputs are good
    with atomic_file(work / "normalization.json") as tmp:
        tmp.write_text(json.dumps(normalizer.to_dict(), indent=2))
    return work, normalizer


def _fit_closed_form(
    model: torch.nn.Module,
    train: RandomPatchDataset,
    val_fn: Callable[[torch.nn.Module], float],
    config: PretrainConfig,
) -> dict[str, Any]:
    """Fit a closed-form model (PCA) on the first training patches; the loop's summary keys."""
    n = min(len(train), MAX_CLOSED_FORM_PATCHES)
    logger.info("fitting %s on %d patches of %dx%d", config.model, n, *(config.patch_size,) * 2)
    began = time.perf_counter()
    patches = torch.stack([train[i] for i in range(n)])  # (n, 1, P, P)
    model.fit_patches(patches[:, 0].numpy(), seed=config.seed)
    seconds = time.perf_counter() - began
    with torch.no_grad():
        val = float(val_fn(model.eval()))
    return {
        "history": [{"step": 0, "val_loss": val}],
        "steps_done": 0,
        "best_val": val,
        "stopped_early": False,
        "seconds": seconds,
        "samples_per_s": n / seconds if seconds > 0 else float("nan"),
        "device": "cpu",
        "precision": "fp32",
    }


def fit_detector(
    model: torch.nn.Module,
    normalizer: PercentileNormalizer,
    sources: Sequence[str],
    config: PretrainConfig,
) -> AutoencoderDetector:
    """Fit the run's anomaly score and thresholds on fresh random patches of ``sources``.

    The patches are a separate draw (seed offset :data:`SCORING_SEED_OFFSET`) of
    ``config.score_patches`` raw patches. The inputs are unlabeled, so a few of these patches
    may hold artifacts; with artifacts on a few percent of the area, the thresholds at
    ``target_fpr`` move little.
    """
    images = [open_image(s, scale=config.scale) for s in sources]
    _, patches = sample_patches(
        images,
        config.score_patches,
        config.patch_size,
        seed=config.seed + SCORING_SEED_OFFSET,
        is_valid=_patch_check(config),
    )
    logger.info("fitting the %r score and thresholds on %d patches", config.score, len(patches))
    return AutoencoderDetector(
        model,
        normalizer,
        score=config.score,
        reduce=config.reduce,
        target_fpr=config.target_fpr,
        batch_size=min(config.batch_size, 64),
        seed=config.seed,
    ).fit(patches)


def pretrain(
    sources: Sequence[str | Path],
    out: str | Path,
    config: PretrainConfig | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train an autoencoder on random patches of unlabeled images.

    Parameters
    ----------
    sources
        Files, folders or globs of 2D images or ``"ZYX"`` stacks (any format of
        :func:`emae.io.open_image`).
    out
        The model folder to create.
    config
        Run configuration; :class:`PretrainConfig` defaults when None.
    resume
        Continue the interrupted run of ``out`` (same configuration and inputs).
    overwrite
        Replace an existing model folder or interrupted run.
    progress
        Show a progress bar.

    Returns
    -------
    dict
        The training summary (also saved as ``out/training.json``): history, timings, device.
    """
    config = config or PretrainConfig()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    out = Path(out)
    paths = [_absolute(s) for s in expand_inputs([str(s) for s in sources])]
    if not paths:
        raise EmaeError(f"no input images found in {', '.join(map(str, sources))}")
    work, normalizer = _prepare(out, config, paths, resume, overwrite)

    n_train = config.steps * config.batch_size
    train = RandomPatchDataset(
        paths,
        config.patch_size,
        n_train,
        seed=config.seed,
        transform=normalizer,
        scale=config.scale,
        is_valid=_patch_check(config),
    )
    val_set = RandomPatchDataset(
        paths,
        config.patch_size,
        config.val_patches,
        seed=config.seed + VALIDATION_SEED_OFFSET,
        transform=normalizer,
        scale=config.scale,
        is_valid=_patch_check(config),
    )
    val = torch.stack([val_set[i] for i in range(len(val_set))])
    recon = reconstruction_loss(config.loss)

    def val_fn(model: torch.nn.Module) -> float:
        device = next(iter(model.state_dict().values())).device  # PCA has buffers only
        losses = [float(recon(model(b.to(device)), b.to(device))) for b in val.split(64)]
        return sum(losses) / len(losses)

    model = _build(config)
    if model_spec(config.model).fitted_in_closed_form:
        summary = _fit_closed_form(model, train, val_fn, config)
    else:
        logger.info(
            "training %s for %d steps of %d patches (%d patches of %dx%d) from %d input(s)",
            config.model,
            config.steps,
            config.batch_size,
            n_train,
            config.patch_size,
            config.patch_size,
            len(paths),
        )
        board = None
        if config.tensorboard:
            board = TensorBoardLogger(work / "tensorboard", panels=val[:4])
        try:
            summary = train_loop(
                model,
                _loss_function(config),
                train,
                config.loop_settings(progress),
                val_fn=val_fn,
                checkpoint=work / "checkpoint.pt",
                resume=resume,
                on_log=board,
            )
        finally:
            if board is not None:
                board.close()
    summary["sources"] = paths
    if not distributed.is_main():
        return summary  # rank 0 fits the score and writes the model folder
    model.to("cpu", memory_format=torch.contiguous_format).eval()
    detector = fit_detector(model, normalizer, paths, config)
    summary["threshold"] = detector.threshold_record_.to_dict()
    summary["pixel_threshold"] = detector.pixel_threshold_.to_dict()
    save_bundle(
        out,
        model=model,
        model_name=config.model,
        model_kwargs=config.model_kwargs(),
        normalizer=normalizer,
        config=config.model_dump(mode="json"),
        overwrite=overwrite,
        **detector.bundle_parts(),
    )
    with atomic_file(out / "training.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=float))
    if (work / "tensorboard").is_dir():
        shutil.move(work / "tensorboard", out / "tensorboard")
    shutil.rmtree(work)
    return summary
