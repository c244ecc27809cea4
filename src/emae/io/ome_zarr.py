"""Writing OME-Zarr images: create an empty pyramid, fill level 0, build the other levels.

Stores are written as NGFF **v0.4 on zarr format 2** (``.zgroup``/``.zattrs``/``.zarray``, chunk
keys separated by ``/``, Blosc-zstd compression). That combination is read by every current
viewer and library (napari-ome-zarr, neuroglancer, Fiji/MoBIE, webKnossos, ome-zarr-py), while
v0.5 (zarr format 3, metadata under the ``"ome"`` attribute) is not yet read everywhere.

A written image is a group holding levels ``"0"``, ``"1"``, ... Level ``k`` is level 0 averaged
over blocks of ``2**k`` pixels in Y and X (Z is kept); the metadata (:mod:`emae.io.ngff`) records
each level's scale and translation.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Iterator, Sequence
from itertools import pairwise, product
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
from tqdm.auto import tqdm

from emae.errors import EmaeError
from emae.io.atomic import atomic_dir, check_writable
from emae.io.ngff import multiscales_attrs, validate_ngff
from emae.io.provenance import is_emae_image, mark

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_YX = 512


def _level_shape(shape: Sequence[int], level: int) -> tuple[int, ...]:
    """Shape of pyramid ``level``: Y and X divided by ``2**level`` rounding up, Z kept."""
    f = 2**level
    return (*shape[:-2], -(-shape[-2] // f), -(-shape[-1] // f))


def _default_chunks(shape: Sequence[int]) -> tuple[int, ...]:
    """One section deep, ``DEFAULT_CHUNK_YX`` square, clipped to the shape."""
    return (*(1 for _ in shape[:-2]), *(min(s, DEFAULT_CHUNK_YX) for s in shape[-2:]))


def _default_n_levels(shape: Sequence[int], chunks: Sequence[int]) -> int:
    """Halve Y and X until the whole section fits in one chunk."""
    n = 1
    while any(s > c for s, c in zip(_level_shape(shape, n - 1)[-2:], chunks[-2:], strict=True)):
        n += 1
    return n


def _only(kind: str) -> dict[str, Any]:
    """Even with ``overwrite``, only an image emae wrote as ``kind`` is ever replaced."""
    return {"replaceable": lambda p: is_emae_image(p, kind), "kind": f"an emae {kind} store"}


def create_ome_zarr(
    path: str | Path,
    shape: Sequence[int],
    dtype: Any,
    *,
    axes: str,
    chunks: Sequence[int] | None = None,
    n_levels: int | None = None,
    pixel_size: float | Sequence[float] | None = None,
    name: str | None = None,
    overwrite: bool = False,
    channel_names: Sequence[str] | None = None,
    kind: str = "image",
    downsampling: str = "mean",
) -> zarr.Group:
    """Create an empty NGFF v0.4 image: metadata plus every pyramid level, filled with zeros.

    Level 0 is meant to be filled region by region, after which :func:`build_pyramid` computes
    the other levels. Each writer (a thread or a worker process) opens
    ``zarr.open_array(f"{path}/0", mode="r+")`` and writes chunk-aligned regions, so that no two
    writers ever touch the same chunk.

    Parameters
    ----------
    path
        Folder of the store to create (e.g. ``out.ome.zarr``).
    shape
        Level-0 shape in the order of ``axes``: ``(H, W)`` or ``(Z, H, W)``.
    dtype
        Pixel dtype of every level.
    axes
        ``"YX"`` or ``"ZYX"``, or with a leading channel axis ``"CYX"``/``"CZYX"``.
    chunks
        Chunk shape of every level; default one section (and one channel) by 512x512.
    n_levels
        Number of levels; default: halve Y and X until a section fits in one chunk.
    pixel_size
        Level-0 pixel size in nanometers, one number or one per axis; ``None`` writes unitless axes.
    name
        Image name stored in the metadata; default the folder name.
    overwrite
        Replace an existing store at ``path``, but only an image emae wrote as the same
        ``kind``; otherwise a non-empty ``path`` is an error.
    channel_names
        One label per channel, required with a ``C`` axis (OMERO metadata).
    kind
        What the image is (``"image"``, ``"anomaly map"``, ...), stored in the root attributes
        (:mod:`emae.io.provenance`).
    downsampling
        How :func:`build_pyramid` will fill the levels, for the metadata: ``"mean"`` or
        ``"nearest"`` (label images).

    Returns
    -------
    zarr.Group
        The image group, opened for writing; arrays ``"0"``, ``"1"``, ...
    """
    path = Path(path)
    if axes not in ("YX", "ZYX", "CYX", "CZYX") or len(shape) != len(axes):
        raise EmaeError(
            f"{path}: axes must be 'YX', 'ZYX', 'CYX' or 'CZYX' matching shape, got {axes!r} "
            f"{shape}"
        )
    if (channel_names is not None) != axes.startswith("C") or (
        channel_names is not None and len(channel_names) != shape[0]
    ):
        raise EmaeError(f"{path}: give one channel name per channel of a 'C' axis, and only then")
    if np.dtype(dtype).kind not in "uif":
        raise EmaeError(
            f"{path}: cannot write dtype {np.dtype(dtype)}; expected integers or floats"
        )
    shape = tuple(int(s) for s in shape)
    chunks = _default_chunks(shape) if chunks is None else tuple(int(c) for c in chunks)
    if len(chunks) != len(shape) or min(chunks) < 1:
        raise EmaeError(f"{path}: chunks must be {len(shape)} positive sizes, got {chunks}")
    n_levels = _default_n_levels(shape, chunks) if n_levels is None else int(n_levels)
    if n_levels < 1:
        raise EmaeError(f"{path}: n_levels must be >= 1, got {n_levels}")
    attrs = multiscales_attrs(
        axes, n_levels, pixel_size, name or path.name, channel_names, downsampling
    )
    check_writable(path, overwrite=overwrite, **_only(kind))
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    group = zarr.open_group(store=str(path), mode="w", zarr_format=2)
    for level in range(n_levels):
        level_shape = _level_shape(shape, level)
        group.create_array(
            name=str(level),
            shape=level_shape,
            dtype=np.dtype(dtype),
            chunks=tuple(min(c, s) for c, s in zip(chunks, level_shape, strict=True)),
            compressors=numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),
            chunk_key_encoding={"name": "v2", "separator": "/"},
            fill_value=0,
        )
    group.attrs.update({**attrs, **mark(kind)})
    return group


def _blocks(shape: Sequence[int], chunks: Sequence[int]) -> Iterator[tuple[slice, ...]]:
    """Chunk-aligned regions covering ``shape``, in C order."""
    ranges = [range(0, s, c) for s, c in zip(shape, chunks, strict=True)]
    for starts in product(*ranges):
        yield tuple(slice(a, min(a + c, s)) for a, c, s in zip(starts, chunks, shape, strict=True))


def _downsample_mean(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Average 2x2 pixel blocks in the last two axes; an odd edge repeats its last row/column.

    Integers of up to 16 bits are averaged in float32, where the sum of four and its quarter
    are exact (the same result as float64, at half the memory); everything else in float64.
    """
    exact = block.dtype.kind in "iub" and block.dtype.itemsize <= 2
    block = block.astype(np.float32 if exact else np.float64)
    odd = (block.shape[-2] % 2, block.shape[-1] % 2)
    if any(odd):
        block = np.pad(block, [(0, 0)] * (block.ndim - 2) + [(0, odd[0]), (0, odd[1])], "edge")
    h, w = block.shape[-2] // 2, block.shape[-1] // 2
    mean = block.reshape(*block.shape[:-2], h, 2, w, 2).mean(axis=(-3, -1))
    if dtype.kind in "iu":
        mean = np.rint(mean)
    return mean.astype(dtype)


