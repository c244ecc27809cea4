"""OME-Zarr (NGFF) images: opening zarr arrays and multiscale groups, writing pyramids.

Stores are written as NGFF **v0.4 on zarr format 2** (``.zgroup``/``.zattrs``/``.zarray``, chunk
keys separated by ``/``, Blosc-zstd compression). That combination is read by every current
viewer and library (napari-ome-zarr, neuroglancer, Fiji/MoBIE, webKnossos, ome-zarr-py), while
v0.5 (zarr format 3, metadata under the ``"ome"`` attribute) is not yet read everywhere. Reading
accepts both v0.4 and v0.5, and also plain zarr v2/v3 arrays.

A written image is a group holding levels ``"0"``, ``"1"``, ... Level ``k`` is level 0 averaged
over blocks of ``2**k`` pixels in Y and X (Z is kept); its ``scale`` transform is the level-0 pixel
size times ``2**k`` in Y and X, and its ``translation`` moves the pixel centres to the middle of the
averaged block. Pixel sizes are in nanometers; when none is given the axes carry no unit and the
scale is 1 per pixel.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Mapping, Sequence
from itertools import pairwise, product
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
from tqdm.auto import tqdm

from emae.errors import EmaeError
from emae.io.atomic import atomic_dir, check_writable

logger = logging.getLogger(__name__)

NGFF_VERSION = "0.4"
READABLE_VERSIONS = ("0.4", "0.5")
DEFAULT_CHUNK_YX = 512
ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json")
_AXIS_TYPES = {"time": "T", "channel": "C"}


def is_zarr(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding zarr (v2 or v3) array or group metadata."""
    return any((Path(path) / marker).is_file() for marker in ZARR_MARKERS)


def _is_nonempty_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0


def _multiscales(attrs: Mapping[str, Any]) -> tuple[Any, Any]:
    """Return ``(multiscales, version)`` from v0.5 (under ``"ome"``) or v0.4 (top level) attrs."""
    ome = attrs.get("ome")
    if isinstance(ome, Mapping):
        return ome.get("multiscales"), ome.get("version")
    multiscales = attrs.get("multiscales")
    first = multiscales[0] if _is_nonempty_list(multiscales) else None
    return multiscales, first.get("version") if isinstance(first, Mapping) else None


def validate_ngff(attrs: Mapping[str, Any], *, path: str = "<attributes>") -> None:
    """Check that group attributes hold valid NGFF v0.4 or v0.5 ``multiscales`` metadata.

    Parameters
    ----------
    attrs
        The group attributes: ``.zattrs`` for v0.4, or ``zarr.json`` attributes (with the
        ``"ome"`` key) for v0.5.
    path
        Name of the store, used in error messages.

    Raises
    ------
    EmaeError
        Naming the first missing or malformed key: the ``multiscales`` list, its ``version``,
        ``axes`` (names, types, at most one time and one channel axis, 2 or 3 space axes, order
        time, channel, space), or ``datasets`` (each with a ``path`` and a
        ``coordinateTransformations`` list starting with a ``scale`` of one value per axis, then
        optionally a ``translation`` of the same length).
    """
    multiscales, version = _multiscales(attrs)
    if not _is_nonempty_list(multiscales) or not isinstance(multiscales[0], Mapping):
        raise EmaeError(f"{path}: NGFF metadata needs a non-empty 'multiscales' list of objects")
    if version not in READABLE_VERSIONS:
        raise EmaeError(f"{path}: NGFF version must be one of {READABLE_VERSIONS}, got {version!r}")
    ms = multiscales[0]
    axes = ms.get("axes")
    if not isinstance(axes, list) or not all(isinstance(a, Mapping) and "name" in a for a in axes):
        raise EmaeError(f"{path}: multiscales 'axes' must be a list of objects with a 'name'")
    names = [a["name"] for a in axes]
    if len(set(names)) != len(names) or not 2 <= len(names) <= 5:
        raise EmaeError(f"{path}: multiscales 'axes' must have 2 to 5 unique names, got {names}")
    types = [a.get("type") for a in axes]
    if types.count("space") not in (2, 3) or types.count("time") > 1 or types.count("channel") > 1:
        raise EmaeError(
            f"{path}: axes need 2 or 3 of type 'space' and at most one 'time' and one 'channel', "
            f"got types {types}"
        )
    rank = {"time": 0, "channel": 1, "space": 3}
    order = [rank.get(t, 2) for t in types]
    if order != sorted(order):
        raise EmaeError(f"{path}: axes must be ordered time, channel, space; got {names}")
    datasets = ms.get("datasets")
    if not _is_nonempty_list(datasets):
        raise EmaeError(f"{path}: multiscales needs a non-empty 'datasets' list")
    for i, ds in enumerate(datasets):
        if not isinstance(ds, Mapping) or not isinstance(ds.get("path"), str):
            raise EmaeError(f"{path}: datasets[{i}] needs a 'path' string")
        transforms = ds.get("coordinateTransformations")
        if not _is_nonempty_list(transforms) or not all(isinstance(t, Mapping) for t in transforms):
            raise EmaeError(f"{path}: datasets[{i}] needs a 'coordinateTransformations' list")
        kinds = [t.get("type") for t in transforms]
        if kinds not in (["scale"], ["scale", "translation"]):
            raise EmaeError(
                f"{path}: datasets[{i}] coordinateTransformations must be a 'scale' optionally "
                f"followed by a 'translation', got {kinds}"
            )
        for t in transforms:
            values = t.get(t["type"])
            if not isinstance(values, list) or len(values) != len(names):
                raise EmaeError(
                    f"{path}: datasets[{i}] {t['type']} must list {len(names)} values (one per "
                    f"axis {names}), got {values!r}"
                )


