"""One task of ``emae denoise`` / ``emae inpaint`` / ``emae repair``: restore one output chunk.

The same machinery as ``emae detect`` (:mod:`emae.volume.chunks`): the chunk's region of the
input is read with a halo, restored tile by tile by :func:`emae.volume.tiling.predict_tiled`
with a :class:`~emae.restore.Restorer` as the tile function, and its core is written into level
0 of the output image; then the chunk's record (its QC numbers) marks it done
(:mod:`emae.volume.done`). The section tasks, the done-state, resuming and the Dask runner are
detect's own (:mod:`emae.volume.run`).

For inpainting, the holes are read from a mask image over the same region (a pixel is a hole
where the mask is above ``mask_threshold``, after a dilation by ``dilate`` pixels, which the
halo covers) and given to the restorer as NaN pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from emae.io import open_image
from emae.restore import Restorer, cast_to
from emae.volume.chunks import Chunk, ChunkJob, chunk_device, read_region, write_region
from emae.volume.done import write_chunk_record
from emae.volume.tiling import predict_tiled


@dataclass(frozen=True)
class RestoreJob:
    """What every restoration chunk task shares.

    Attributes
    ----------
    chunks
        The input, output store, tiles, threads and device, as for detection; ``chunks.out``
        is the output image (an OME-Zarr image whose level ``0`` is written).
    dtype
        Of the output.
    mask, mask_scale, mask_threshold, dilate
        Inpainting: the mask image (any :func:`emae.io.open_image` source of the input's
        shape), its pyramid level, the value above which a pixel is a hole, and the dilation of
        the holes in pixels. ``mask=None`` for denoising.
    holes_out
        An OME-Zarr image (uint8) into whose level 0 the holes that were filled are written
        (1 = filled), or None.
    """

    chunks: ChunkJob
    dtype: str
    mask: str | None = None
    mask_scale: int = 0
    mask_threshold: float = 0.0
    dilate: int = 0
    holes_out: str | None = None


def read_holes(job: RestoreJob, c: Chunk, shape: tuple[int, int], y0: int, x0: int) -> np.ndarray:
    """The holes of the ``shape`` region at ``(y0, x0)`` of section ``c.z``: bool ``(h, w)``."""
    mask = open_image(job.mask, scale=job.mask_scale)
    yx = (slice(y0, y0 + shape[0]), slice(x0, x0 + shape[1]))
    values = np.asarray(mask.data[(c.z, *yx) if mask.ndim == 3 else yx])
    holes = values > job.mask_threshold
    if job.dilate > 0 and holes.any():
        disk = ndimage.distance_transform_edt(~holes) <= job.dilate
        holes |= disk
    return holes


def _hole_box(
    holes: np.ndarray, ry0: int, rx0: int, margin: int, restorer: Restorer
) -> tuple[slice, slice]:
    """The part of a region ``(h, w)`` at ``(ry0, rx0)`` that the inpainting model must see:
    the holes' bounding box grown by ``margin`` (the halo, for the receptive field, plus the
    blend), starting on the model's down-sampling grid of the section (so that the result
    equals one pass over the whole section). A chunk with a few small holes is then not
    passed through the model whole."""
    m = int(getattr(restorer.model, "downsample_factor", 1))
    ys, xs = np.nonzero(holes)
    box = []
    for found, start, size in ((ys, ry0, holes.shape[0]), (xs, rx0, holes.shape[1])):
        lo = max(int(found.min()) - margin, 0)
        lo = max(lo - (start + lo) % m, 0)
        box.append(slice(lo, min(int(found.max()) + 1 + margin, size)))
    return box[0], box[1]


def restore_chunk(c: Chunk, restorer: Restorer, job: RestoreJob) -> dict[str, Any]:
    """Restore one output chunk of ``job``, write it and its record; returns its QC numbers:
    the chunk's position, ``replaced_pixels`` (holes filled; every pixel when denoising) and
    ``clipped_pixels`` (outside the output dtype's range, clipped)."""
    import torch

    chunks = job.chunks
    if chunks.threads:
        torch.set_num_threads(chunks.threads)
    device = chunk_device(chunks.device, chunks.gpus)
    if device.startswith("cuda:"):
        torch.cuda.set_device(int(device.removeprefix("cuda:")))
    restorer = restorer.on(device)
    region, ry0, rx0 = read_region(chunks.source, chunks.scale, c, chunks.overlap)
    core = (slice(c.y0 - ry0, c.y1 - ry0), slice(c.x0 - rx0, c.x1 - rx0))
    if job.mask is None:
        replaced = (c.y1 - c.y0) * (c.x1 - c.x0)
        restored = predict_tiled(region, restorer, tile=chunks.tile, overlap=chunks.overlap)[0]
    else:
        holes = read_holes(job, c, region.shape, ry0, rx0)
        replaced = int(np.count_nonzero(holes[core]))
        restored = region.astype(np.float32)
        if holes.any():
            box = _hole_box(holes, ry0, rx0, chunks.overlap + restorer.feather + 1, restorer)
            section = np.where(holes[box], np.float32(np.nan), restored[box])
            restored[box] = predict_tiled(
                section, restorer, tile=chunks.tile, overlap=chunks.overlap
            )[0]
    restored = restored[core]
    values, clipped = cast_to(restored, job.dtype)
    write_region(f"{chunks.out}/0", c, values, channels=False)
    if job.holes_out is not None:
        filled = holes[core] if job.mask is not None else np.ones(values.shape, bool)
        write_region(f"{job.holes_out}/0", c, filled.astype(np.uint8), channels=False)
    qc = {
        "z": c.z,
        "y0": c.y0,
        "x0": c.x0,
        "height": c.y1 - c.y0,
        "width": c.x1 - c.x0,
        "replaced_pixels": replaced,
        "clipped_pixels": clipped,
    }
    write_chunk_record(chunks.out, c.name, qc, [])
    return qc