def _touched(
    regions: Iterable[tuple[slice, ...]], shape: Sequence[int], chunks: Sequence[int]
) -> list[tuple[slice, ...]]:
    """The chunk-aligned blocks of the next level (``shape``, ``chunks``) that the level-below
    ``regions`` (slices per axis, Y and X halved by the level) overlap, in C order."""
    found = set()
    for region in regions:
        lo = [r.start for r in region[:-2]] + [r.start // 2 for r in region[-2:]]
        hi = [r.stop for r in region[:-2]] + [-(-r.stop // 2) for r in region[-2:]]
        ranges = [
            range(a // c * c, min(b, s), c)
            for a, b, c, s in zip(lo, hi, chunks, shape, strict=True)
        ]
        found.update(product(*ranges))
    return [
        tuple(slice(a, min(a + c, s)) for a, c, s in zip(starts, chunks, shape, strict=True))
        for starts in sorted(found)
    ]


def build_pyramid(
    path: str | Path,
    *,
    progress: bool = False,
    method: str = "mean",
    regions: Iterable[tuple[slice, ...]] | None = None,
) -> None:
    """Compute levels 1.. of an image made by :func:`create_ome_zarr` from its level 0.

    Each level is the 2x2 (Y, X) mean of the previous one, rounded to the nearest integer for
    integer dtypes; with ``method="nearest"`` (for label images, whose values are ids) it is
    every second pixel instead. Work proceeds one output chunk at a time, so memory stays at a
    few chunks whatever the image size. ``progress`` shows a progress bar per level.

    ``regions`` (level-0 slices per axis) limits the work to the blocks of every level that
    cover them: for an image written in a few places only (a label image of sparse
    detections), the rest of the pyramid stays the fill value without being read.
    """
    group = zarr.open_group(store=str(path), mode="r+")
    validate_ngff(group.attrs.asdict(), path=str(path))
    datasets = group.attrs["multiscales"][0]["datasets"]
    for prev, cur in pairwise(datasets):
        src, dst = group[prev["path"]], group[cur["path"]]
        logger.info("%s: building level %s with shape %s", path, cur["path"], dst.shape)
        if regions is None:
            n_blocks = int(
                np.prod([-(-s // c) for s, c in zip(dst.shape, dst.chunks, strict=True)])
            )
            blocks: Iterable[tuple[slice, ...]] = _blocks(dst.shape, dst.chunks)
        else:
            regions = blocks = _touched(regions, dst.shape, dst.chunks)
            n_blocks = len(blocks)
        desc = f"level {cur['path']}"
        for region in tqdm(blocks, total=n_blocks, desc=desc, disable=not progress):
            y, x = (
                slice(2 * r.start, min(2 * r.stop, s))
                for r, s in zip(region[-2:], src.shape[-2:], strict=True)
            )
            block = np.asarray(src[(*region[:-2], y, x)])
            if method == "nearest":
                dst[region] = block[..., ::2, ::2]
            else:
                dst[region] = _downsample_mean(block, dst.dtype)


def write_ome_zarr(
    path: str | Path,
    array: np.ndarray,
    *,
    axes: str,
    chunks: Sequence[int] | None = None,
    n_levels: int | None = None,
    pixel_size: float | Sequence[float] | None = None,
    overwrite: bool = False,
    name: str | None = None,
    kind: str = "image",
) -> Path:
    """Write an in-memory ``"YX"``/``"ZYX"`` array as an NGFF v0.4 multiscale image, atomically.

    The store is written into a temporary folder next to ``path`` and renamed into place at the
    end (:func:`~emae.io.atomic.atomic_dir`), so ``path`` never holds a half-written image.
    Arguments are those of :func:`create_ome_zarr`; ``array`` has shape ``(H, W)`` or
    ``(Z, H, W)`` and any integer or float dtype. Returns ``path``.
    """
    path = Path(path)
    array = np.asarray(array)
    with atomic_dir(path, overwrite=overwrite, **_only(kind)) as tmp:
        group = create_ome_zarr(
            tmp,
            array.shape,
            array.dtype,
            axes=axes,
            chunks=chunks,
            n_levels=n_levels,
            pixel_size=pixel_size,
            name=name or path.name,
            kind=kind,
        )
        group["0"][...] = array
        build_pyramid(tmp)
    return path
