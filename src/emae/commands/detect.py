"""``emae detect``: the anomaly map of a whole volume, chunk by chunk, on Dask.

The output ``OUT.zarr`` is a map store (:mod:`emae.io.map_store`): an OME-Zarr image (NGFF
v0.4, multiscale, axes and pixel size of the input) of the anomaly map at its root (float32,
larger = more anomalous, chunked ``(1, C, C)`` per section), class probabilities below it for
classifier runs, and the detections as NGFF label images in ``labels/``
(:mod:`emae.volume.labels`); plus ``detections.csv``, ``qc.csv`` and ``qc.png`` beside it
(:mod:`emae.volume.qc`).

Every output chunk is one task: it reads its region of the input plus a halo of ``overlap`` pixels
(only the input chunks it touches), maps it with the same tiled function as ``emae score``
(:mod:`emae.volume.tiling`), writes its own region of the store, and then records its QC
numbers and component pieces (:mod:`emae.volume.components`, :mod:`emae.volume.done`). Memory
per task is bounded by the chunk and tile sizes, whatever the volume size. When a section's last
chunk is done, a section task merges its detections, builds its blocks of the pyramid levels
and replaces its chunks' records with one manifest; when every section is done, section tasks
paint the numbered detections into the label images (:mod:`emae.volume.sections`). Only the
reports (two CSV files and a figure, from the sections' manifests) are written by this process.

Tasks run on a Dask cluster: a local one with ``workers`` processes by default, an existing one
with ``scheduler="tcp://host:8786"`` (e.g. started by dask-jobqueue on SLURM), or in this process
with ``scheduler="synchronous"`` (:mod:`emae.volume.tasks`). The fitted detector is scattered to
the workers once. With a GPU (``device="auto"`` finds CUDA) the tiles' forward passes run on it,
one local worker per GPU.
Rerunning the same command skips the finished chunks and sections, so a killed run resumes and
ends with the same result; a failing chunk is retried, then reported with its coordinates while the
finished chunks are kept. An existing output made with other settings is replaced only with
``overwrite``.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emae.anomaly.detector import AutoencoderDetector
from emae.data.normalization import normalizer_for
from emae.errors import EmaeError
from emae.folders.classifier import is_classifier, load_classifier
from emae.io import open_image
from emae.io.atomic import atomic_file, check_writable
from emae.io.map_store import create_map_store
from emae.io.provenance import check_not_input
from emae.volume.chunks import Chunk, ChunkJob, Mapper, plan_chunks
from emae.volume.done import DONE, read_manifest, read_painted, scan
from emae.volume.labels import (
    MAX_PROPERTIES,
    create_label_images,
    label_names,
    write_label_properties,
)
from emae.volume.qc import write_reports
from emae.volume.sections import SectionJob, finish_section, label_section
from emae.volume.tasks import Runner, Task, chunk_tasks, device_for_run

logger = logging.getLogger(__name__)

RUN = "emae_run.json"


def _is_detect_store(path: Path) -> bool:
    """Whether ``path`` is a store that ``emae detect`` made (it holds the run's settings)."""
    return (path / RUN).is_file()


def _previous_settings(run: Path) -> Any:
    try:
        return json.loads(run.read_text())
    except (OSError, ValueError):
        return None


def _prepare(
    out: Path,
    settings: dict[str, Any],
    shape: tuple[int, ...],
    axes: str,
    chunk: int,
    overwrite: bool,
    mapper: Mapper,
    pixel_size: tuple[float | None, ...] | None,
) -> bool:
    """Create the store, or check it holds this run; returns whether it resumes.

    A store of another detection is replaced only with ``overwrite``, except one in which no
    chunk was finished (a run stopped before its first chunk, e.g. by a bad option): nothing
    of value is lost by starting it again. Anything that is not a detect store is never
    replaced.
    """
    run = out / RUN
    if run.is_file():
        if _previous_settings(run) == settings:
            return True
        started = (out / DONE).is_dir() and any(os.scandir(out / DONE))
        if started and not overwrite:
            raise EmaeError(
                f"{out} holds a detection with other settings; pass --overwrite to replace it"
            )
    else:
        check_writable(
            out,
            overwrite=overwrite,
            replaceable=_is_detect_store,
            kind="an output of emae detect",
        )
    if out.exists():
        shutil.rmtree(out)
    create_map_store(
        out,
        shape,
        axes,
        chunks=(1, chunk, chunk) if axes == "ZYX" else (chunk, chunk),
        anomaly=mapper.detector is not None,
        classes=mapper.classes,
        clean_class=mapper.clean_class,
        pixel_size=pixel_size,
    )
    (out / DONE).mkdir()
    create_label_images(
        out,
        shape,
        axes,
        (1, chunk, chunk) if axes == "ZYX" else (chunk, chunk),
        label_names(mapper.detector is not None, mapper.classes),
        pixel_size,
    )
    with atomic_file(run) as tmp:
        tmp.write_text(json.dumps(settings, indent=2))
    return False


def _raise_for_sections(failed: list[tuple[Any, str]], n_sections: int) -> None:
    """One line naming the sections whose task failed (after the chunks were all done)."""
    if failed:
        where = ", ".join(f"{key} ({err})" for key, err in failed[:5])
        raise EmaeError(
            f"{len(failed)} of {n_sections} sections could not be finished: {where}; the "
            "mapped chunks are kept; rerun to retry"
        )


def _mapper(model: str | Path, precision: str = "fp32", anomaly: bool = True) -> tuple[Mapper, int]:
    """The mapper of an autoencoder or classifier folder, and the model's patch size.

    A classifier also maps anomalies with the autoencoder it was fine-tuned from (named in its
    training summary), unless ``anomaly`` is False. That autoencoder missing (moved, deleted)
    is an error rather than an anomaly map silently left out.
    """
    if not is_classifier(model):
        detector = AutoencoderDetector.from_bundle(model, device="cpu", precision=precision)
        return Mapper(detector=detector), int(detector.model_config.get("patch_size", 1))
    classifier = load_classifier(model)
    summary_path = Path(model) / "training.json"
    encoder = (
        json.loads(summary_path.read_text()).get("encoder") if summary_path.is_file() else None
    )
    run = json.loads((Path(model) / "config.json").read_text()).get("run", {})
    detector = None
    if encoder and anomaly:
        if not Path(encoder, "scoring.json").is_file():
            raise EmaeError(
                f"{model}: the autoencoder it was fine-tuned from, {encoder}, is gone (or holds "
                "no fitted score), and the anomaly map needs it; put it back, or map the "
                "classes alone with --classes-only"
            )
        detector = AutoencoderDetector.from_bundle(encoder, device="cpu", precision=precision)
    clean = run.get("clean_class", "clean")
    return Mapper(detector, classifier, clean), classifier.model.patch_size


def _check_input(
    image: Any, mapper: Mapper, patch: int, source: str, model: str, rescale: bool
) -> dict[str, Any]:
    """Refuse inputs the model cannot map meaningfully, before anything is written.

    Sets the normalizers of ``mapper``'s models for this input (:func:`normalizer_for`) and
    returns them as plain dicts, part of the run's identity.
    """
    if min(image.yx_shape) < patch:
        raise EmaeError(
            f"{source}: sections of {image.yx_shape[0]}x{image.yx_shape[1]} are smaller than "
            f"the {patch}x{patch} patches the model {model} learned from"
        )
    image.check_complete()
    used = {}
    for name, fitted in (("detector", mapper.detector), ("classifier", mapper.classifier)):
        if fitted is not None:
            fitted.normalizer = normalizer_for(
                image, fitted.normalizer, model=f"the model {model}", rescale=rescale
            )
            used[name] = fitted.normalizer.to_dict()
    return used


def detect(
    model: str | Path,
    source: str | Path,
    out: str | Path,
    *,
    tile: int | None = None,
    overlap: int = 64,
    chunk: int = 1024,
    workers: int | None = None,
    scheduler: str | None = None,
    scale: int = 0,
    retries: int = 2,
    precision: str = "auto",
    threads: int | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    rescale: bool = False,
    pixel_size: Sequence[float] | None = None,
    classes_only: bool = False,
) -> dict[str, Any]:
    """Map a 2D image or ``"ZYX"`` volume and write ``out`` (see the module docstring).

    Parameters
    ----------
    model
        An autoencoder folder from ``emae pretrain`` (with its fitted score and threshold).
    source
        Any input :func:`emae.io.open_image` reads (TIFF, OME-Zarr, HDF5, a folder of images).
    out
        The ``.zarr`` output.
    tile, overlap
        Tiles within a chunk and their overlap; ``overlap`` is also the halo read around a
        chunk. Both in pixels. The default tile, ``chunk + 2 * overlap``, maps a chunk and its
        halo in one pass: twice the throughput of 512-pixel tiles (docs/benchmarks.md).
    chunk
        Output chunk side; one task per chunk.
    workers
        Processes of the local Dask cluster (default: one per CPU core; with ``device="cuda"``
        one per GPU, and more are spread over the GPUs in turn).
    scheduler
        Address of an existing Dask scheduler, or ``"synchronous"`` to run in this process.
    scale
        Pyramid level of a multiscale input.
    retries
        Retries of a failing chunk before it is reported.
    threads
        Torch threads per local worker (default: the CPU cores shared among the workers).
    precision
        Of the autoencoder's forward passes: ``"auto"`` (default: bf16 autocast where the CPU or
        GPU has native bf16, else fp32), ``"fp32"`` or ``"bf16"``; on sample data bf16 was 2.4x
        faster with the same pixel AUROC (docs/benchmarks.md).
    device
        Where the forward passes run: ``"auto"`` (a CUDA GPU when torch sees one, else the
        CPU), ``"cpu"``, ``"cuda"`` (one local worker per GPU) or ``"cuda:N"``. Not part of
        the run's settings: a run resumed on another device continues the same output (its
        maps then differ from the first device's by float rounding, or by about 1% where
        ``precision="auto"`` picks bf16 on one device and fp32 on the other).
    overwrite
        Replace an existing output of ``emae detect`` made with other settings (nothing
        else is ever replaced; the output may not be, contain or lie inside the input or
        the model).
    progress
        Progress bar over chunks.
    rescale
        Normalize the input by its own percentiles instead of the model's intensity values
        (:func:`emae.data.normalization.normalizer_for`): the way to map data of another dtype or
        intensity range than the training data, which is refused otherwise.
    pixel_size
        Nanometers per pixel, to use instead of (or where the input lacks) its own: one size
        for Y and X, or (Y, X), or (Z, Y, X) (:meth:`emae.io.Image.with_pixel_size`). The
        output's OME-Zarr scale is the input's pixel size, so the maps overlay the input.
    classes_only
        With a classifier, map its classes without the anomaly map of the autoencoder it was
        fine-tuned from (which is otherwise required).

    Returns
    -------
    dict
        ``seconds``, ``megapixels_per_s`` (both from the start of the work to the last chunk),
        ``startup_seconds`` (starting the Dask cluster and shipping the model; 0 with
        ``scheduler="synchronous"``), ``megapixels_per_s_after_start`` (the chunks' throughput
        once the cluster is up), ``post_chunk_seconds`` (from the last chunk to the end: the
        sections still finishing, ``phases["finishing"]``, painting the labels,
        ``phases["labels"]``, and writing the reports, ``phases["reports"]``; the sections
        finished before the last chunk count in ``seconds``), ``total_seconds``, ``chunks``
        (done, skipped, failed), ``detections``, and the paths written.
    """
    out = Path(out)
    if out.suffix != ".zarr":
        raise EmaeError(f"{out}: the output must be a .zarr store")
    check_not_input(out, [source, model])
    tile = tile or chunk + 2 * overlap
    if chunk < 1 or not 0 <= overlap < tile:
        raise EmaeError(
            f"need --chunk >= 1 and 0 <= --overlap < --tile, got chunk={chunk}, "
            f"overlap={overlap}, tile={tile}"
        )
    device = device_for_run(device, scheduler)
    image = open_image(str(source), scale=scale).with_pixel_size(pixel_size)
    mapper, patch = _mapper(model, precision, anomaly=not classes_only)
    normalizers = _check_input(image, mapper, patch, str(source), str(model), rescale)
    settings = {
        "model": str(Path(model).resolve()),
        "source": str(source),
        "shape": list(image.shape),
        "scale": scale,
        "tile": tile,
        "overlap": overlap,
        "chunk": chunk,
        "precision": precision,
        "channels": (["anomaly"] if mapper.detector else []) + list(mapper.classes),
        "pixel_size_nm": None if image.pixel_size is None else list(image.pixel_size),
        **({"normalizers": normalizers} if rescale else {}),
    }
    resumed = _prepare(
        out, settings, image.shape, image.axes, chunk, overwrite, mapper, image.pixel_size
    )
    volume = (image.n_sections, *image.yx_shape)
    sections: dict[int, list[Chunk]] = {}
    for c in plan_chunks(volume, chunk):
        sections.setdefault(c.z, []).append(c)
    # One listing of the done-state, and one per section in progress (not one file check per
    # chunk: millions on a network file system when a large run resumes).
    state = scan(out)
    todo = [c for cs in sections.values() for c in cs if not state.chunk_done(c.z, c.name)]
    n_chunks = sum(len(cs) for cs in sections.values())
    skipped = n_chunks - len(todo)
    if resumed:
        logger.info("resuming %s: %d of %d chunks already done", out, skipped, n_chunks)
    section_job = SectionJob(
        str(out),
        image.axes,
        *image.yx_shape,
        threshold=None if mapper.detector is None else mapper.detector.pixel_threshold_.value,
        classes=mapper.classes,
    )
    left = collections.Counter(c.z for c in todo)
    chunks_left = len(todo)
    counts: dict[int, int] = {}
    times = {"began": time.perf_counter()}

    def finish(z: int) -> Task:
        names = [c.name for c in sections[z]]
        return f"z{z}", finish_section, (z, names, section_job)

    def follow(key: Any, result: Any) -> list[Task]:
        nonlocal chunks_left
        if isinstance(key, Chunk):
            left[key.z] -= 1
            chunks_left -= 1
            if not chunks_left:
                times["chunks"] = time.perf_counter()
            return [finish(key.z)] if left[key.z] == 0 else []
        counts[int(key[1:])] = int(result)
        return []

    unfinished = [z for z in sections if z not in state.finished and not left[z]]
    with Runner(
        workers=workers,
        scheduler=scheduler,
        device=device,
        threads=threads,
        retries=retries,
        progress=progress,
    ) as runner:
        job = ChunkJob(
            str(source),
            scale,
            str(out),
            tile,
            overlap,
            threads=runner.threads,
            device=device,
            gpus=runner.gpus,
        )
        work = chunk_tasks(todo, runner.share(mapper) if todo else mapper, job)
        failed = runner.run(
            itertools.chain((finish(z) for z in unfinished), work),
            desc="detecting",
            total=len(todo) + len(unfinished),
            follow=follow,
        )
        times.setdefault("chunks", time.perf_counter())
        chunk_failures = [(k, e) for k, e in failed if isinstance(k, Chunk)]
        if chunk_failures:
            where = ", ".join(f"{c.name} ({err})" for c, err in chunk_failures[:5])
            raise EmaeError(
                f"{len(chunk_failures)} of {n_chunks} chunks failed after {retries} retries: "
                f"{where}; the {n_chunks - len(chunk_failures)} finished chunks are kept; rerun "
                "to retry"
            )
        _raise_for_sections(failed, len(sections))
        times["finished"] = time.perf_counter()
        for z in sections:
            if z not in counts:  # finished by an earlier run
                counts[z] = len(read_manifest(out, z, pieces=False).detections)
        starts = np.cumsum([1] + [counts[z] for z in sections])[:-1].tolist()
        first_ids = dict(zip(sections, starts, strict=True))
        paint = [
            (f"z{z}", label_section, (z, first_ids[z], section_job))
            for z in sections
            if read_painted(out, z) != first_ids[z]
        ]
        failed = runner.run(paint, desc="labels", total=len(paint))
        _raise_for_sections(failed, len(sections))
    times["labels"] = time.perf_counter()
    properties: list[dict[str, Any]] = []
    listed = collections.Counter()

    def keep(detection: dict[str, Any]) -> None:  # the first ones of each label image
        anomaly = detection["class"] == "anomaly"
        if listed[anomaly] < MAX_PROPERTIES:
            listed[anomaly] += 1
            properties.append(detection)

    manifests = ((z, read_manifest(out, z, pieces=False)) for z in sections)  # one at a time
    reports = write_reports(
        out,
        ((z, m.tiles, m.detections) for z, m in manifests),
        mapper.class_names(),
        on_detection=keep,
    )
    names = label_names(mapper.detector is not None, mapper.classes)
    reports["labels"] = [str(p) for p in write_label_properties(out, names, properties)]
    ended = time.perf_counter()
    startup = runner.startup_seconds
    seconds = times["chunks"] - times["began"]
    pixels = sum((c.y1 - c.y0) * (c.x1 - c.x0) for c in todo)
    working = seconds - startup
    summary = {
        "seconds": seconds,
        "megapixels_per_s": pixels / 1e6 / seconds if seconds > 0 and pixels else None,
        "startup_seconds": startup,
        "megapixels_per_s_after_start": pixels / 1e6 / working if working > 0 and pixels else None,
        "post_chunk_seconds": ended - times["chunks"],
        "total_seconds": ended - times["began"],
        "phases": {  # seconds after the last chunk: finishing sections, labels, reports
            "finishing": times["finished"] - times["chunks"],
            "labels": times["labels"] - times["finished"],
            "reports": ended - times["labels"],
        },
        "chunks": {"done": len(todo), "skipped": skipped, "failed": 0},
        **reports,
        "map": str(out),
    }
    logger.info(
        "%d chunks done, %d skipped in %.1f s (%.1f s starting the cluster); %d detections",
        len(todo),
        skipped,
        seconds,
        startup,
        reports["detections"],
    )
    return summary
