"""Detections as NGFF image-labels: every connected region as a label image, for proofreading.

``emae detect`` lists its detections in ``OUT_detections.csv``; this module also paints them
into the map store, as label images that napari (with napari-ome-zarr) and ome-zarr-py open
as labels layers over the map::

    OUT.zarr/labels/anomaly   regions above the model's pixel threshold (autoencoder runs)
    OUT.zarr/labels/classes   regions of each artifact class (classifier runs)

Each pixel holds the ``id`` of its detection (the first column of the CSV), 0 elsewhere,
uint32, chunked like the map. Anomalous regions and class regions may overlap, hence two
images. :func:`create_label_images` makes them empty when the store is created;
:func:`paint_section` paints one section, as its own task: a chunk's regions are found again
from the map stored in the store (the same float32 or uint8 values, threshold and
8-connectivity as when the chunk was mapped, so the same local labels) and renamed to their
detection ids through the section's manifest (:mod:`emae.volume.done`). Only chunks that hold
a detection are read and written, and only their blocks of the pyramid levels are built
(sections are chunked apart, so sections are painted in parallel); memory is one chunk.
:func:`write_label_properties` finally lists the detections' class, area and peak in the
images' metadata.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from emae.io.map_store import image_paths
from emae.io.ome_zarr import build_pyramid, create_ome_zarr
from emae.volume.components import label_regions
from emae.volume.done import Manifest

LABELS = "labels"
ANOMALY, CLASSES = "anomaly", "classes"
#: Detections whose properties (class, area, peak) are listed in the label metadata, at most.
MAX_PROPERTIES = 100_000


def label_names(anomaly: bool, classes: Sequence[str]) -> list[str]:
    """The label images of a run: ``anomaly`` with an anomaly map, ``classes`` with classes."""
    return ([ANOMALY] if anomaly else []) + ([CLASSES] if classes else [])


def create_label_images(
    out: Path,
    shape: Sequence[int],
    axes: str,
    chunks: Sequence[int],
    names: Sequence[str],
    pixel_size: Sequence[float | None] | None,
) -> None:
    """Create the empty label images ``names`` in ``out/labels`` (uint32, chunked like the map)."""
    group = zarr.open_group(str(Path(out) / LABELS), mode="w", zarr_format=2)
    for name in names:
        create_ome_zarr(
            Path(out) / LABELS / name,
            shape,
            np.uint32,
            axes=axes,
            chunks=chunks,
            name=name,
            kind="detection labels",
            pixel_size=pixel_size,
            downsampling="nearest",
        )
    group.attrs["labels"] = list(names)


def _where(axes: str, z: int, y0: int, x0: int, h: int, w: int) -> tuple[slice | int, ...]:
    yx = (slice(y0, y0 + h), slice(x0, x0 + w))
    return (z, *yx) if axes == "ZYX" else yx


def _ids(mask: np.ndarray, component: np.ndarray, first_id: int, at: str) -> np.ndarray:
    """Detection ids of ``mask``'s regions: the chunk's local labels renamed."""
    local, n = label_regions(mask)
    if n != len(component):
        raise RuntimeError(
            f"chunk {at}: {n} regions in the stored map but {len(component)} in its section's "
            "manifest"
        )
    lut = np.zeros(n + 1, dtype=np.uint32)
    lut[1:] = first_id + component
    return lut[local]


def paint_section(
    out: Path,
    z: int,
    manifest: Manifest,
    first_id: int,
    *,
    axes: str,
    threshold: float | None,
    classes: Sequence[str],
) -> None:
    """Paint section ``z``'s detections, numbered from ``first_id``, and their pyramid blocks.

    ``threshold`` is the autoencoder's pixel threshold (None without an anomaly map);
    ``classes`` the classifier's classes (empty without one).
    """
    maps = image_paths(out, anomaly=threshold is not None, probabilities=bool(classes))
    chunks: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
    for (y0, x0, k), component in zip(manifest.pieces, manifest.components, strict=True):
        if len(component):
            chunks.setdefault((int(y0), int(x0)), []).append((int(k), component))
    sizes = {(t["y0"], t["x0"]): (t["height"], t["width"]) for t in manifest.tiles}
    painted: dict[str, list[tuple[slice, ...]]] = {ANOMALY: [], CLASSES: []}
    for (y0, x0), found in chunks.items():
        h, w = sizes[(y0, x0)]
        where = _where(axes, z, y0, x0, h, w)
        at = f"z={z} y0={y0} x0={x0}"
        anomaly = [c for k, c in found if k == 0]
        labels = {}
        if anomaly:
            values = np.asarray(zarr.open_array(f"{maps['anomaly']}/0", mode="r")[where])
            labels[ANOMALY] = _ids(values.astype(np.float32) > threshold, anomaly[0], first_id, at)
        if any(k > 0 for k, _ in found):
            stored = np.asarray(
                zarr.open_array(f"{maps['probabilities']}/0", mode="r")[(slice(None), *where)]
            )
            best = stored.argmax(axis=0)
            ids = np.zeros(best.shape, dtype=np.uint32)
            for k, component in found:
                if k > 0:
                    mask = (best == k - 1) & (stored[k - 1] >= 128)
                    ids += _ids(mask, component, first_id, at)
            labels[CLASSES] = ids
        for name, ids in labels.items():
            zarr.open_array(str(out / LABELS / name / "0"), mode="r+")[where] = ids
            region = (slice(z, z + 1), *where[1:]) if axes == "ZYX" else where
            painted[name].append(region)  # type: ignore[arg-type]
    for name, regions in painted.items():
        if regions:
            build_pyramid(out / LABELS / name, method="nearest", regions=regions)


def clear_section(out: Path, z: int, axes: str) -> None:
    """Set section ``z`` of every label image, every level, back to 0 (before it is painted
    again from a new manifest: a section mapped again may have other detections)."""
    root = Path(out) / LABELS
    if not root.is_dir():
        return
    for name in zarr.open_group(str(root), mode="r").attrs.get("labels", []):
        group = zarr.open_group(str(root / name), mode="r+")
        for level in group.array_keys():
            array = group[level]
            array[(z,) if axes == "ZYX" else (slice(None),)] = 0


def write_label_properties(
    out: Path, names: Sequence[str], detections: Iterable[dict[str, Any]]
) -> list[Path]:
    """List the first :data:`MAX_PROPERTIES` detections' class, area and peak in the
    image-label metadata of each label image; returns the label images.

    ``detections`` yield dicts with ``id``, ``class``, ``area`` and ``peak`` in id order; the
    anomaly image lists the ``"anomaly"`` ones, the classes image the others.
    """
    properties: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for d in detections:
        name = ANOMALY if d["class"] == "anomaly" else CLASSES
        if name in properties and len(properties[name]) < MAX_PROPERTIES:
            properties[name].append(
                {
                    "label-value": int(d["id"]),
                    "class": d["class"],
                    "area": int(d["area"]),
                    "peak": float(d["peak"]),
                }
            )
    paths = []
    for name in names:
        path = Path(out) / LABELS / name
        group = zarr.open_group(str(path), mode="r+")
        group.attrs["image-label"] = {
            "version": "0.4",
            "source": {"image": "../../"},
            "properties": properties[name],
        }
        paths.append(path)
    return paths
