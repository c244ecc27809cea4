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
and replaces its chunks' records with one manifest; once the sections before it are finished
(its detections' ids are then known), another paints its detections into the label images
(:mod:`emae.volume.sections`, :mod:`emae.volume.run`). Only the
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

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emae.anomaly.detector import AutoencoderDetector
from emae.data.normalization import normalizer_for
from emae.errors import EmaeError
from emae.folders.classifier import is_classifier, load_classifier, trained_from
from emae.io import open_image
from emae.io.atomic import atomic_file, check_writable
from emae.io.map_store import create_map_store
from emae.io.provenance import check_not_input
from emae.volume.chunks import ChunkJob, Mapper
from emae.volume.done import DONE, move_legacy_records, scan
from emae.volume.labels import create_label_images, label_names
from emae.volume.plan import plan_sections
from emae.volume.run import map_volume, write_outputs
from emae.volume.sections import SectionJob
from emae.volume.tasks import Runner, device_for_run

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
    run = json.loads((Path(model) / "config.json").read_text()).get("run", {})
    detector = None
    encoder = None
    if anomaly:
        encoder = trained_from(
            model,
            needed_for="the anomaly map",
            otherwise="map the classes alone with --classes-only",
        )
    if encoder:
        detector = AutoencoderDetector.from_bundle(encoder, device="cpu", precision=precision)
    clean = run.get("clean_class", "clean")
    return Mapper(detector, classifier, clean, precision), classifier.model.input_size


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
        Of the forward passes, the autoencoder's and a classifier's: ``"auto"`` (default: bf16
        autocast where the CPU or GPU has native bf16, else fp32), ``"fp32"`` or ``"bf16"``; on
        sample data bf16 was 2.4x faster with the same pixel AUROC (docs/benchmarks.md).
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
        section tasks still running, ``phases["sections"]``, and writing the reports,
        ``phases["reports"]``; the section tasks run before the last chunk count in
        ``seconds``), ``total_seconds``, ``chunks`` (done, skipped, failed), ``detections``,
        and the paths written.
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
    sections = plan_sections((image.n_sections, *image.yx_shape), chunk)
    # One listing of the done-state, and one per section in progress (not one file check per
    # chunk: millions on a network file system when a large run resumes).
    if resumed and (moved := move_legacy_records(out)):
        logger.info("%s: %d chunk records of an earlier emae moved to its sections", out, moved)
    state = scan(out)
    todo = state.todo(sections)
    n_chunks = sections.n_chunks
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
    began = time.perf_counter()  # the cluster's start counts in the run's seconds
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
        times = {**map_volume(sections, state, mapper, job, section_job, runner), "began": began}
    reports = write_outputs(out, list(sections), mapper)
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
        "phases": {  # seconds after the last chunk: the last sections' tasks, the reports
            "sections": times["sections"] - times["chunks"],
            "reports": ended - times["sections"],
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
