"""Fitting an autoencoder run on unlabeled images, in memory: no folders, no files.

:func:`fit_autoencoder` streams random patches from any number of large images (never loading
one whole), trains the registered model with the plain loop of :mod:`emae.train.loop` (or fits
it in closed form, PCA) and returns it with the training summary; :func:`fit_detector` then
fits its anomaly score and thresholds on a separate draw of patches. ``emae pretrain``
(:mod:`emae.commands.pretrain`) adds the run folder, resume and the model folder around them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from emae.anomaly.detector import AutoencoderDetector
from emae.data.dataset import RandomPatchDataset
from emae.data.normalization import PercentileNormalizer
from emae.data.sampling import sample_patches
from emae.data.validity import PatchCheck, not_empty
from emae.io import open_image
from emae.models import build_model, model_spec
from emae.runtime import model_device
from emae.train.blind_spot import blind_spot_loss
from emae.train.config import PretrainConfig
from emae.train.corruption import Corruption
from emae.train.holes import inpainting_loss
from emae.train.loop import LossFn, train_loop
from emae.train.losses import kl_weight, rate_distortion_loss, reconstruction_loss, vae_loss
from emae.train.tensorboard import TensorBoardLogger

logger = logging.getLogger(__name__)

#: Seed offsets of the validation and scoring patches, so they differ from every training draw.
VALIDATION_SEED_OFFSET = 7_919
SCORING_SEED_OFFSET = 15_485_863
#: Side of the patches the discriminative score is trained on (:func:`fit_detector`).
DISCRIMINATIVE_PATCH = 128
#: At most this many patches fit a model in closed form (PCA).
MAX_CLOSED_FORM_PATCHES = 4_096


def patch_check(config: PretrainConfig) -> PatchCheck | None:
    """The padding check of patch sampling, or None when the run keeps every patch."""
    return not_empty if config.skip_padding else None


def loss_function(config: PretrainConfig) -> LossFn:
    """The training loss of ``config``'s model: ``loss_fn(model, x, step, generator)``."""
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
        if spec.codec:
            total, bpp, mse = rate_distortion_loss(
                model, x, lmbda=config.rd_lambda, generator=generator
            )
            return total, {"bpp": bpp.item(), "mse": mse.item()}
        if spec.blind_spot:
            return blind_spot_loss(model, x, generator, loss=config.loss), {}
        if spec.inpainting:
            return inpainting_loss(model, x, generator, loss=config.loss), {}
        inputs = corrupt(x, generator) if corrupt is not None else x
        return recon(model(inputs), x), {}

    return loss_fn


def build(config: PretrainConfig) -> torch.nn.Module:
    """The model, initialized from the run's seed without touching torch's global state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_model(config.model, **config.model_kwargs())


def fit_closed_form(
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
        "fitted_patches": n,
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
    # The discriminative head learns artifacts in context: larger patches, and it trains in
    # the run's precision (its maps, like every score's, are fitted and thresholded in fp32).
    trained = config.score == "discriminative"
    size, params = config.patch_size, None
    if trained:  # 128 pixels, or the smallest image's side if less, not below the model's patch
        side = min(min(image.shape[-2:]) for image in images)
        size = max(config.patch_size, min(DISCRIMINATIVE_PATCH, side))
        params = {
            "seed": config.seed,
            "steps": config.score_steps,
            "train_precision": config.precision,
            # Artifact sizes are drawn relative to a 512-pixel section, or to smaller images.
            "reference_side": float(min(512, side)),
        }
    _, patches = sample_patches(
        images,
        config.score_patches,
        size,
        seed=config.seed + SCORING_SEED_OFFSET,
        is_valid=patch_check(config),
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
        score_params=params,
    ).fit(patches)


def fit_autoencoder(
    paths: Sequence[str],
    normalizer: PercentileNormalizer,
    config: PretrainConfig,
    *,
    checkpoint: Path | None = None,
    resume: bool = False,
    log_dir: Path | None = None,
    progress: bool = False,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train (or fit in closed form) the autoencoder of ``config`` on patches of ``paths``.

    Parameters
    ----------
    paths
        Image sources (any reader of :func:`emae.io.open_image`); patches are drawn at random
        from all of them, ``config.steps * config.batch_size`` in all, plus a validation draw.
    normalizer
        The intensity normalization fitted on the sources.
    config
        The run's options.
    checkpoint, resume
        Checkpoint file of the loop, and whether to continue from it.
    log_dir
        TensorBoard folder (with ``config.tensorboard``), or None.
    progress
        Show a progress bar.

    Returns
    -------
    (torch.nn.Module, dict)
        The model (on the device it trained on) and the loop's summary.
    """
    n_train = config.steps * config.batch_size
    train = RandomPatchDataset(
        paths,
        config.patch_size,
        n_train,
        seed=config.seed,
        transform=normalizer,
        scale=config.scale,
        is_valid=patch_check(config),
    )
    val_set = RandomPatchDataset(
        paths,
        config.patch_size,
        config.val_patches,
        seed=config.seed + VALIDATION_SEED_OFFSET,
        transform=normalizer,
        scale=config.scale,
        is_valid=patch_check(config),
    )
    val = torch.stack([val_set[i] for i in range(len(val_set))])
    recon = reconstruction_loss(config.loss)
    spec = model_spec(config.model)
    own_loss = blind_spot_loss if spec.blind_spot else inpainting_loss if spec.inpainting else None

    def val_fn(model: torch.nn.Module) -> float:
        """The mean loss on the validation patches; for a blind-spot or inpainting model its
        own loss on the same masks or holes at every evaluation (reconstructing the input is
        not its aim)."""
        device = model_device(model)
        masks = torch.Generator().manual_seed(config.seed + VALIDATION_SEED_OFFSET)
        if spec.codec:  # the loss a bitstream pays: rate of the rounded latent + distortion
            batches = [b.to(device) for b in val.split(64)]
            rd = [
                rate_distortion_loss(model, b, lmbda=config.rd_lambda, noise=False) for b in batches
            ]
            return sum(float(total) for total, _, _ in rd) / len(rd)
        losses = [
            float(own_loss(model, b.to(device), masks, loss=config.loss))
            if own_loss is not None
            else float(recon(model(b.to(device)), b.to(device)))
            for b in val.split(64)
        ]
        return sum(losses) / len(losses)

    model = build(config)
    if model_spec(config.model).fitted_in_closed_form:
        summary = fit_closed_form(model, train, val_fn, config)
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
        if config.tensorboard and log_dir is not None:
            board = TensorBoardLogger(log_dir, panels=val[:4])
        try:
            summary = train_loop(
                model,
                loss_function(config),
                train,
                config.loop_settings(progress),
                val_fn=val_fn,
                checkpoint=checkpoint,
                resume=resume,
                on_log=board,
            )
        finally:
            if board is not None:
                board.close()
    if spec.codec:
        model.entropy.update_tables()  # the fixed tables of the entropy coder
    return model, summary
