"""Physical pixel sizes: read from the formats that carry them, always in nanometers.

EM volumes are anisotropic (e.g. 30 x 4 x 4 nm), and maps overlay their source in napari or
neuroglancer only when they carry the same scale. The readers (:mod:`emae.io.readers`) take the
pixel size from

- OME-Zarr: the ``scale`` transform of the level read, with the axes' units;
- OME-TIFF: ``PhysicalSizeX/Y/Z`` and their units in the OME-XML;
- ImageJ TIFF: the X/Y resolution tags (pixels per ``unit``) and ``spacing`` for Z;
- TIFFs written by emae: ``pixel_size_nm`` in the JSON description;
- other TIFFs: the X/Y resolution tags when their unit is a length (centimeter, millimeter,
  micrometer), never inches (that is a print resolution, not a microscope's);
- HDF5: the ``element_size_um`` attribute of the dataset (the ilastik / Fiji convention).

Each function returns one size per dimension of the stored array (``None`` for a dimension
without one), or ``None`` when the file holds no physical size. :func:`parse_pixel_size` reads
the ``--pixel-size`` option that supplies or overrides them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from emae.errors import EmaeError

logger = logging.getLogger(__name__)

#: Nanometers per unit, for the unit names of NGFF (UDUNITS), OME and ImageJ.
NM_PER_UNIT = {
    "angstrom": 0.1,
    "å": 0.1,
    "nanometer": 1.0,
    "nm": 1.0,
    "micrometer": 1e3,
    "micron": 1e3,
    "um": 1e3,
    "µm": 1e3,
    "μm": 1e3,
    "\\u00b5m": 1e3,
    "millimeter": 1e6,
    "mm": 1e6,
    "centimeter": 1e7,
    "cm": 1e7,
    "meter": 1e9,
    "m": 1e9,
    "picometer": 1e-3,
    "pm": 1e-3,
}

Sizes = list[float | None]


def to_nm(value: Any, unit: Any) -> float | None:
    """``value`` in ``unit`` as nanometers, or None when either is missing or unknown."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    factor = NM_PER_UNIT.get(str(unit).strip().lower()) if unit is not None else None
    if factor is None or not value > 0:
        return None
    return value * factor


def ngff_sizes(multiscale: Mapping[str, Any], level: int) -> Sizes | None:
    """Pixel sizes of ``level`` of an NGFF ``multiscales[0]`` entry, one per axis."""
    axes = multiscale.get("axes", [])
    transforms = multiscale["datasets"][level].get("coordinateTransformations", [])
    scale = next((t.get("scale") for t in transforms if t.get("type") == "scale"), None)
    if not isinstance(scale, list) or len(scale) != len(axes):
        return None
    sizes = [
        to_nm(s, a.get("unit")) if a.get("type") == "space" else None
        for s, a in zip(scale, axes, strict=True)
    ]
    return sizes if any(s is not None for s in sizes) else None


def _ome_sizes(xml: str, axes: str) -> Sizes | None:
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None
    pixels = next((e for e in root.iter() if e.tag.endswith("}Pixels") or e.tag == "Pixels"), None)
    if pixels is None:
        return None
    found = {
        a: to_nm(pixels.get(f"PhysicalSize{a}"), pixels.get(f"PhysicalSize{a}Unit", "µm"))
        for a in "ZYX"
    }
    sizes = [found.get(a) for a in axes.upper()]
    return sizes if any(s is not None for s in sizes) else None


def _resolution_nm(page: Any, unit_nm: float | None) -> tuple[float | None, float | None]:
    """(Y, X) pixel sizes from the resolution tags: pixels per unit -> nm per pixel."""
    tags = page.tags
    if unit_nm is None or "XResolution" not in tags or "YResolution" not in tags:
        return None, None

    def size(tag: str) -> float | None:
        num, den = tags[tag].value
        return unit_nm * den / num if num > 0 and den > 0 else None

    return size("YResolution"), size("XResolution")


def tiff_sizes(tif: Any, axes: str, page: Any) -> Sizes | None:
    """Pixel sizes of a TIFF whose series has ``axes`` (tifffile letters), from ``page``'s tags.

    Parameters
    ----------
    tif
        The open ``tifffile.TiffFile``.
    axes
        One letter per stored dimension, e.g. ``"ZYX"`` or ``"QYX"``.
    page
        The first page (key frame) of the level read.
    """
    letters = axes.upper().replace("Q", "Z").replace("I", "Z")
    if tif.is_ome and tif.ome_metadata:
        return _ome_sizes(tif.ome_metadata, letters)
    z = None
    if tif.shaped_metadata:
        stored = tif.shaped_metadata[0].get("pixel_size_nm")
        if isinstance(stored, list) and len(stored) == len(axes):
            return [float(s) if s else None for s in stored]
    if tif.is_imagej and tif.imagej_metadata:
        unit_nm = to_nm(1.0, tif.imagej_metadata.get("unit"))
        z = to_nm(tif.imagej_metadata.get("spacing"), tif.imagej_metadata.get("unit"))
    else:
        unit_name = getattr(page.tags.get("ResolutionUnit"), "value", None)
        unit_nm = {2: None, 3: 1e7, 4: 1e6, 5: 1e3}.get(int(unit_name or 2))  # inch: never
    y, x = _resolution_nm(page, unit_nm)
    sizes = [y if a == "Y" else x if a == "X" else z if a == "Z" else None for a in letters]
    return sizes if any(s is not None for s in sizes) else None


def hdf5_sizes(dataset: Any) -> Sizes | None:
    """Pixel sizes of an HDF5 dataset from its ``element_size_um`` attribute."""
    value = dataset.attrs.get("element_size_um")
    if value is None:
        return None
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if len(values) != dataset.ndim:
        return None
    return [to_nm(v, "um") for v in values]


def parse_pixel_size(text: str | Sequence[float] | float | None) -> tuple[float, ...] | None:
    """``--pixel-size``: one size for Y and X (``4``), or Y,X (``4,4``) or Z,Y,X (``30,4,4``),
    each a number in nanometers or with a unit (``0.004um``, ``30nm``).

    Returns
    -------
    tuple of float or None
        The sizes in nanometers, as given (one, two or three numbers).
    """
    if text is None:
        return None
    parts = (
        [str(t) for t in text]
        if isinstance(text, (list, tuple))
        else [p for p in re.split(r"[,x ]+", str(text).strip()) if p]
    )
    sizes = []
    for part in parts:
        match = re.fullmatch(r"([0-9.eE+-]+)\s*([a-zA-Zµμå]*)", part.strip())
        size = to_nm(match.group(1), match.group(2) or "nm") if match else None
        if size is None:
            raise EmaeError(
                f"--pixel-size: cannot read {part!r}; give sizes in nanometers such as 4 "
                "(Y and X), 4,4 or 30,4,4 (Z,Y,X), or with a unit: 0.004um"
            )
        sizes.append(size)
    if not 1 <= len(sizes) <= 3:
        raise EmaeError(f"--pixel-size takes one to three sizes, got {len(sizes)}: {text!r}")
    return tuple(sizes)