def _axis_letters(axes: list[Mapping[str, Any]]) -> str:
    """One letter per NGFF axis: X, Y, Z for space axes so named, T/C by type, Q otherwise."""
    letters = []
    for axis in axes:
        name = str(axis["name"]).upper()
        if axis.get("type") == "space" and name in ("X", "Y", "Z"):
            letters.append(name)
        else:
            letters.append(_AXIS_TYPES.get(axis.get("type"), "Q"))
    return "".join(letters)


def open_zarr(path: str | Path, *, scale: int = 0) -> tuple[zarr.Array, str | None]:
    """Open a zarr array, or level ``scale`` of an OME-Zarr multiscale group, without reading it.

    Parameters
    ----------
    path
        Folder of a zarr v2/v3 array (``store.zarr``, ``store.zarr/anomaly``) or of an OME-Zarr
        image group (NGFF v0.4 or v0.5).
    scale
        Pyramid level of an OME-Zarr group; must be 0 for a plain array.

    Returns
    -------
    array, axes
        The lazy ``zarr.Array`` and one letter per dimension (``"TCZYX"``, ``"ZYX"``, ...) taken
        from the NGFF axes, or ``None`` for a plain array whose axes are unknown.
    """
    name = str(path)
    try:
        node = zarr.open(store=name, mode="r")
    except (FileNotFoundError, zarr.errors.NodeNotFoundError) as exc:
        raise EmaeError(
            f"{name}: not a zarr array or OME-Zarr group (no .zarray, .zgroup or zarr.json)"
        ) from exc
    except (ValueError, TypeError, KeyError, OSError) as exc:
        raise EmaeError(f"{name}: unreadable zarr metadata ({exc})") from exc
    if isinstance(node, zarr.Array):
        if scale != 0:
            raise EmaeError(f"{name}: scale={scale} requested but this is a single zarr array")
        return node, None
    attrs = node.attrs.asdict()
    multiscales, _ = _multiscales(attrs)
    if multiscales is None:
        children = sorted(node.array_keys()) + sorted(node.group_keys())
        listing = ", ".join(f"{name}/{c}" for c in children) or "nothing"
        raise EmaeError(
            f"{name}: zarr group without OME-Zarr 'multiscales' metadata; it holds {listing}"
        )
    validate_ngff(attrs, path=name)
    datasets = multiscales[0]["datasets"]
    if not 0 <= scale < len(datasets):
        levels = ", ".join(f"{i} ('{ds['path']}')" for i, ds in enumerate(datasets))
        raise EmaeError(f"{name}: scale level {scale} out of range; available levels: {levels}")
    level_path = datasets[scale]["path"]
    try:
        array = node[level_path]
    except KeyError as exc:
        raise EmaeError(f"{name}: multiscales dataset '{level_path}' is missing") from exc
    if not isinstance(array, zarr.Array):
        raise EmaeError(f"{name}: multiscales dataset '{level_path}' is not an array")
    axes = multiscales[0]["axes"]
    if array.ndim != len(axes):
        raise EmaeError(
            f"{name}: level '{level_path}' has shape {array.shape} but {len(axes)} axes"
        )
    return array, _axis_letters(axes)


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


def _pixel_sizes(pixel_size: float | Sequence[float] | None, axes: str) -> list[float]:
    if pixel_size is None:
        return [1.0] * len(axes)
    sizes = [float(pixel_size)] * len(axes) if np.isscalar(pixel_size) else list(pixel_size)
    if len(sizes) != len(axes) or not all(s > 0 for s in sizes):
        raise EmaeError(
            f"pixel_size must be one positive number or one per axis {axes!r}, got {pixel_size!r}"
        )
    return [float(s) for s in sizes]


def _ngff_attrs(
    axes: str, n_levels: int, pixel_size: float | Sequence[float] | None, name: str
) -> dict[str, Any]:
    """NGFF v0.4 ``multiscales`` attributes for a ``"YX"``/``"ZYX"`` pyramid."""
    sizes = _pixel_sizes(pixel_size, axes)
    ngff_axes = []
    for a in axes.lower():
        axis = {"name": a, "type": "space"}
        if pixel_size is not None:
            axis["unit"] = "nanometer"
        ngff_axes.append(axis)
    datasets = []
    for level in range(n_levels):
        f = [1] * (len(axes) - 2) + [2**level] * 2
        scale = [s * k for s, k in zip(sizes, f, strict=True)]
        shift = [s * (k - 1) / 2 for s, k in zip(sizes, f, strict=True)]
        transforms = [{"type": "scale", "scale": scale}]
        if level > 0:
            transforms.append({"type": "translation", "translation": shift})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    multiscale = {
        "version": NGFF_VERSION,
        "name": name,
        "axes": ngff_axes,
        "datasets": datasets,
        "type": "mean",
        "metadata": {"method": "emae.io.ome_zarr.build_pyramid", "kernel": "2x2 mean in YX"},
    }
    return {"multiscales": [multiscale]}


