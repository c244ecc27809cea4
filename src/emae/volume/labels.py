"""Detections as NGFF image-labels: every connected region as a label image, for proofreading.

``emae detect`` lists its detections in ``OUT_detections.csv``; this module also paints them
into the map store, as label images that napari (with napari-ome-zarr) and ome-zarr-py open
as labels layers over the map::

    OUT.zarr/labels/anomaly   regions above the model's pixel threshold (autoencoder runs)
    OUT.zarr/labels/classes   regions of each artifact class (classifier runs)

Each pixel holds the ``id`` of its detection (the first column of the CSV), 0 elsewhere,
uint32, chunked like the map. Anomalous regions and class regions may overlap, hence two
images. The ids are those of :func:`emae.volume.qc.write_reports`, which calls
:meth:`LabelPainter.section`
after merging each section's pieces: a chunk's regions are found again from the map stored in
the store (the same float32 or uint8 values, threshold and 8-connectivity as when the chunk was
mapped, so the same local labels) and renamed to their detection ids. Only chunks that hold a
detection are read and written, and only their blocks of the pyramid levels are built; memory
is one chunk.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from emae.io.map_store import image_paths
from emae.io.ome_zarr import build_pyramid, create_ome_zarr
from emae.volume.components import ChunkComponents, label_regions

LABELS = "labels"
ANOMALY, CLASSES = "anomaly", "classes"
#: Detections whose properties (class, area, peak) are listed in the label metadata, at most.
MAX_PROPERTIES = 100_000


class LabelPainter:
    """Paints the detections of one detect run into ``OUT.zarr/labels/``.

    Parameters
    ----------
    out
        The map store.
    shape, axes, chunks
        Of the mapped volume (``(Z, H, W)`` / ``"ZYX"`` or ``(H, W)`` / ``"YX"``) and its chunks.
    threshold
        The autoencoder's pixel threshold, or None without an anomaly map.
    classes, clean_class
        The classifier's classes (empty without one); the clean class has no regions.
    class_names
        Names by component class index (0: ``"anomaly"``, then the classes).
    pixel_size
        Nanometers per pixel of each axis, as the map's.
    """

    def __init__(
        self,
        out: Path,
        shape: Sequence[int],
        axes: str,
        chunks: Sequence[int],
        *,
        threshold: float | None,
        classes: Sequence[str],
        class_names: Sequence[str],
        pixel_size: Sequence[float | None] | None,
    ) -> None:
        self.out, self.axes, self.threshold = Path(out), axes, threshold
        self.class_names = list(class_names)
        self.maps = image_paths(out, anomaly=threshold is not None, probabilities=bool(classes))
        names = ([ANOMALY] if threshold is not None else []) + ([CLASSES] if classes else [])
        root = self.out / LABELS
        if root.exists():  # an earlier pass over the same chunks: painted again
            shutil.rmtree(root)
        group = zarr.open_group(str(root), mode="w", zarr_format=2)
        for name in names:
            create_ome_zarr(
                root / name,
                shape,
                np.uint32,
                axes=axes,
                chunks=chunks,
                name=name,
                kind="detection labels",
                pixel_size=pixel_size,
                downsampling="nearest",
            )
        group.attrs["labels"] = names
        self.names = names
        self.properties: dict[str, dict[int, dict[str, Any]]] = {n: {} for n in names}
        # Level-0 regions painted, per image: only their blocks of the pyramid are built.
        self.painted: dict[str, list[tuple[slice, ...]]] = {n: [] for n in names}

    def _read(self, name: str, piece: ChunkComponents, channels: bool) -> np.ndarray:
        h, w = len(piece.first_col), len(piece.first_row)
        yx = (slice(piece.y0, piece.y0 + h), slice(piece.x0, piece.x0 + w))
        where = (piece.z, *yx) if self.axes == "ZYX" else yx
        array = zarr.open_array(f"{self.maps[name]}/0", mode="r")
        return np.asarray(array[(slice(None), *where) if channels else where])

    def _write(self, name: str, piece: ChunkComponents, labels: np.ndarray) -> None:
        h, w = labels.shape
        yx = (slice(piece.y0, piece.y0 + h), slice(piece.x0, piece.x0 + w))
        where = (piece.z, *yx) if self.axes == "ZYX" else yx
        zarr.open_array(str(self.out / LABELS / name / "0"), mode="r+")[where] = labels
        self.painted[name].append((slice(piece.z, piece.z + 1), *yx) if self.axes == "ZYX" else yx)

    def section(self, z: int, pieces: list[ChunkComponents], first_id: int) -> None:
        """Paint one section's merged pieces (the ``on_section`` of ``write_reports``)."""
        chunks: dict[tuple[int, int], list[ChunkComponents]] = {}
        for p in pieces:
            if len(p.stats):
                chunks.setdefault((p.y0, p.x0), []).append(p)
        for chunk_pieces in chunks.values():
            anomaly = [p for p in chunk_pieces if p.class_index == 0]
            classes = [p for p in chunk_pieces if p.class_index > 0]
            if anomaly:
                values = self._read("anomaly", anomaly[0], channels=False).astype(np.float32)
                ids = self._ids(values > self.threshold, anomaly[0], first_id)
                self._write(ANOMALY, anomaly[0], ids)
            if classes:
                stored = self._read("probabilities", classes[0], channels=True)
                best = stored.argmax(axis=0)
                painted = np.zeros(best.shape, dtype=np.uint32)
                for p in classes:
                    k = p.class_index - 1
                    painted += self._ids((best == k) & (stored[k] >= 128), p, first_id)
                self._write(CLASSES, classes[0], painted)
            for p in chunk_pieces:
                self._record(p, first_id)

    def _ids(self, mask: np.ndarray, piece: ChunkComponents, first_id: int) -> np.ndarray:
        """Detection ids of ``mask``'s regions: the chunk's local labels renamed."""
        local, n = label_regions(mask)
        if n != len(piece.stats):
            raise RuntimeError(
                f"chunk z={piece.z} y0={piece.y0} x0={piece.x0}: {n} regions in the stored map "
                f"but {len(piece.stats)} in its done marker"
            )
        lut = np.zeros(n + 1, dtype=np.uint32)
        lut[1:] = first_id + piece.component
        return lut[local]

    def _record(self, piece: ChunkComponents, first_id: int) -> None:
        name = ANOMALY if piece.class_index == 0 else CLASSES
        found = self.properties[name]
        for component, row in zip(piece.component, piece.stats, strict=True):
            label = int(first_id + component)
            if label in found:
                found[label]["area"] += int(row[0])
                found[label]["peak"] = max(found[label]["peak"], float(row[7]))
            elif len(found) < MAX_PROPERTIES:
                found[label] = {
                    "label-value": label,
                    "class": self.class_names[piece.class_index],
                    "area": int(row[0]),
                    "peak": float(row[7]),
                }

    def finish(self) -> list[Path]:
        """Build the pyramids and write the image-label metadata; returns the label images."""
        paths = []
        for name in self.names:
            path = self.out / LABELS / name
            build_pyramid(path, method="nearest", regions=self.painted[name])
            group = zarr.open_group(str(path), mode="r+")
            group.attrs["image-label"] = {
                "version": "0.4",
                "source": {"image": "../../"},
                "properties": sorted(
                    self.properties[name].values(), key=lambda p: p["label-value"]
                ),
            }
            paths.append(path)
        return paths
