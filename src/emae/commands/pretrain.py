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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from emae.commands.run_dir import begin, check_fresh, check_resumable, read_run_state, training_dir
from emae.config import read_options
from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError, config_error
from emae.folders.autoencoder import save_bundle
from emae.folders.files import BUNDLE_ONLY
from emae.io import expand_inputs, open_image
from emae.io.atomic import atomic_file, check_writable
from emae.io.provenance import check_not_input
from emae.io.sources import split_source
from emae.train import distributed
from emae.train.autoencoder import fit_autoencoder, fit_detector, patch_check
from emae.train.config import PretrainConfig

logger = logging.getLogger(__name__)

#: The identity file of an interrupted pretraining in ``OUT.training/``.
IDENTITY = "config.json"


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
            is_valid=patch_check(config),
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

    model, summary = fit_autoencoder(
        paths,
        normalizer,
        config,
        checkpoint=work / "checkpoint.pt",
        resume=resume,
        log_dir=work / "tensorboard",
        progress=progress,
    )
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
