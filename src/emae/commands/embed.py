"""``emae embed``: one vector per patch of images, volumes, a labels CSV or detections, as Parquet.

The patches (:mod:`emae.latent.plan`) are read part by part, turned into vectors by the model's
encoder (:mod:`emae.latent.vectors`), given their anomaly score when the model folder holds one,
and written as one Parquet file per part (:mod:`emae.io.embedding`). Memory holds one part; a
stopped run continues with the parts not written when the same command is run again (another
command over the same output is refused unless ``overwrite``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from emae.anomaly.detector import AutoencoderDetector
from emae.data.labels import load_labels
from emae.errors import EmaeError, config_error
from emae.folders.autoencoder import load_bundle
from emae.folders.files import CONFIG, read_json
from emae.io import expand_inputs, open_image
from emae.io.atomic import atomic_file, check_writable
from emae.io.embedding import DONE, META, is_embedding, part_path, pyarrow_modules, write_part
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

logger = logging.getLogger(__name__)


def model_identity(model: str | Path) -> dict[str, str]:
    """Which trained model a vector came from: its folder and the sha256 of its weights."""
    header = read_json(Path(model) / CONFIG)
    sums = header.get("checksums", {}) if isinstance(header, dict) else {}
    return {
        "path": str(Path(model).resolve()),
        "weights_sha256": str(sums.get("model.safetensors")),
    }


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


def _start(out: Path, meta: dict[str, Any], overwrite: bool) -> bool:
    """Create the store, or check it holds this run; returns whether it resumes."""
    if (out / META).is_file():
        try:
            previous = json.loads((out / META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous == meta and not overwrite:
            return True
        if not overwrite:
            raise EmaeError(f"{out} holds another embedding; pass --overwrite to replace it")
    check_writable(
        out, overwrite=overwrite, replaceable=is_embedding, kind="an embedding of emae embed"
    )
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    with atomic_file(out / META) as tmp:
        tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return False


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

    Returns
    -------
    dict
        ``out``, ``rows``, ``dims``, ``parts`` (done, skipped), ``seconds``,
        ``patches_per_s``.
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
        detector = AutoencoderDetector.from_bundle(model, device=config.device)
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
    resumed = _start(out, meta, overwrite)
    (out / DONE).unlink(missing_ok=True)
    # one model in memory: the detector's, when there is one (the same weights)
    model, normalizer = (bundle.model if detector is None else detector.model), bundle.normalizer
    del bundle
    model.to(config.device)
    written = {entry.name for entry in os.scandir(out)}  # one listing, not a check per part
    start, done, skipped, rows = time.perf_counter(), 0, 0, 0
    for k, part in enumerate(tqdm(plan, desc="embed", unit="part", disable=not progress)):
        if part_path(out, k).name in written:
            skipped += 1
            continue
        columns, patches = read_part(part, images, sources, patch, config.input)
        vectors = patch_vectors(
            model,
            normalizer,
            patches,
            vector=config.vector,
            batch_size=config.batch_size,
        )
        if detector is not None:
            columns["anomaly"] = detector.anomaly_score(patches).tolist()
        write_part(out, k, columns, vectors)
        done, rows = done + 1, rows + len(vectors)
    seconds = time.perf_counter() - start
    total = sum(part_size(part, images, patch) for part in plan)
    summary = {
        "out": str(out),
        "rows": total,
        "dims": dims,
        "parts": {"done": done, "skipped": skipped},
        "resumed": resumed,
        "seconds": round(seconds, 3),
        "patches_per_s": round(rows / seconds, 1) if seconds > 0 else None,
    }
    with atomic_file(out / DONE, overwrite=True) as tmp:
        tmp.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    logger.info("%d rows of %d values in %s", total, dims, out)
    return summary
