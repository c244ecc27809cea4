"""Write images as TIFF files or OME-Zarr stores, atomically and without silent overwrites.

A TIFF is written to a temporary file in the destination folder and moved into place with
``os.replace`` (:mod:`emae.io.atomic`), so a crash never leaves a half-written file under the
final name. Uncompressed
TIFFs are contiguous (they can be memory-mapped when read back); compressed ones are tiled in
512x512 tiles, so reading a region decodes only the tiles it touches. BigTIFF is used above 2 GB.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from emae.errors import EmaeError
from emae.io.atomic import atomic_file
from emae.io.ome_zarr import write_ome_zarr
from emae.io.provenance import is_emae_image, mark

BIGTIFF_BYTES = 2**31
TIFF_TILE = 512
COMPRESSIONS = (None, "zlib")


def _check_array(path: Path, array: np.ndarray, axes: str) -> None:
    if axes not in ("YX", "ZYX") or array.ndim != len(axes):
        raise EmaeError(
            f"{path}: axes must be 'YX' or 'ZYX' matching the array, got {axes!r} for shape "
            f"{array.shape}"
        )
    if array.dtype.kind not in "uif" or array.dtype.itemsize > 8:
        raise EmaeError(f"{path}: cannot write dtype {array.dtype}; expected integers or floats")


def write_tiff(
    path: str | Path,
    array: np.ndarray,
    *,
    axes: str,
    compression: str | None = None,
    overwrite: bool = False,
    kind: str = "image",
    pixel_size: Sequence[float | None] | None = None,
) -> Path:
    """Write a 2D image or a stack of sections as a grayscale TIFF, atomically.

    Parameters
    ----------
    path
        Destination ``.tif``/``.tiff`` file.
    array
        ``(H, W)`` for ``axes="YX"`` or ``(Z, H, W)`` for ``axes="ZYX"`` (one page per section);
        integer or float dtype, written unchanged. A numpy array, or an array read piece by
        piece (zarr, dask: a tile or a section at a time, never whole).
    axes
        ``"YX"`` or ``"ZYX"``; stored in the TIFF description so readers recover the axes.
    compression
        ``None`` (contiguous, memory-mappable) or ``"zlib"`` (tiled, lossless).
    overwrite
        Replace an existing file, but only a TIFF that emae wrote as the same ``kind``;
        otherwise an existing ``path`` is an error.
    kind
        What the image is (``"image"``, ``"anomaly map"``, ...), stored in the description
        next to the axes (:mod:`emae.io.provenance`).
    pixel_size
        Nanometers per pixel along each axis (None for unknown ones): stored in the
        description for emae and, for Y and X, as resolution tags in pixels per centimeter,
        which Fiji and other TIFF readers show.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    if not hasattr(array, "shape") or np.ndim(array) == 0:
        array = np.asarray(array)
    _check_array(path, array, axes)
    if compression not in COMPRESSIONS:
        raise EmaeError(f"{path}: compression must be one of {COMPRESSIONS}, got {compression!r}")
    if path.is_dir():
        raise EmaeError(f"{path}: is a folder, not a file")
    tile = None
    if compression and min(array.shape[-2:]) >= TIFF_TILE:
        tile = (TIFF_TILE, TIFF_TILE)
    nbytes = int(np.prod(array.shape)) * array.dtype.itemsize
    data: Any = array
    if not isinstance(array, np.ndarray):  # a zarr or dask array: read and written piece by piece
        data = _pieces(array, tile)
    metadata: dict = {"axes": axes, **mark(kind)}
    resolution: dict = {}
    if pixel_size is not None and any(s is not None for s in pixel_size):
        if len(pixel_size) != len(axes):
            raise EmaeError(f"{path}: give one pixel size per axis {axes!r}, got {pixel_size}")
        metadata["pixel_size_nm"] = [None if s is None else float(s) for s in pixel_size]
        y, x = pixel_size[-2:]
        if y and x:
            resolution = {"resolution": (1e7 / x, 1e7 / y), "resolutionunit": "CENTIMETER"}
    with atomic_file(
        path,
        overwrite=overwrite,
        replaceable=lambda p: is_emae_image(p, kind),
        kind=f"an emae {kind} TIFF",
    ) as tmp:
        tifffile.imwrite(
            tmp,
            data,
            shape=array.shape,
            dtype=array.dtype,
            bigtiff=nbytes > BIGTIFF_BYTES,
            photometric="minisblack",
            metadata=metadata,
            compression=compression,
            tile=tile,
            **resolution,
        )
    return path


def _pieces(array: Any, tile: tuple[int, int] | None) -> Iterator[np.ndarray]:
    """The pages of ``array`` in the order tifffile writes them: tiles row by row, else whole
    sections."""
    sections = [()] if array.ndim == 2 else [(z,) for z in range(array.shape[0])]
    h, w = array.shape[-2:]
    for z in sections:
        if tile is None:
            yield np.asarray(array[z])
            continue
        for y in range(0, h, tile[0]):
            for x in range(0, w, tile[1]):
                yield np.asarray(array[(*z, slice(y, y + tile[0]), slice(x, x + tile[1]))])


def write_image(
    path: str | Path,
    array: np.ndarray,
    *,
    axes: str,
    overwrite: bool = False,
    kind: str = "image",
    pixel_size: Sequence[float | None] | None = None,
) -> Path:
    """Write ``array`` as a TIFF (``.tif``/``.tiff``) or an OME-Zarr image (``.zarr``).

    ``array`` is ``(H, W)`` for ``axes="YX"`` or ``(Z, H, W)`` for ``axes="ZYX"``. TIFFs are
    written zlib-compressed; OME-Zarr stores with the defaults of
    :func:`~emae.io.ome_zarr.write_ome_zarr`. ``overwrite`` replaces only an image emae wrote
    as the same ``kind``; ``pixel_size`` (nm per pixel of each axis) goes into the TIFF's tags or
    the OME-Zarr scale. Returns ``path``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return write_tiff(
            path,
            array,
            axes=axes,
            compression="zlib",
            overwrite=overwrite,
            kind=kind,
            pixel_size=pixel_size,
        )
    if suffix == ".zarr":
        return write_ome_zarr(
            path, array, axes=axes, overwrite=overwrite, kind=kind, pixel_size=pixel_size
        )
    raise EmaeError(f"{path}: cannot write {suffix!r} files; use .tif, .tiff or .zarr")
