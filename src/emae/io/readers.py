"""Open any supported image file lazily as an :class:`~emae.io.image.Image`.

What is lazy for which format:

- TIFF (``.tif``/``.tiff``; BigTIFF, tiled or striped, single page or multi-page stack):
  uncompressed contiguous data is memory-mapped; anything else is read through tifffile's zarr
  store, which decodes only the tiles or strips a region touches. A striped TIFF stored as one
  strip per page decodes the whole page for any region. A TIFF whose pages were saved as
  separate series (one per page, as several ``TiffWriter.write`` calls produce) is a ``"ZYX"``
  stack of its pages, read page by page; series of other shapes are refused.
- zarr v2/v3 arrays and OME-Zarr groups (NGFF v0.4 and v0.5): read chunk by chunk.
- HDF5 (``file.h5:/dataset``; also ``.hdf5``/``.hdf``): the h5py dataset, read by region. The file
  stays open for as long as the image is alive. h5py is imported only when needed.
- ``.npy``: memory-mapped.
- PNG/JPEG: decoded eagerly (they are small); RGB is converted to gray with a logged warning.
- A folder of 2D TIFF/PNG/JPEG files, sorted naturally (``2`` before ``10``): a ``"ZYX"`` stack
  whose sections are read on demand, one file per section.

Singleton dimensions are dropped; what remains must be ``"YX"`` or ``"ZYX"``. Images with several
channels or samples (RGB TIFF, OME ``c`` > 1) are refused. Pixels must be integers or floats.
Images pickle by source: unpickling (in a worker process, say) opens the source again from its
path instead of copying pixels or open file handles. Big-endian data is returned in native byte
order.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from emae.errors import EmaeError
from emae.io.image import Image
from emae.io.ngff import is_zarr, open_zarr
from emae.io.pixel_size import hdf5_sizes, tiff_sizes
from emae.io.sections import (
    SECTION_SUFFIXES,
    TIFF_SUFFIXES,
    SectionFolder,
    TiffPages,
    section_files,
)
from emae.io.sources import HDF5_SUFFIXES, SUPPORTED, split_source

logger = logging.getLogger(__name__)

#: Chunks larger than this (bytes) make every random patch read slow; opening warns.
LARGE_CHUNK_BYTES = 64 * 2**20

_READ_ERRORS = (OSError, ValueError, RuntimeError, KeyError, EOFError, zlib.error)


def _reopen(source: str, scale: int) -> _View:
    return open_image(source, scale=scale).data


class _View:
    """Array-like view of ``data`` keeping dimensions ``keep`` (the others have size 1).

    Reads return new, writable, native-byte-order ``numpy`` arrays; a failing read (corrupt
    chunk, truncated file, missing codec) becomes an :class:`EmaeError` naming the file. ``owner``
    keeps an open file handle alive. ``zarr_store`` is true only for arrays of a zarr store on
    disk, whose unwritten chunks can be counted. Pickling stores only ``(path, scale)``.
    """

    def __init__(
        self,
        data: Any,
        keep: Sequence[int],
        path: str,
        scale: int = 0,
        owner: Any = None,
        zarr_store: bool = False,
    ) -> None:
        self._data, self._keep, self._path, self._owner = data, tuple(keep), path, owner
        self._scale, self._zarr_store = scale, zarr_store
        self.shape = tuple(int(data.shape[i]) for i in self._keep)
        self.dtype = np.dtype(data.dtype).newbyteorder("=")
        self.ndim = len(self.shape)

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:
        return _reopen, (os.path.abspath(self._path), self._scale)

    @property
    def chunks(self) -> tuple[int, ...] | None:
        """Chunk shape of the stored data along the kept dimensions, if chunked."""
        chunks = getattr(self._data, "chunks", None)
        return None if chunks is None else tuple(int(chunks[i]) for i in self._keep)

    @property
    def missing_chunks(self) -> int | None:
        """Chunks of a zarr store that were never written (they read back as the fill value), or
        None for other formats (TIFF, HDF5, ...), which have no unwritten chunks."""
        if not self._zarr_store:
            return None
        return int(self._data.nchunks) - int(self._data.nchunks_initialized)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = (slice(None),) * (self.ndim - len(key) + 1)
            key = key[:i] + fill + key[i + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        full: list[Any] = [0] * len(self._data.shape)
        for i, k in zip(self._keep, key, strict=True):
            full[i] = k
        try:
            out = np.asarray(self._data[tuple(full)])
        except _READ_ERRORS as exc:
            raise EmaeError(f"{self._path}: cannot read region {key}: {exc}") from exc
        # A view into a memory map or an eagerly read image is copied, so every read returns an
        # independent, writable array whatever the format.
        if out.dtype != self.dtype:
            return out.astype(self.dtype)
        return out if out.flags.owndata and out.flags.writeable else out.copy()


def _image(
    data: Any,
    labels: str | None,
    path: str,
    *,
    scale: int = 0,
    owner: Any = None,
    zarr_store: bool = False,
    sizes: Sequence[float | None] | None = None,
) -> Image:
    """Wrap ``data`` as a ``"YX"``/``"ZYX"`` Image, dropping singleton dims.

    ``labels`` has one letter per dimension (tifffile/NGFF style: ``Y``, ``X``, ``C``/``S`` for
    channels and samples, anything else for a stack axis); ``None`` means unknown, in which case
    all singleton dimensions are dropped and the last two are taken as Y and X. ``sizes`` are
    the pixel sizes in nm of every dimension of ``data`` (:mod:`emae.io.pixel_size`).
    """
    dtype = np.dtype(data.dtype)
    if dtype.kind not in "uif":
        raise EmaeError(f"{path}: unsupported pixel dtype {dtype}; expected integers or floats")
    shape = tuple(int(s) for s in data.shape)
    what = f"got shape {shape}" + (f" with axes {labels!r}" if labels else "")
    if labels is None:
        kept = [i for i, s in enumerate(shape) if s > 1]
        if len(kept) < 2:
            raise EmaeError(f"{path}: expected a 2D (YX) or 3D (ZYX) image, {what}")
        yi, xi = kept[-2], kept[-1]
        labels = "".join("Y" if i == yi else "X" if i == xi else "Q" for i in range(len(shape)))
    if "Y" not in labels or "X" not in labels:
        raise EmaeError(f"{path}: image has no Y and X axes, {what}")
    yi, xi = labels.index("Y"), labels.index("X")
    extra = [i for i, s in enumerate(shape) if s > 1 and i not in (yi, xi)]
    channels = [i for i in extra if labels[i] in "CS"]
    if channels:
        raise EmaeError(
            f"{path}: image has {shape[channels[0]]} channels or samples per pixel (e.g. RGB), "
            f"{what}; emae reads single-channel grayscale images"
        )
    if len(extra) > 1 or not yi < xi or any(i > yi for i in extra):
        raise EmaeError(f"{path}: expected a 2D (YX) or 3D (ZYX) image, {what}")
    keep = [*extra, yi, xi]
    _warn_large_chunks(data, path)
    view = _View(data, keep, path, scale, owner, zarr_store)
    pixel_size = None
    if sizes is not None and len(sizes) == len(shape):
        kept = tuple(sizes[i] for i in keep)
        pixel_size = kept if any(s is not None for s in kept) else None
    return Image(view, "ZYX" if extra else "YX", path, pixel_size)


def _warn_large_chunks(data: Any, path: str) -> None:
    """Warn when the smallest readable unit is so large that random patches will be slow.

    A compressed TIFF written as one strip per page, or a zarr array with huge chunks, decodes
    the whole unit for every patch read: training or tiled inference over such files runs many
    times slower than over a chunked copy.
    """
    chunks = getattr(data, "chunks", None)
    if not chunks:
        return
    nbytes = int(np.prod(chunks)) * np.dtype(data.dtype).itemsize
    if nbytes > LARGE_CHUNK_BYTES:
        logger.warning(
            "%s: every read decodes a whole chunk of %s (%.0f MB); random patches will be slow. "
            "Rewrite it in smaller chunks, e.g. as OME-Zarr (emae.io.write_ome_zarr) or a tiled "
            "TIFF (emae.io.write_tiff with compression='zlib')",
            path,
            "x".join(map(str, chunks)),
            nbytes / 1e6,
        )


def _check_tiff_pages(path: str, pages: Sequence[Any], end: int | None = None) -> None:
    """Refuse pages whose compression cannot be decoded or whose data ends past the file.

    ``end`` is the end of the data of a contiguous series, where tifffile knows it.
    """
    for page in pages:
        try:
            tifffile.TIFF.DECOMPRESSORS[page.compression]
        except KeyError as exc:
            name = getattr(page.compression, "name", page.compression)
            raise EmaeError(
                f"{path}: TIFF compression {name} is unsupported without the "
                "'imagecodecs' package (pip install imagecodecs)"
            ) from exc
    ends = [o + n for p in pages for o, n in zip(p.dataoffsets, p.databytecounts, strict=True)]
    if max([*ends, end or 0]) > os.path.getsize(path):
        raise EmaeError(f"{path}: TIFF is truncated: pixel data ends past the end of the file")


def _check_scale(path: str, scale: int, n_levels: int) -> None:
    if not 0 <= scale < n_levels:
        raise EmaeError(f"{path}: scale level {scale} out of range; TIFF levels: 0..{n_levels - 1}")


def _open_tiff(path: str, scale: int) -> Image:
    try:
        tif = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError, OSError, EOFError) as exc:
        raise EmaeError(f"{path}: not a readable TIFF file ({exc})") from exc
    try:
        if len(tif.series) > 1:  # e.g. one series per page: stack the pages
            _check_scale(path, scale, min(len(s.levels) for s in tif.series))
            stack = TiffPages([s.levels[scale] for s in tif.series], path)
            _check_tiff_pages(path, stack.pages)
            sizes = tiff_sizes(tif, "YX", stack.pages[0])
            sizes = None if sizes is None else [None, *sizes]
            return _image(stack, "ZYX", path, scale=scale, owner=tif, sizes=sizes)
        levels = tif.series[0].levels
        _check_scale(path, scale, len(levels))
        level = levels[scale]
        page = level.keyframe
        last = (level.pages[-1] if len(level.pages) else None) or page
        contiguous = level.dataoffset is not None
        _check_tiff_pages(
            path, [page, last], level.dataoffset + level.nbytes if contiguous else None
        )
        sizes = tiff_sizes(tif, level.axes, page)
        if contiguous and scale == 0:
            data = tifffile.memmap(path, series=0, mode="r")
            tif.close()
            return _image(data, level.axes, path, sizes=sizes)
        import zarr

        data = zarr.open(store=tif.aszarr(series=0, level=scale), mode="r")
        return _image(data, level.axes, path, scale=scale, owner=tif, sizes=sizes)
    except EmaeError:
        tif.close()
        raise
    except (tifffile.TiffFileError, ValueError, OSError, IndexError) as exc:
        tif.close()
        raise EmaeError(f"{path}: not a readable TIFF file ({exc})") from exc


def _open_pil(path: str) -> Image:
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(path) as im:
            if im.mode not in ("L", "I", "I;16", "I;16B", "F"):
                logger.warning("%s: converting %s image to 8-bit gray", path, im.mode)
                im = im.convert("L")
            data = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise EmaeError(f"{path}: not a readable PNG/JPEG image ({exc})") from exc
    if data.ndim != 2:
        raise EmaeError(f"{path}: expected a 2D image, got shape {data.shape}")
    return _image(data, "YX", path)


def _open_hdf5(path: str, dataset: str | None) -> Image:
    try:
        import h5py
    except ImportError as exc:
        raise EmaeError(f"{path}: reading HDF5 needs h5py (pip install 'emae[hdf5]')") from exc
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise EmaeError(f"{path}: not a readable HDF5 file ({exc})") from exc
    names: list[str] = []
    f.visititems(
        lambda name, obj: names.append("/" + name) if isinstance(obj, h5py.Dataset) else None
    )
    if dataset is None and len(names) == 1:
        dataset = names[0]
    node = f.get(dataset) if dataset else None
    if not isinstance(node, h5py.Dataset):
        f.close()
        wanted = f"dataset {dataset!r} not found" if dataset else "name a dataset as file.h5:/path"
        raise EmaeError(f"{path}: {wanted}; available datasets: {', '.join(names) or 'none'}")
    try:
        return _image(node, None, f"{path}:{node.name}", owner=f, sizes=hdf5_sizes(node))
    except EmaeError:
        f.close()
        raise


def _open_npy(path: str) -> Image:
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise EmaeError(f"{path}: not a readable .npy file ({exc})") from exc
    return _image(data, None, path)


def open_image(source: str | Path, *, scale: int = 0) -> Image:
    """Open an image file, store or folder lazily.

    Parameters
    ----------
    source
        A TIFF, PNG or JPEG file; a ``.npy`` file; a zarr array or OME-Zarr image folder
        (``store.zarr``, ``store.zarr/probabilities``); an HDF5 dataset as
        ``file.h5:/path/to/dataset`` (the dataset may be omitted when the file holds exactly
        one); or a folder of 2D
        TIFF/PNG/JPEG sections, stacked in natural name order.
    scale
        Pyramid level to open for OME-Zarr images and pyramidal TIFFs (0 is full resolution).

    Returns
    -------
    Image
        Axes ``"YX"`` (shape ``(H, W)``) or ``"ZYX"`` (shape ``(Z, H, W)``), with the stored
        integer or float dtype. Nothing is read until the image is sliced.

    Raises
    ------
    EmaeError
        One line naming ``source`` and the problem: missing, empty, corrupt or truncated file,
        unsupported extension, dtype or dimensions, missing dataset or pyramid level, ...
    """
    text = str(source)
    if scale < 0:
        raise EmaeError(f"{text}: scale must be >= 0, got {scale}")
    file, dataset = split_source(text)
    if file.lower().endswith(HDF5_SUFFIXES) and not Path(text).is_dir():
        if not Path(file).is_file():
            raise EmaeError(f"{file}: no such file")
        if scale:
            raise EmaeError(f"{text}: scale={scale} requested but HDF5 datasets have no levels")
        return _open_hdf5(file, dataset or None)
    path = Path(text)
    if not path.exists():
        raise EmaeError(f"{text}: no such file or folder")
    if path.is_dir():
        if is_zarr(path) or path.suffix.lower() == ".zarr":
            array, labels, sizes = open_zarr(path, scale=scale)
            return _image(array, labels, text, scale=scale, zarr_store=True, sizes=sizes)
        files = section_files(path)
        if not files:
            raise EmaeError(
                f"{text}: folder holds no zarr store and no {', '.join(SECTION_SUFFIXES)} files"
            )
        if scale:
            raise EmaeError(f"{text}: scale={scale} requested but a folder of sections has none")
        return _image(SectionFolder(files, text), "ZYX", text)
    suffix = path.suffix.lower()
    if suffix not in (*SECTION_SUFFIXES, ".npy"):
        raise EmaeError(f"{text}: unsupported file type {suffix!r}; supported: {SUPPORTED}")
    if path.stat().st_size == 0:
        raise EmaeError(f"{text}: file is empty (0 bytes)")
    if suffix in TIFF_SUFFIXES:
        return _open_tiff(text, scale)
    if scale:
        raise EmaeError(f"{text}: scale={scale} requested but {suffix} files have no levels")
    return _open_npy(text) if suffix == ".npy" else _open_pil(text)
