"""``emae embed``: one vector per patch of images, volumes, a labels CSV or detections, as Parquet.

The patches (:mod:`emae.latent.plan`) are read part by part, turned into vectors by the model's
encoder (:mod:`emae.latent.vectors`), given their anomaly score when the model folder holds one,
and written as one Parquet file per part (:mod:`emae.io.embedding`). Each part is one task
(:func:`embed_part`), run in this process by default, or on a Dask cluster like the chunks of
``emae detect`` (``workers`` local processes, or an existing ``scheduler``; the same
:class:`~emae.volume.tasks.Runner`): the model is shipped to the workers once and each worker
writes its parts. Memory holds one part per task; a stopped run continues with the parts not
written when the same command is run again (another command over the same output is refused
unless ``overwrite``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emae.anomaly.detector import AutoencoderDetector
from emae.data.labels import load_labels
from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError, config_error
from emae.folders.autoencoder import load_bundle
from emae.folders.files import CONFIG, read_json
from emae.io import expand_inputs, open_image
from emae.io.atomic import atomic_file
from emae.io.embedding import DONE, part_path, pyarrow_modules, start_store, write_part
from emae.io.image import Image
from emae.io.provenance import check_not_input
from emae.latent.config import EmbedConfig
from emae.latent.plan import (
    Part,
    detections_plan,
    grid_plan,
    labels_plan,
    part_size,
    read_detections,
    read_part,
    sample_plan,
)
from emae.latent.vectors import patch_vectors, vector_size
from emae.models.registry import model_spec
from emae.runtime import model_device, select_precision
from emae.volume.chunks import chunk_device
from emae.volume.tasks import Runner, device_for_run

logger = logging.getLogger(__name__)


def model_identity(model: str | Path) -> dict[str, str]:
    """Which trained model a vector came from: its folder and the sha256 of its weights."""
    header = read_json(Path(model) / CONFIG)
    sums = header.get("checksums", {}) if isinstance(header, dict) else {}
    return {
        "path": str(Path(model).resolve()),
        "weights_sha256": str(sums.get("model.safetensors")),
    }


@dataclass(frozen=True)
class EmbedJob:
    """What every part's task shares (shipped to the workers once).

    Attributes
    ----------
    out
        The store folder.
    sources
        The image inputs, in plan order (opened by each process that runs a part).
    patch
        The model's patch size.
    config
        The run's options.
    model, normalizer
        The autoencoder and the intensity normalization of its inputs.
    detector
        The model's anomaly detector (the same weights), or None for no anomaly column.
    threads
        Torch threads of the process running a part (None: leave as it is).
    device, gpus
        Where the parts' forward passes run: as :func:`emae.volume.chunks.chunk_device` picks
        from them (a local cluster over ``gpus`` GPUs gives worker ``k`` GPU ``k % gpus``). The
        model is shipped on the CPU and moved there by the process that runs a part.
    """

    out: Path
    sources: tuple[str, ...]
    patch: int
    config: EmbedConfig
    model: nn.Module
    normalizer: PercentileNormalizer
    detector: AutoencoderDetector | None
    threads: int | None = None
    device: str = "cpu"
    gpus: int = 0


@functools.lru_cache(maxsize=4)
def _opened(sources: tuple[str, ...]) -> list[Image]:
    """The images of a run, opened once per worker process (lazy readers: no pixels read)."""
    return [open_image(s) for s in sources]


def embed_part(k: int, part: Part, job: EmbedJob, images: Sequence[Image] | None = None) -> int:
    """Read, embed, score and write part ``k`` of the plan; returns its number of rows.

    ``images`` are the opened ``job.sources`` (None: opened here, once per process).
    """
    if job.threads:
        torch.set_num_threads(job.threads)
    device = chunk_device(job.device, job.gpus)
    if device.startswith("cuda:"):
        torch.cuda.set_device(int(device.removeprefix("cuda:")))
    if model_device(job.model) != torch.device(device):
        job.model.to(device)  # this process's copy (or, in this process, the run's model)
    if job.detector is not None:
        job.detector.device = device
    images = _opened(job.sources) if images is None else images
    columns, patches = read_part(part, images, job.sources, job.patch, job.config.input)
    vectors = patch_vectors(
        job.model,
        job.normalizer,
        patches,
        vector=job.config.vector,
        batch_size=job.config.batch_size,
        precision=job.config.precision,
    )
    if job.detector is not None:
        columns["anomaly"] = job.detector.anomaly_score(patches).tolist()
    write_part(job.out, k, columns, vectors)
    return len(vectors)


def _plan(
    images: list[Any], sources: list[str], patch: int, config: EmbedConfig, labels: Any, det: Any
) -> list[Part]:
    if labels is not None:
        return labels_plan(labels, patch, config.part_rows)
    if det is not None:
        return detections_plan(images[0], det, patch, config.part_rows)
    if config.sample is not None:
        return sample_plan(images, patch, config.sample, config.seed, config.part_rows)
    return grid_plan(images, patch, config.stride or patch, config.part_rows)


def embed(
    model: str | Path,
    inputs: Sequence[str | Path] = (),
    out: str | Path = "embedding.parquet",
    *,
    labels: str | Path | None = None,
    detections: str | Path | None = None,
    config: EmbedConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    workers: int | None = None,
    scheduler: str | None = None,
    threads: int | None = None,
    retries: int = 2,
    **options: Any,
) -> dict[str, Any]:
    """Write the vectors of patches to an embedding store.

    Parameters
    ----------
    model
        A model folder of ``emae pretrain``.
    inputs
        Images or volumes (any reader; globs allowed): a grid or a random sample of patches.
        With ``detections``, the one image that was detected on.
    out
        The store folder (by convention ``NAME.parquet``).
    labels
        A labels CSV instead of ``inputs``: one row per sample, with its label and features.
    detections
        ``OUT_detections.csv`` of ``emae detect``: one patch centred on each detection.
    config, **options
        :class:`~emae.latent.config.EmbedConfig`, or its fields as keywords.
    overwrite
        Replace an existing embedding (nothing else is ever replaced).
    workers, scheduler
        Where the parts run: by default (neither) in this process; ``workers`` local Dask
        worker processes; or the Dask cluster at ``scheduler`` (``"synchronous"``: this
        process). Not part of the run's settings: a run continues on any of them.
    threads
        Torch threads per worker (default: the CPU cores shared among local workers; in this
        process, torch's setting).
    retries
        Retries of a failing part before the run stops with its error (the parts written
        stay; the same command continues).

    Returns
    -------
    dict
        ``out``, ``rows``, ``dims``, ``parts`` (done, skipped), ``seconds`` (with the
        cluster's start), ``startup_seconds`` (starting the cluster and shipping the model),
        ``patches_per_s`` (the parts written this time over ``seconds``).
    """
    try:
        config = config or EmbedConfig(**options)
    except Exception as exc:
        raise config_error(exc, "options", set(options)) from None
    if (labels is None) == (not inputs) or (detections is not None and len(inputs) != 1):
        raise EmaeError(
            "give image inputs, or a labels CSV without inputs, or detections with one image"
        )
    if config.sample is not None and config.stride is not None:
        raise EmaeError("give --stride (a grid) or --sample (random patches), not both")
    pyarrow_modules()
    out = Path(out)
    bundle = load_bundle(model)
    spec = model_spec(bundle.model_name)
    if config.vector == "residual" and (spec.inpainting or spec.codec):
        raise EmaeError(
            f"--vector residual needs an autoencoder of the image alone; {model} holds "
            f"{bundle.model_name!r}, an inpainting model or a codec (use --vector levels)"
        )
    patch = int(bundle.config.get("patch_size", 64))
    sources = expand_inputs(inputs) if inputs else []
    check_not_input(out, [*sources, model, labels, detections])
    images = [open_image(s) for s in sources]
    labeled = load_labels(labels, patch_size=patch) if labels is not None else None
    det = read_detections(detections) if detections is not None else None
    plan = _plan(images, sources, patch, config, labeled, det)
    dims = vector_size(bundle.model, config.vector, patch)
    detector = None
    if config.anomaly and "score" in bundle.scoring and bundle.threshold is not None:
        detector = AutoencoderDetector.from_bundle(  # on the CPU until a part moves it
            model, device="cpu", precision=config.precision
        )
    meta = {
        "model": model_identity(model),
        "vector": config.vector,
        "patch_size": patch,
        "dims": dims,
        "n_parts": len(plan),
        "inputs": sources,
        "labels": None if labels is None else str(Path(labels).resolve()),
        "detections": None if detections is None else str(Path(detections).resolve()),
        "anomaly": None if detector is None else detector.score_name,
        "config": config.model_dump(mode="json"),
    }
    resumed = start_store(out, meta, overwrite)
    (out / DONE).unlink(missing_ok=True)
    # one model in memory: the detector's, when there is one (the same weights)
    model, normalizer = (bundle.model if detector is None else detector.model), bundle.normalizer
    del bundle
    written = {entry.name for entry in os.scandir(out)}  # one listing, not a check per part
    todo = [(k, part) for k, part in enumerate(plan) if part_path(out, k).name not in written]
    if scheduler is None and workers is None:
        scheduler = "synchronous"
    device = device_for_run(config.device, scheduler)
    if scheduler == "synchronous" or not scheduler:  # a bad precision, before any part
        select_precision(torch.device(device), config.precision)
    job = EmbedJob(out, tuple(sources), patch, config, model, normalizer, detector)
    start = time.perf_counter()
    with Runner(
        workers=workers,
        scheduler=scheduler,
        device=config.device,
        threads=threads,
        retries=retries,
        progress=progress,
    ) as runner:
        job = replace(job, threads=runner.threads, device=device, gpus=runner.gpus)
        if runner.client is None:
            tasks = [(k, embed_part, (k, part, job, images)) for k, part in todo]
        else:
            shared = runner.share(job)
            tasks = [(k, embed_part, (k, part, shared)) for k, part in todo]
        failed = runner.run(tasks, desc="embed", total=len(todo))
    if failed:
        k, error = min(failed)
        raise EmaeError(
            f"{len(failed)} of {len(todo)} parts failed, first part {k}: {error}; the other "
            f"parts are written: run the same command again to continue"
        )
    done, skipped = len(todo), len(plan) - len(todo)
    rows = sum(part_size(part, images, patch) for _, part in todo)
    seconds = time.perf_counter() - start
    total = sum(part_size(part, images, patch) for part in plan)
    summary = {
        "out": str(out),
        "rows": total,
        "dims": dims,
        "parts": {"done": done, "skipped": skipped},
        "resumed": resumed,
        "seconds": round(seconds, 3),
        "startup_seconds": round(runner.startup_seconds, 3),
        "patches_per_s": round(rows / seconds, 1) if seconds > 0 else None,
    }
    with atomic_file(out / DONE, overwrite=True) as tmp:
        tmp.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    logger.info("%d rows of %d values in %s", total, dims, out)
    return summary
