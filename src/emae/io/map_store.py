"""The layout of a map store: what ``emae score --out MAP.zarr`` and ``emae detect`` write.

A map store is an OME-Zarr (NGFF v0.4) entry point that napari, ome-zarr-py, ngff-zarr and
neuroglancer open at its root::

    OUT.zarr/                   the anomaly map: a multiscale image, float32, larger = worse
    OUT.zarr/probabilities/     classifier runs: one channel per class, uint8, p = value / 255
    OUT.zarr/labels/detections  detect: connected regions as an NGFF image-label (uint32)

A classifier run without an anomaly map (its autoencoder folder is gone) has the
probabilities at the root instead. The root's ``emae`` attribute says which
(:func:`store_images`). float32 is the map's dtype because it is what every viewer reads:
neuroglancer's zarr source and the Java readers behind Fiji, BigDataViewer and MoBIE do not
read float16. Class channels get distinct colours, and the clean class is gray and inactive,
so that opening the store shows the artifacts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from emae.io.ome_zarr import create_ome_zarr

ANOMALY_KIND = "anomaly map"
PROBABILITY_KIND = "probability map"
PROBABILITIES = "probabilities"
LABELS = "labels"
#: dtype of stored anomaly maps (see the module docstring).
ANOMALY_DTYPE = np.float32
#: Colours of class channels and labels (hex RGB), distinct from each other and from gray.
CLASS_COLOURS = (
    "E6194B",
    "3CB44B",
    "FFE119",
    "4363D8",
    "F58231",
    "911EB4",
    "42D4F4",
    "F032E6",
    "BFEF45",
    "FABED4",
    "469990",
    "DCBEFF",
    "9A6324",
    "800000",
    "AAFFC3",
    "808000",
)
CLEAN_COLOUR = "A0A0A0"


def class_colours(classes: Sequence[str], clean_class: str = "clean") -> list[str]:
    """One hex colour per class: distinct colours in order, gray for ``clean_class``."""
    colours, k = [], 0
    for name in classes:
        if name == clean_class:
            colours.append(CLEAN_COLOUR)
        else:
            colours.append(CLASS_COLOURS[k % len(CLASS_COLOURS)])
            k += 1
    return colours


def image_paths(out: str | Path, *, anomaly: bool, probabilities: bool) -> dict[str, Path]:
    """Where a store's images are: the anomaly map at the root, the probabilities below it (or
    at the root when there is no anomaly map)."""
    out = Path(out)
    paths = {"anomaly": out} if anomaly else {}
    if probabilities:
        paths["probabilities"] = out / PROBABILITIES if anomaly else out
    return paths


def _probability_attrs(path: Path, classes: Sequence[str], clean_class: str) -> None:
    """Colours, visibility and the meaning of the values in the OMERO and emae attributes."""
    group = zarr.open_group(str(path), mode="r+")
    attrs = group.attrs.asdict()
    colours = class_colours(classes, clean_class)
    for channel, colour, name in zip(attrs["omero"]["channels"], colours, classes, strict=True):
        channel.update(color=colour, active=name != clean_class)
    attrs["omero"]["rdefs"] = {"model": "color"}
    attrs["emae"].update(
        classes=list(classes),
        clean_class=clean_class,
        value_scale=1 / 255,
        meaning="probability of each class = stored value / 255",
    )
    group.attrs.update(attrs)


def create_map_store(
    out: str | Path,
    shape: Sequence[int],
    axes: str,
    *,
    chunks: Sequence[int],
    anomaly: bool = True,
    classes: Sequence[str] = (),
    clean_class: str = "clean",
    pixel_size: Sequence[float | None] | None = None,
) -> dict[str, Path]:
    """Create an empty map store at ``out`` (which must not exist) and return its images.

    Parameters
    ----------
    out
        The ``.zarr`` folder to create.
    shape, axes
        ``(H, W)`` with ``"YX"`` or ``(Z, H, W)`` with ``"ZYX"``: the mapped volume.
    chunks
        Chunk shape of the spatial axes, e.g. ``(1, 1024, 1024)``.
    anomaly
        Whether there is an anomaly map (the root image).
    classes
        Class names of a classifier's probability channels, in the classifier's order.
    clean_class
        The class shown gray and inactive.
    pixel_size
        Nanometers per pixel of each spatial axis (None for unknown ones), from the input.

    Returns
    -------
    dict
        ``{"anomaly": path, "probabilities": path}`` for the images created.
    """
    images = image_paths(out, anomaly=anomaly, probabilities=bool(classes))
    if anomaly:
        create_ome_zarr(
            images["anomaly"],
            shape,
            ANOMALY_DTYPE,
            axes=axes,
            chunks=chunks,
            name="anomaly",
            kind=ANOMALY_KIND,
            pixel_size=pixel_size,
        )
    if classes:
        path = images["probabilities"]
        create_ome_zarr(
            path,
            (len(classes), *shape),
            np.uint8,
            axes="C" + axes,
            chunks=(len(classes), *chunks),
            name=PROBABILITIES,
            channel_names=classes,
            kind=PROBABILITY_KIND,
            pixel_size=pixel_size,
        )
        _probability_attrs(path, classes, clean_class)
    return images


def _root_kind(path: Path) -> Any:
    try:
        return json.loads((path / ".zattrs").read_text()).get("emae", {}).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def store_images(out: str | Path) -> dict[str, Path]:
    """The images of a map store: ``{"anomaly": path, "probabilities": path}``, those present.

    Also reads stores of the layout before the anomaly map moved to the root
    (``OUT.zarr/anomaly``).
    """
    out = Path(out)
    images: dict[str, Path] = {}
    kind = _root_kind(out)
    if kind == ANOMALY_KIND:
        images["anomaly"] = out
    elif kind == PROBABILITY_KIND:
        images["probabilities"] = out
    elif (out / "anomaly" / ".zattrs").is_file():
        images["anomaly"] = out / "anomaly"
    if (out / PROBABILITIES / ".zattrs").is_file():
        images["probabilities"] = out / PROBABILITIES
    return images