def _check_target(path: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty ``path`` unless ``overwrite``, and never replace a folder
    that is not a zarr store."""
    check_writable(path, overwrite=overwrite)
    if path.is_dir() and any(path.iterdir()) and not is_zarr(path):
        raise EmaeError(f"{path}: exists and is not a zarr store; refusing to replace it")


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
        ``"YX"`` or ``"ZYX"``.
    chunks
        Chunk shape of every level; default one section by 512x512.
    n_levels
        Number of levels; default: halve Y and X until a section fits in one chunk.
    pixel_size
        Level-0 pixel size in nanometers, one number or one per axis; ``None`` writes unitless axes.
    name
        Image name stored in the metadata; default the folder name.
    overwrite
        Replace an existing zarr store at ``path``; otherwise a non-empty ``path`` is an error.

    Returns
    -------
    zarr.Group
        The image group, opened for writing; arrays ``"0"``, ``"1"``, ...
    """
    path = Path(path)
    if axes not in ("YX", "ZYX") or len(shape) != len(axes):
        raise EmaeError(f"{path}: axes must be 'YX' or 'ZYX' matching shape, got {axes!r} {shape}")
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
    attrs = _ngff_attrs(axes, n_levels, pixel_size, name or path.name)
    _check_target(path, overwrite)
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
    group.attrs.update(attrs)
    return group


def _blocks(shape: Sequence[int], chunks: Sequence[int]) -> Iterator[tuple[slice, ...]]:
    """Chunk-aligned regions covering ``shape``, in C order."""
    ranges = [range(0, s, c) for s, c in zip(shape, chunks, strict=True)]
    for starts in product(*ranges):
        yield tuple(slice(a, min(a + c, s)) for a, c, s in zip(starts, chunks, shape, strict=True))


def _downsample_mean(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Average 2x2 pixel blocks in the last two axes; an odd edge repeats its last row/column."""
    pad = [(0, 0)] * (block.ndim - 2) + [(0, block.shape[-2] % 2), (0, block.shape[-1] % 2)]
    block = np.pad(block.astype(np.float64), pad, mode="edge")
    h, w = block.shape[-2] // 2, block.shape[-1] // 2
    mean = block.reshape(*block.shape[:-2], h, 2, w, 2).mean(axis=(-3, -1))
    if dtype.kind in "iu":
        mean = np.rint(mean)
    return mean.astype(dtype)


def build_pyramid(path: str | Path, *, progress: bool = False) -> None:
    """Compute levels 1.. of an image made by :func:`create_ome_zarr` from its level 0.

    Each level is the 2x2 (Y, X) mean of the previous one, rounded to the nearest integer for
    integer dtypes. Work proceeds one output chunk at a time, so memory stays at a few chunks
    whatever the image size. ``progress`` shows a progress bar per level.
    """
    group = zarr.open_group(store=str(path), mode="r+")
    validate_ngff(group.attrs.asdict(), path=str(path))
    datasets = group.attrs["multiscales"][0]["datasets"]
    for prev, cur in pairwise(datasets):
        src, dst = group[prev["path"]], group[cur["path"]]
        logger.info("%s: building level %s with shape %s", path, cur["path"], dst.shape)
        n_blocks = int(np.prod([-(-s // c) for s, c in zip(dst.shape, dst.chunks, strict=True)]))
        regions = _blocks(dst.shape, dst.chunks)
        desc = f"level {cur['path']}"
        for region in tqdm(regions, total=n_blocks, desc=desc, disable=not progress):
            y, x = (
                slice(2 * r.start, min(2 * r.stop, s))
                for r, s in zip(region[-2:], src.shape[-2:], strict=True)
            )
            dst[region] = _downsample_mean(np.asarray(src[(*region[:-2], y, x)]), dst.dtype)


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
) -> Path:
    """Write an in-memory ``"YX"``/``"ZYX"`` array as an NGFF v0.4 multiscale image, atomically.

    The store is written into a temporary folder next to ``path`` and renamed into place at the
    end (:func:`~emae.io.atomic.atomic_dir`), so ``path`` never holds a half-written image.
    Arguments are those of :func:`create_ome_zarr`; ``array`` has shape ``(H, W)`` or
    ``(Z, H, W)`` and any integer or float dtype. Returns ``path``.
    """
    path = Path(path)
    array = np.asarray(array)
    _check_target(path, overwrite)
    with atomic_dir(path, overwrite=overwrite) as tmp:
        group = create_ome_zarr(
            tmp, array.shape, array.dtype, axes=axes, chunks=chunks, n_levels=n_levels,
            pixel_size=pixel_size, name=name or path.name,
        )  # fmt: skip
        group["0"][...] = array
        build_pyramid(tmp)
    return path
