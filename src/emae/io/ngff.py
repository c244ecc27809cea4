"""NGFF (OME-Zarr) metadata: validating and building ``multiscales``, opening zarr images.

Reading accepts NGFF v0.4 (zarr format 2, ``multiscales`` at the top of ``.zattrs``) and v0.5
(zarr format 3, metadata under the ``"ome"`` attribute of ``zarr.json``), and also plain zarr
v2/v3 arrays. The metadata that emae writes is v0.4 (:data:`NGFF_VERSION`): level ``k`` of a
pyramid is level 0 averaged over blocks of ``2**k`` pixels in Y and X (Z is kept); its ``scale``
transform is the level-0 pixel size times ``2**k`` in Y and X, and its ``translation`` moves the
pixel centres to the middle of the averaged block. Pixel sizes are in nanometers; when none is
given the axes carry no unit and the scale is 1 per pixel. Writing the arrays is
:mod:`emae.io.ome_zarr`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from emae.errors import EmaeError
from emae.io.pixel_size import ngff_sizes

NGFF_VERSION = "0.4"
READABLE_VERSIONS = ("0.4", "0.5")
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


def open_zarr(
    path: str | Path, *, scale: int = 0
) -> tuple[zarr.Array, str | None, list[float | None] | None]:
    """Open a zarr array, or level ``scale`` of an OME-Zarr multiscale group, without reading it.

    Parameters
    ----------
    path
        Folder of a zarr v2/v3 array or of an OME-Zarr image group (NGFF v0.4 or v0.5), e.g.
        ``store.zarr`` or ``store.zarr/probabilities``.
    scale
        Pyramid level of an OME-Zarr group; must be 0 for a plain array.

    Returns
    -------
    array, axes, sizes
        The lazy ``zarr.Array``; one letter per dimension (``"TCZYX"``, ``"ZYX"``, ...) taken
        from the NGFF axes, or ``None`` for a plain array whose axes are unknown; the pixel
        size of each dimension at this level in nanometers (None where the axis has no length
        unit), or ``None`` when no axis has one.
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
        return node, None, None
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
    return array, _axis_letters(axes), ngff_sizes(multiscales[0], scale)


def _pixel_sizes(
    pixel_size: float | Sequence[float | None] | None, axes: str
) -> list[float | None]:
    """One size in nm (or None: unknown) per axis of ``axes``."""
    if pixel_size is None:
        return [None] * len(axes)
    sizes = [float(pixel_size)] * len(axes) if np.isscalar(pixel_size) else list(pixel_size)
    if len(sizes) != len(axes) or not all(s is None or s > 0 for s in sizes):
        raise EmaeError(
            f"pixel_size must be one positive number or one per axis {axes!r}, got {pixel_size!r}"
        )
    return [None if s is None else float(s) for s in sizes]


def multiscales_attrs(
    axes: str,
    n_levels: int,
    pixel_size: float | Sequence[float] | None,
    name: str,
    channel_names: Sequence[str] | None = None,
    method: str = "mean",
) -> dict[str, Any]:
    """NGFF v0.4 ``multiscales`` group attributes for a 2x2-mean (or nearest) pyramid.

    Parameters
    ----------
    axes
        ``"YX"``, ``"ZYX"``, or with a leading channel axis ``"CYX"``, ``"CZYX"``.
    n_levels
        Number of levels; level ``k`` is level 0 averaged over ``2**k`` pixels in Y and X.
    pixel_size
        Level-0 pixel size in nanometers, one number or one per spatial axis (``None`` entries
        for axes of unknown size); ``None`` for unitless axes with a scale of 1 per pixel.
    name
        Image name stored in the metadata.
    channel_names
        One label per channel (``"C"`` axes), stored as OMERO channel metadata, which napari
        shows as layer names.
    method
        ``"mean"`` (images) or ``"nearest"`` (label images: every second pixel, no shift).

    Returns
    -------
    dict
        ``{"multiscales": [...]}`` (plus ``"omero"`` with channel names), valid for
        :func:`validate_ngff`.
    """
    space = axes.removeprefix("C")
    known = [None] * (len(axes) - len(space)) + _pixel_sizes(pixel_size, space)
    sizes = [1.0 if s is None else s for s in known]
    ngff_axes: list[dict[str, Any]] = []
    for a, size in zip(axes.lower(), known, strict=True):
        if a == "c":
            ngff_axes.append({"name": "c", "type": "channel"})
            continue
        axis = {"name": a, "type": "space"}
        if size is not None:
            axis["unit"] = "nanometer"
        ngff_axes.append(axis)
    datasets = []
    for level in range(n_levels):
        f = [1] * (len(axes) - 2) + [2**level] * 2
        scale = [s * k for s, k in zip(sizes, f, strict=True)]
        centre = 0.5 if method == "mean" else 0.0  # nearest keeps pixel 0 of each block
        shift = [s * (k - 1) * centre for s, k in zip(sizes, f, strict=True)]
        transforms = [{"type": "scale", "scale": scale}]
        if level > 0:
            transforms.append({"type": "translation", "translation": shift})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    multiscale = {
        "version": NGFF_VERSION,
        "name": name,
        "axes": ngff_axes,
        "datasets": datasets,
        "type": method,
        "metadata": {"method": "emae.io.ome_zarr.build_pyramid", "kernel": f"2x2 {method} in YX"},
    }
    attrs: dict[str, Any] = {"multiscales": [multiscale]}
    if channel_names is not None:
        attrs["omero"] = {
            "name": name,
            "version": NGFF_VERSION,
            "channels": [
                {
                    "label": str(c),
                    "active": True,
                    "color": "FFFFFF",
                    "window": {"start": 0, "end": 255, "min": 0, "max": 255},
                }
                for c in channel_names
            ],
        }
    return attrs
