"""Restoring a whole volume chunk by chunk, on Dask: the one driver of ``emae denoise``,
``emae inpaint`` and ``emae repair`` (:mod:`emae.commands.denoise`, :mod:`emae.commands.inpaint`,
:mod:`emae.commands.repair`).

Both write the restored image in the input's shape, axes, pixel size and dtype (``dtype=
"float32"`` on request; integer outputs are rounded and clipped to the dtype's range, and the
clipped pixels are counted), as an OME-Zarr image (``OUT.zarr``: multiscale, chunked ``(1, C,
C)`` per section) or a TIFF (``OUT.tif``, tiled and zlib-compressed). The work runs through
``emae detect``'s machinery (:mod:`emae.volume.run`): one task per output chunk reading its
region plus a halo, the done-state, the Dask runner; a killed run resumes where it stopped when
the same command is run again. Each chunk is restored in one pass over itself and its halo
(``overlap`` pixels, at least the network's receptive field: 48 pixels sufficed for the default
U-Net; a denoiser's noise model adds ``3 * window``, 12 pixels by default), which makes the
result equal to one pass over the whole section, without seams. A TIFF is assembled at the end
from a work store beside it (``OUT.tif.partial.zarr``), which is then removed. Beside the
output, ``OUT.sections.csv`` lists per section the pixels replaced and clipped.

The input is never modified; an existing output is replaced only with ``overwrite`` and only
when emae wrote it as the same kind of output.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from emae.data.normalization import normalizer_for
from emae.errors import EmaeError
from emae.io import open_image
from emae.io.atomic import atomic_file, check_writable
from emae.io.ome_zarr import create_ome_zarr
from emae.io.provenance import check_not_input, is_emae_image
from emae.io.writers import write_tiff
from emae.restore import Restorer
from emae.restore.noise import TRUNCATE, NoiseModel, noise_sample
from emae.volume.chunks import ChunkJob
from emae.volume.done import DONE, read_manifest, scan
from emae.volume.plan import plan_sections
from emae.volume.restore import RestoreJob, restore_chunk
from emae.volume.run import map_volume
from emae.volume.sections import SectionJob
from emae.volume.tasks import Runner, device_for_run

logger = logging.getLogger(__name__)

RUN = "emae_restore.json"  # not emae_run.json: that marks a detect store
KIND = {"denoise": "denoised image", "inpaint": "inpainted image"}
#: Pixels of context the default U-Net's output depends on (measured: a 48-pixel halo gives
#: the one-pass result); a noise model's window adds its own reach.
SEEN = 48
TIFF_SUFFIXES = (".tif", ".tiff")


def _work_store(out: Path) -> Path:
    """Where the chunks are written: ``out`` itself, or a store beside a TIFF output."""
    return out if out.suffix == ".zarr" else out.with_name(out.name + ".partial.zarr")


def _fingerprint(path: str | Path | None) -> list[int] | None:
    """Size and modification time of an input file (None for folders and stores): part of a
    run's settings, so that a rewritten mask or image, or a model trained again into the same
    folder, is not taken for the one a stopped run was working on."""
    if path is None or not Path(path).is_file():
        return None
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]


def _prepare(
    work: Path, settings: dict[str, Any], image: Any, chunk: int, kind: str, overwrite: bool
) -> bool:
    """Create the work store, or check it holds this run; returns whether it resumes."""
    run = work / RUN
    if run.is_file():
        try:
            previous = json.loads(run.read_text())
        except (OSError, ValueError):
            previous = None
        if previous == settings:
            return True
        started = (work / DONE).is_dir() and any((work / DONE).iterdir())
        if started and not overwrite:
            raise EmaeError(
                f"{work} holds a run with other settings; pass --overwrite to replace it"
            )
    check_writable(
        work,
        overwrite=overwrite or run.is_file(),
        replaceable=lambda p: is_emae_image(p, kind),
        kind=f"an emae {kind} store",
    )
    create_ome_zarr(
        work,
        image.shape,
        settings["dtype"],
        axes=image.axes,
        chunks=(1, chunk, chunk) if image.axes == "ZYX" else (chunk, chunk),
        pixel_size=image.pixel_size,
        kind=kind,
        overwrite=True,
    )
    (work / DONE).mkdir()
    with atomic_file(run) as tmp:
        tmp.write_text(json.dumps(settings, indent=2))
    return False


def _write_table(path: Path, sections: Sequence[int], work: Path) -> dict[str, int]:
    """``OUT.sections.csv``: per section its pixels, replaced and clipped pixels; the totals."""
    totals = {"pixels": 0, "replaced_pixels": 0, "clipped_pixels": 0}
    with atomic_file(path, overwrite=True) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["z", "pixels", "replaced_pixels", "replaced_fraction", "clipped_pixels"])
        for z in sections:
            tiles = read_manifest(work, z, pieces=False).tiles
            pixels = sum(t["height"] * t["width"] for t in tiles)
            replaced = sum(t["replaced_pixels"] for t in tiles)
            clipped = sum(t["clipped_pixels"] for t in tiles)
            writer.writerow([z, pixels, replaced, f"{replaced / pixels:.6g}", clipped])
            for key, n in zip(totals, (pixels, replaced, clipped), strict=True):
                totals[key] += n
    return totals


def restore_volume(
    restorer: Restorer,
    model: str | Path,
    source: str | Path,
    out: str | Path,
    *,
    mask: str | Path | None = None,
    mask_threshold: float = 0.0,
    dilate: int = 0,
    holes_out: str | Path | None = None,
    dtype: str | None = None,
    overlap: int = 64,
    chunk: int = 1024,
    workers: int | None = None,
    scheduler: str | None = None,
    scale: int = 0,
    retries: int = 2,
    threads: int | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    rescale: bool = False,
    pixel_size: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Restore ``source`` into ``out`` with ``restorer`` (the one code path of every
    restoration command; parameters as :func:`denoise` and :func:`inpaint`; ``holes_out``, a
    ``.zarr`` path, also writes the holes that were filled as a uint8 image)."""
    out = Path(out)
    if out.suffix.lower() not in (".zarr", *TIFF_SUFFIXES):
        raise EmaeError(f"{out}: the output must be a .zarr store or a .tif/.tiff file")
    check_not_input(out, [source, model, mask])
    # One tile per chunk and its halo: tiles then start on the model's down-sampling grid, and
    # with a halo wider than the receptive field the result equals one pass over the image.
    tile = chunk + 2 * overlap
    m = int(getattr(restorer.model, "downsample_factor", 1))
    if chunk < m or chunk % m or overlap < 0 or overlap % m:
        raise EmaeError(
            f"--chunk and --overlap must be multiples of {m} (the model halves the image "
            f"{m.bit_length() - 1} times), with chunk >= {m}; got chunk={chunk}, overlap={overlap}"
        )
    if dilate < 0 or dilate > overlap:
        raise EmaeError(f"--dilate must be between 0 and the overlap ({overlap}), got {dilate}")
    device = device_for_run(device, scheduler)
    image = open_image(str(source), scale=scale).with_pixel_size(pixel_size)
    image.check_complete()
    kind = KIND[restorer.mode]
    out_dtype = np.dtype(dtype or image.dtype)
    if out_dtype.kind not in "uif":
        raise EmaeError(f"cannot write dtype {out_dtype}; use the input's or float32")
    restorer = replace(  # a copy: the caller's restorer may serve other inputs
        restorer,
        normalizer=normalizer_for(
            image, restorer.normalizer, model=f"the model {model}", rescale=rescale
        ),
    )
    if isinstance(restorer.noise, str):
        restorer = restorer.fitted_to(noise_sample(image), name=str(source))
    noise = restorer.noise if isinstance(restorer.noise, NoiseModel) else None
    if noise is not None:
        logger.info("noise model of %s: %s", source, noise)
        reach = SEEN + math.ceil(TRUNCATE * restorer.window)
        if overlap < reach:
            logger.warning(
                "--overlap %d is less than the %d pixels the denoiser and its noise window "
                "reach; chunk borders may show",
                overlap,
                reach,
            )
    if mask is not None:
        holes = open_image(str(mask))
        if holes.shape != image.shape:
            raise EmaeError(
                f"{mask}: the mask has shape {holes.shape}, the image {source} has shape "
                f"{image.shape}; they must be the same"
            )
    if out.suffix.lower() in TIFF_SUFFIXES:
        check_writable(
            out,
            overwrite=overwrite,
            replaceable=lambda p: is_emae_image(p, kind),
            kind=f"an emae {kind}",
        )
    settings = {
        "mode": restorer.mode,
        "model": str(Path(model).resolve()),
        "source": str(source),
        "shape": list(image.shape),
        "dtype": str(out_dtype),
        "scale": scale,
        "tile": tile,
        "overlap": overlap,
        "chunk": chunk,
        "precision": restorer.precision,
        "normalizer": restorer.normalizer.to_dict(),
        "mask": None if mask is None else str(mask),
        "files": [_fingerprint(p) for p in (source, mask, Path(model, "config.json"))],
        "mask_threshold": mask_threshold,
        "dilate": dilate,
        "holes_out": None if holes_out is None else str(holes_out),
        "feather": restorer.feather,
        "pixel_size_nm": None if image.pixel_size is None else list(image.pixel_size),
    }
    if noise is not None:  # only then: runs without one keep their settings
        settings.update(noise=noise.to_dict(), window=restorer.window)
    work = _work_store(out)
    resumed = _prepare(work, settings, image, chunk, kind, overwrite)
    if holes_out is not None and not (resumed and Path(holes_out, ".zattrs").is_file()):
        create_ome_zarr(
            holes_out,
            image.shape,
            np.uint8,
            axes=image.axes,
            chunks=(1, chunk, chunk) if image.axes == "ZYX" else (chunk, chunk),
            pixel_size=image.pixel_size,
            kind="filled holes",
            overwrite=True,
        )
    sections = plan_sections((image.n_sections, *image.yx_shape), chunk)
    state = scan(work)
    todo = state.todo(sections)
    if resumed:
        n = sections.n_chunks
        logger.info("resuming %s: %d of %d chunks already done", work, n - len(todo), n)
    section_job = SectionJob(
        str(work),
        image.axes,
        *image.yx_shape,
        threshold=None,
        images=(str(work),) if holes_out is None else (str(work), str(holes_out)),
        labels=False,
    )
    began = time.perf_counter()
    with Runner(
        workers=workers,
        scheduler=scheduler,
        device=device,
        threads=threads,
        retries=retries,
        progress=progress,
    ) as runner:
        chunks = ChunkJob(
            str(source), scale, str(work), tile, overlap, runner.threads, device, runner.gpus
        )
        job = RestoreJob(
            chunks,
            str(out_dtype),
            mask=None if mask is None else str(mask),
            mask_threshold=mask_threshold,
            dilate=dilate,
            holes_out=None if holes_out is None else str(holes_out),
        )
        times = map_volume(sections, state, restorer, job, section_job, runner, restore_chunk)
    table = out.with_name(out.name + ".sections.csv")
    totals = _write_table(table, list(sections), work)
    if out.suffix.lower() in TIFF_SUFFIXES:
        level0 = zarr.open_array(str(work / "0"), mode="r")
        write_tiff(
            out,
            level0,
            axes=image.axes,
            compression="zlib",
            overwrite=True,
            kind=kind,
            pixel_size=image.pixel_size,
        )
        shutil.rmtree(work)
    seconds = times["chunks"] - began
    pixels = sum((c.y1 - c.y0) * (c.x1 - c.x0) for c in todo)
    if totals["clipped_pixels"]:
        logger.warning(
            "%d pixels (%.3g%%) fell outside the %s range and were clipped",
            totals["clipped_pixels"],
            100 * totals["clipped_pixels"] / totals["pixels"],
            out_dtype,
        )
    return {
        "out": str(out),
        "table": str(table),
        "seconds": seconds,
        "megapixels_per_s": pixels / 1e6 / seconds if seconds > 0 and pixels else None,
        "startup_seconds": runner.startup_seconds,
        "total_seconds": time.perf_counter() - began,
        "chunks": {"done": len(todo), "skipped": sections.n_chunks - len(todo)},
        "noise": None if noise is None else noise.to_dict(),
        **totals,
    }
