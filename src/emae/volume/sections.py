"""The tasks of ``emae detect`` after a section's chunks: each runs on a worker, per section.

Components never cross sections and the map is chunked one section deep, so everything after
the chunks splits by section and runs in parallel on the cluster, like the chunks:

:func:`finish_section`
    as soon as a section's last chunk is done: merges its chunks' component pieces into
    detections (:func:`emae.volume.components.merge_components`), builds its blocks of the
    map's pyramid levels, writes its manifest and removes its chunk records
    (:mod:`emae.volume.done`); returns its number of detections.
:func:`label_section`
    once the sections before it are finished, so that its detections' ids are known (``1..n``
    in section order: section ``z`` starts after the detections of the sections before it):
    paints the section's detections into the label images
    (:func:`emae.volume.labels.paint_section`).

Both are idempotent: a task killed midway is run again by the next run, which ends with the
same result.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emae.errors import EmaeError
from emae.io.map_store import image_paths
from emae.io.ome_zarr import build_pyramid
from emae.volume.components import merge_components
from emae.volume.done import (
    POSITION,
    Manifest,
    chunk_record_path,
    painted_path,
    read_chunk_record,
    read_manifest,
    read_painted,
    section_folder,
    unmark_from,
    write_manifest,
    write_painted,
)
from emae.volume.labels import clear_section, paint_section

#: The numeric columns of a detection in a manifest, in order.
TABLE = ("id", "class_index", "centroid_x", "centroid_y", "z", "x_min", "y_min", "x_max")
TABLE += ("y_max", "area", "peak")


@dataclass(frozen=True)
class SectionJob:
    """What every section task of one run shares.

    Attributes
    ----------
    out
        The map store.
    axes
        ``"ZYX"`` or ``"YX"`` (one section).
    height, width
        Of a section, in pixels.
    threshold
        The autoencoder's pixel threshold, or None without an anomaly map.
    classes
        The classifier's classes (empty without one).
    images
        The images whose pyramid levels the section tasks build; None: those of the map store
        (:func:`emae.io.map_store.image_paths`).
    labels
        Whether the run paints label images (restoration runs do not).
    """

    out: str
    axes: str
    height: int
    width: int
    threshold: float | None
    classes: tuple[str, ...] = ()
    images: tuple[str, ...] | None = None
    labels: bool = True

    def image_paths(self) -> list[Path]:
        """The images of the store whose pyramids follow level 0."""
        if self.images is not None:
            return [Path(p) for p in self.images]
        paths = image_paths(
            self.out, anomaly=self.threshold is not None, probabilities=bool(self.classes)
        )
        return list(paths.values())


def check_numbers(qc: dict, numbers: list[str], out: str) -> None:
    """Refuse a chunk whose QC numbers differ from the others' (a record of another run)."""
    found = [k for k in qc if k not in POSITION]
    if sorted(found) != sorted(numbers):
        chunk = f"z{qc['z']}_y{qc['y0']}_x{qc['x0']}"
        raise EmaeError(
            f"{out}: the done marker of chunk {chunk} holds QC numbers {sorted(found)}, the "
            f"others {sorted(numbers)}; delete that marker and rerun emae detect to map that "
            "chunk again"
        )


def _section_region(shape: tuple[int, ...], spatial: int, z: int) -> tuple[slice, ...]:
    """Level-0 slices of section ``z`` in an image of ``shape`` (channels first, if any)."""
    lead = tuple(slice(0, s) for s in shape[: len(shape) - spatial])
    yx = tuple(slice(0, s) for s in shape[-2:])
    return (*lead, slice(z, z + 1), *yx) if spatial == 3 else (*lead, *yx)


def finish_section(z: int, names: list[str], job: SectionJob) -> int:
    """Merge section ``z``'s chunks (``names``, row-major), build its pyramid blocks, write its
    manifest and remove its chunk records; returns its number of detections."""
    import zarr

    tiles, pieces = [], []
    for name in names:
        qc, chunk_pieces = read_chunk_record(chunk_record_path(job.out, name, z))
        tiles.append(qc)
        pieces.extend(chunk_pieces)
    numbers = [k for k in tiles[0] if k not in POSITION]
    for t in tiles:
        check_numbers(t, numbers, job.out)
    merged = merge_components(pieces)
    for i, c in enumerate(merged):
        c["id"] = i + 1
    rows = np.array([[c[k] for k in TABLE] for c in merged], dtype=np.float64)
    spatial = 3 if job.axes == "ZYX" else 2
    for path in job.image_paths():
        shape = zarr.open_array(str(path / "0"), mode="r").shape
        build_pyramid(path, regions=[_section_region(shape, spatial, z)])
    manifest = Manifest(
        tiles,
        rows.reshape(-1, len(TABLE)),
        np.array([[p.y0, p.x0, p.class_index] for p in pieces], dtype=np.int64).reshape(-1, 3),
        [p.component for p in pieces],
    )
    if read_painted(job.out, z) is not None:  # painted from an earlier manifest of it
        # Its number of detections may change, so every later section's first id may too:
        # their marks go (they are painted again), before this section counts as finished.
        unmark_from(job.out, z)
        clear_section(Path(job.out), z, job.axes)
    write_manifest(job.out, z, manifest)
    shutil.rmtree(section_folder(job.out, z), ignore_errors=True)
    return len(merged)


def label_section(z: int, first_id: int, job: SectionJob) -> None:
    """Paint section ``z``'s detections from id ``first_id`` and mark it painted (nothing to
    do when an earlier run painted it from the same id)."""
    painted = read_painted(job.out, z)
    if painted == first_id:
        return
    if painted is not None:  # from other ids: a mark only ever stands for a whole painting
        painted_path(job.out, z).unlink(missing_ok=True)
    manifest = read_manifest(job.out, z)
    paint_section(
        Path(job.out),
        z,
        manifest,
        first_id,
        axes=job.axes,
        threshold=job.threshold,
        classes=job.classes,
    )
    write_painted(job.out, z, first_id, len(manifest.detections))
