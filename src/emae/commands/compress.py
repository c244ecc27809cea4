"""``emae compress`` / ``emae decompress``: a volume to a container of chunk bitstreams and back.

:func:`compress` codes any reader's 2D image or ``"ZYX"`` volume, chunk by chunk, with a codec
trained by ``emae pretrain --model codec`` into a container (:mod:`emae.compress.container`),
through detect's machinery (:mod:`emae.volume.run`): one Dask task per chunk, the done-state,
resuming a killed run by running the same command again. :func:`decompress` decodes the whole
volume or a region from the chunks it touches, refusing a model other than the one that
encoded; a chunk whose bytes are damaged is reported and left 0, the others decode.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from emae.commands.embed import model_identity
from emae.compress.coder import ChunkCoder
from emae.compress.container import (
    KIND,
    create_container,
    parse_region,
    read_chunk,
    read_meta,
)
from emae.data.normalization import PercentileNormalizer, normalizer_for
from emae.errors import EmaeError
from emae.io import open_image
from emae.io.atomic import atomic_file, check_writable
from emae.io.provenance import check_not_input, is_emae_image
from emae.restore import cast_to
from emae.runtime import one_thread
from emae.volume.chunks import Chunk, ChunkJob
from emae.volume.compress import compress_chunk
from emae.volume.done import DONE, read_manifest, scan
from emae.volume.plan import plan_sections
from emae.volume.run import map_volume
from emae.volume.sections import SectionJob
from emae.volume.tasks import Runner, device_for_run

logger = logging.getLogger(__name__)

#: Written into the container when every chunk is coded: the run's totals.
SUMMARY = "emae_compress.json"


def _rd_lambda(model: str | Path) -> float | None:
    """The quality level (``rd_lambda``) the codec in ``model`` was trained with."""
    try:
        run = json.loads((Path(model) / "config.json").read_text()).get("run", {})
    except (OSError, ValueError, AttributeError):
        return None
    return run.get("rd_lambda") if isinstance(run, dict) else None


def _start(out: Path, meta: dict[str, Any], overwrite: bool) -> bool:
    """Create the container, or check it holds this run; returns whether it resumes."""
    if (out / "zarr.json").is_file() and is_emae_image(out, KIND):
        previous = read_meta(out)
        if previous == meta:
            return True
        started = (out / DONE).is_dir() and any((out / DONE).iterdir())
        if not overwrite:
            what = "a compression with other settings" if started else "another compression"
            raise EmaeError(f"{out} holds {what}; pass --overwrite to replace it")
    check_writable(
        out,
        overwrite=overwrite,
        replaceable=lambda p: is_emae_image(p, KIND),
        kind=f"an emae {KIND}",
    )
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    create_container(out, meta)
    (out / DONE).mkdir()
    return False


def compress(
    model: str | Path,
    source: str | Path,
    out: str | Path,
    *,
    chunk: int = 512,
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
    """Compress a 2D image or ``"ZYX"`` volume into the container ``out`` (a ``.zarr`` folder).

    Parameters
    ----------
    model
        A model folder of ``emae pretrain --model codec``.
    source
        Any input :func:`emae.io.open_image` reads, of the dtype the model was trained on
        (``rescale`` refits the normalization on the input instead).
    out
        The container to create (or to resume: the same command continues a stopped run).
    chunk
        Side of the chunks in pixels, each coded on its own; a multiple of the model's
        down-sampling factor.
    workers, scheduler, scale, retries, threads, device, overwrite, progress, rescale, pixel_size
        As for :func:`emae.commands.detect.detect`.

    Returns
    -------
    dict
        Also written to ``OUT/emae_compress.json`` once every chunk is coded:
        ``out``, ``pixels``, ``bytes``, ``bits_per_pixel``, ``compression_ratio`` (input bytes
        over container bitstream bytes), ``seconds`` and ``megapixels_per_s`` (the chunks coded
        by this run), ``chunks`` (done, skipped).
    """
    out = Path(out)
    if out.suffix.lower() != ".zarr":
        raise EmaeError(f"{out}: the container must be a .zarr folder")
    check_not_input(out, [source, model])
    coder = ChunkCoder.from_folder(model)
    m = coder.model.downsample_factor
    if chunk < m or chunk % m:
        raise EmaeError(f"--chunk must be a positive multiple of {m} (the model's down-sampling)")
    image = open_image(str(source), scale=scale).with_pixel_size(pixel_size)
    image.check_complete()
    coder.normalizer = normalizer_for(
        image, coder.normalizer, model=f"the model {model}", rescale=rescale
    )
    meta = {
        "format": 1,
        "model": {"name": "codec", "rd_lambda": _rd_lambda(model), **model_identity(model)},
        "source": str(source),
        "scale": scale,
        "shape": list(image.shape),
        "axes": image.axes,
        "dtype": str(image.dtype),
        "chunk": chunk,
        "normalizer": coder.normalizer.to_dict(),
        "latent_channels": coder.model.latent_channels,
        "downsample_factor": m,
        "pixel_size_nm": None if image.pixel_size is None else list(image.pixel_size),
    }
    resumed = _start(out, meta, overwrite)
    sections = plan_sections((image.n_sections, *image.yx_shape), chunk)
    todo = scan(out).todo(sections)
    if resumed:
        n = sections.n_chunks
        logger.info("resuming %s: %d of %d chunks already done", out, n - len(todo), n)
    section_job = SectionJob(str(out), image.axes, *image.yx_shape, None, images=(), labels=False)
    device = device_for_run(device, scheduler)
    began = time.perf_counter()
    with Runner(
        workers=workers,
        scheduler=scheduler,
        device=device,
        threads=threads,
        retries=retries,
        progress=progress,
    ) as runner:
        job = ChunkJob(str(source), scale, str(out), chunk, 0, runner.threads, device, runner.gpus)
        times = map_volume(sections, scan(out), coder, job, section_job, runner, compress_chunk)
    pixels = size = 0
    for z in sections:  # one section's manifest at a time: 2 TB plans millions of chunks
        for t in read_manifest(out, z, pieces=False).tiles:
            pixels += t["height"] * t["width"]
            size += t["bytes"]
    seconds = times["chunks"] - began
    coded = sum((c.y1 - c.y0) * (c.x1 - c.x0) for c in todo)
    summary = {
        "out": str(out),
        "pixels": pixels,
        "bytes": size,
        "bits_per_pixel": 8 * size / pixels,
        "compression_ratio": pixels * image.dtype.itemsize / size,
        "seconds": seconds,
        "megapixels_per_s": coded / 1e6 / seconds if seconds > 0 and coded else None,
        "chunks": {"done": len(todo), "skipped": sections.n_chunks - len(todo)},
    }
    with atomic_file(out / SUMMARY, overwrite=True) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return summary


def _coder(container: Path, meta: dict[str, Any], model: str | Path | None) -> ChunkCoder:
    """The coder of the model that encoded ``container``; refuses any other model."""
    stored = meta["model"]
    folder = Path(model if model is not None else stored["path"])
    if not (folder / "config.json").is_file():
        raise EmaeError(
            f"{container} was encoded by the model {stored['path']}, which is not found; "
            "pass --model with that model folder"
        )
    found = model_identity(folder)
    if found["weights_sha256"] != stored["weights_sha256"]:
        raise EmaeError(
            f"{container} was encoded by the model {stored['path']} (weights sha256 "
            f"{stored['weights_sha256'][:12]}), not by {folder} (sha256 "
            f"{found['weights_sha256'][:12]}); decode it with the model that encoded it"
        )
    coder = ChunkCoder.from_folder(folder)
    coder.normalizer = PercentileNormalizer.from_dict(meta["normalizer"])
    return coder


def _decode_section(
    container: Path,
    coder: ChunkCoder,
    meta: dict[str, Any],
    z: int,
    yx: tuple[slice, slice],
    pool: ThreadPoolExecutor,
) -> tuple[np.ndarray, list[str]]:
    """Region ``yx`` of section ``z``, decoded from the chunks it touches (in parallel over
    ``pool``'s threads): ``(h, w)`` in the input's dtype, and the names of the chunks that
    could not be decoded (left 0)."""
    shape, chunk = tuple(meta["shape"]), int(meta["chunk"])
    out = np.zeros((yx[0].stop - yx[0].start, yx[1].stop - yx[1].start), dtype=meta["dtype"])
    chunks = [
        Chunk(z, y0, x0, min(y0 + chunk, shape[-2]), min(x0 + chunk, shape[-1]))
        for y0 in range(yx[0].start // chunk * chunk, yx[0].stop, chunk)
        for x0 in range(yx[1].start // chunk * chunk, yx[1].stop, chunk)
    ]

    def decode(c: Chunk) -> np.ndarray | EmaeError:
        try:
            return coder.decode(read_chunk(container, c), (c.y1 - c.y0, c.x1 - c.x0))
        except EmaeError as exc:  # CorruptChunk included
            return exc

    failed = []
    for c, values in zip(chunks, pool.map(decode, chunks), strict=True):
        if isinstance(values, EmaeError):
            logger.error("chunk %s of %s: %s", c.name, container, values)
            failed.append(c.name)
            continue
        cy = slice(max(yx[0].start, c.y0), min(yx[0].stop, c.y1))
        cx = slice(max(yx[1].start, c.x0), min(yx[1].stop, c.x1))
        block = values[cy.start - c.y0 : cy.stop - c.y0, cx.start - c.x0 : cx.stop - c.x0]
        target = (
            slice(cy.start - yx[0].start, cy.stop - yx[0].start),
            slice(cx.start - yx[1].start, cx.stop - yx[1].start),
        )
        out[target] = cast_to(block, out.dtype)[0]
    return out, failed


@contextmanager
def _decoders() -> Iterator[ThreadPoolExecutor]:
    """Threads that decode one chunk each, torch on one thread per chunk: the decoded pixels
    then do not depend on how many threads the machine or the user allows."""
    with one_thread(), ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        yield pool


def _sections(meta: dict[str, Any], region: str | None) -> tuple[tuple[slice, ...], range]:
    """The region's slices and its section indices (``range(1)`` for a 2D image)."""
    where = parse_region(region, tuple(meta["shape"]))
    return where, range(where[0].start, where[0].stop) if len(where) == 3 else range(1)


def decode_region(
    container: str | Path,
    region: str | None = None,
    *,
    model: str | Path | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Decode ``region`` of a container into memory.

    Parameters
    ----------
    container
        A container of :func:`compress`.
    region
        ``"z0:z1,y0:y1,x0:x1"`` (``"y0:y1,x0:x1"`` for an image); None: everything.
    model
        The model folder, when it is no longer where it was when encoding.

    Returns
    -------
    (numpy.ndarray, list of str)
        The region in the input's dtype, ``(z, y, x)`` or ``(y, x)``; and the names of the chunks
        that could not be decoded (left 0).
    """
    container = Path(container)
    meta = read_meta(container)
    coder = _coder(container, meta, model)
    where, zs = _sections(meta, region)
    with _decoders() as pool:
        decoded = [_decode_section(container, coder, meta, z, where[-2:], pool) for z in zs]
    failed = [name for _, names in decoded for name in names]
    values = np.stack([v for v, _ in decoded])
    return (values if len(where) == 3 else values[0]), failed


def decompress(
    container: str | Path,
    out: str | Path,
    *,
    region: str | None = None,
    model: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Decode a container (or ``region`` of it) into an image file ``out``.

    Parameters
    ----------
    container
        A container of :func:`compress`.
    out
        ``.tif``/``.tiff`` or ``.zarr`` (OME-Zarr), in the input's dtype and pixel size.
    region, model
        As for :func:`decode_region`.
    overwrite
        Replace an existing image that emae decoded before.

    Returns
    -------
    dict
        ``out``, ``shape``, ``seconds``, ``megapixels_per_s``, ``failed`` (chunks left 0).

    Raises
    ------
    EmaeError
        After writing ``out``, when chunks could not be decoded (naming them).
    """
    import zarr

    from emae.io.ome_zarr import build_pyramid, create_ome_zarr
    from emae.io.writers import write_tiff

    out = Path(out)
    if out.suffix.lower() not in (".zarr", ".tif", ".tiff"):
        raise EmaeError(f"{out}: the output must be a .zarr store or a .tif/.tiff file")
    check_not_input(out, [container, model])
    meta = read_meta(container)
    kind = "decompressed image"
    check_writable(
        out,
        overwrite=overwrite,
        replaceable=lambda p: is_emae_image(p, kind),
        kind=f"an emae {kind}",
    )
    container = Path(container)
    coder = _coder(container, meta, model)
    where, zs = _sections(meta, region)
    shape = tuple(s.stop - s.start for s in where)
    axes, pixel_size, chunk = meta["axes"], meta["pixel_size_nm"], int(meta["chunk"])
    work = out if out.suffix.lower() == ".zarr" else out.with_name(out.name + ".partial.zarr")
    for path in {out, work}:
        if path.is_dir():
            shutil.rmtree(path)
    create_ome_zarr(
        work,
        shape,
        meta["dtype"],
        axes=axes,
        chunks=(1, chunk, chunk) if axes == "ZYX" else (chunk, chunk),
        pixel_size=pixel_size,
        kind=kind,
    )
    level0 = zarr.open_array(str(work / "0"), mode="r+")
    began = time.perf_counter()
    failed: list[str] = []
    with _decoders() as pool:
        for k, z in enumerate(zs):  # one section in memory at a time
            values, lost = _decode_section(container, coder, meta, z, where[-2:], pool)
            level0[(k,) if axes == "ZYX" else ()] = values
            failed += lost
    seconds = time.perf_counter() - began
    if work == out:
        build_pyramid(out)
    else:
        write_tiff(
            out,
            level0,
            axes=axes,
            compression="zlib",
            overwrite=True,
            kind=kind,
            pixel_size=pixel_size,
        )
        shutil.rmtree(work)
    if failed:
        raise EmaeError(
            f"{len(failed)} chunk(s) of {container} could not be decoded and are 0 in {out}: "
            f"{', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}"
        )
    return {
        "out": str(out),
        "shape": list(shape),
        "seconds": seconds,
        "megapixels_per_s": np.prod(shape) / 1e6 / seconds if seconds > 0 else None,
        "failed": failed,
    }
