"""Which patches an embedding holds, in parts of bounded size that are read one at a time.

A plan is a list of :class:`Part`; each names its rows cheaply (a block of grid rows of one
section, or an explicit list of patches), so planning a terabyte costs a few objects per section
and reading a part costs memory for its own patches only. Parts are numbered in plan order and
the same settings always give the same plan, so a stopped run continues with the parts not done.

Sources:

``grid``       every ``stride`` pixels over the sections of each image (:func:`grid_plan`);
``sample``     ``n`` patches drawn at random, seeded (:func:`sample_plan`);
``labels``     the rows of a labels CSV, patch centres or whole images (:func:`labels_plan`);
``detections`` a patch centred on each detection of ``emae detect`` (:func:`detections_plan`).

Every row has ``source`` (the image), ``z``, ``y``, ``x`` (the patch centre; empty for whole
images), ``label`` (empty when unknown) and the labels CSV's ``feat_*`` values.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emae.data.labels import LabeledSet
from emae.data.objects import object_patches
from emae.data.patches import PatchLocation, read_patches
from emae.data.sampling import random_locations
from emae.errors import EmaeError
from emae.io.image import Image


@dataclass(frozen=True)
class Part:
    """Rows of one part: a block of grid rows, or listed patches or labeled samples.

    ``grid = (source_index, z, first_row, n_rows, stride)`` names ``n_rows`` rows of the grid of
    one section; otherwise ``locations`` (top-left corners) with their ``labels`` and
    ``features``, or ``samples`` (whole images of a labels CSV).
    """

    grid: tuple[int, int, int, int, int] | None = None
    locations: tuple[PatchLocation, ...] = ()
    labels: tuple[str | None, ...] = ()
    features: tuple[tuple[float, ...], ...] = ()
    samples: LabeledSet | None = None
    extra: dict[str, tuple[Any, ...]] = field(default_factory=dict)


def _check_fits(images: Sequence[Image], patch: int) -> None:
    for image in images:
        if min(image.yx_shape) < patch:
            h, w = image.yx_shape
            raise EmaeError(
                f"{image.path}: {h}x{w} pixels, smaller than the model's {patch}x{patch} patch"
            )


def grid_plan(images: Sequence[Image], patch: int, stride: int, part_rows: int) -> list[Part]:
    """Parts covering every section of every image with patches every ``stride`` pixels."""
    _check_fits(images, patch)
    if stride < 1:
        raise EmaeError(f"stride must be a positive integer, got {stride}")
    parts = []
    for s, image in enumerate(images):
        h, w = image.yx_shape
        rows, cols = (h - patch) // stride + 1, (w - patch) // stride + 1
        per_part = max(1, part_rows // cols)
        for z in range(image.n_sections):
            for first in range(0, rows, per_part):
                parts.append(Part(grid=(s, z, first, min(per_part, rows - first), stride)))
    return parts


def _chunked(part_rows: int, n: int) -> list[slice]:
    return [slice(s, min(n, s + part_rows)) for s in range(0, n, part_rows)]


def sample_plan(
    images: Sequence[Image], patch: int, n: int, seed: int, part_rows: int
) -> list[Part]:
    """Parts of ``n`` patches drawn uniformly over all sections (geometry only: nothing is read
    to plan them)."""
    _check_fits(images, patch)
    if n < 1:
        raise EmaeError(f"sample must be a positive number of patches, got {n}")
    locations = random_locations(images, n, patch, seed=seed, is_valid=None)
    return [Part(locations=tuple(locations[s])) for s in _chunked(part_rows, len(locations))]


def labels_plan(labeled: LabeledSet, patch: int, part_rows: int) -> list[Part]:
    """Parts of the samples of a labels CSV, in file order."""
    n = len(labeled.samples)
    return [
        Part(
            samples=LabeledSet(labeled.samples[s], labeled.classes, labeled.features, labeled.kind)
        )
        for s in _chunked(part_rows, n)
    ]


def read_detections(path: str | Path) -> list[dict[str, str]]:
    """Rows of ``emae detect``'s ``OUT_detections.csv``; one line for a file that is not one."""
    need = {"id", "class", "centroid_x", "centroid_y", "z"}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EmaeError(f"{path}: cannot read the detections ({exc})") from None
    if rows and not need <= set(rows[0]):
        raise EmaeError(f"{path}: not a detections table of emae detect (needs {sorted(need)})")
    if not rows:
        raise EmaeError(f"{path}: no detections")
    return rows


def detections_plan(
    image: Image, rows: Sequence[dict[str, str]], patch: int, part_rows: int
) -> list[Part]:
    """Parts of one patch centred on each detection (moved inside the image at its borders)."""
    _check_fits([image], patch)
    h, w = image.yx_shape
    locations, labels, ids = [], [], []
    for row in rows:
        try:
            cx, cy, z = float(row["centroid_x"]), float(row["centroid_y"]), int(row["z"] or 0)
        except ValueError:
            raise EmaeError(f"detection {row.get('id')!r}: centroid or z is not a number") from None
        image.check_section(z)
        y = int(np.clip(round(cy) - patch // 2, 0, h - patch))
        x = int(np.clip(round(cx) - patch // 2, 0, w - patch))
        locations.append(PatchLocation(0, z, y, x))
        labels.append(row["class"])
        ids.append(row["id"])
    return [
        Part(locations=tuple(locations[s]), labels=tuple(labels[s]), extra={"detection": ids[s]})
        for s in _chunked(part_rows, len(locations))
    ]


def part_size(part: Part, images: Sequence[Image], patch: int) -> int:
    """Rows of ``part``, without reading any pixel."""
    if part.samples is not None:
        return len(part.samples.samples)
    if part.grid is not None:
        s, _, _, n_rows, stride = part.grid
        return n_rows * ((images[s].yx_shape[1] - patch) // stride + 1)
    return len(part.locations)


def read_part(
    part: Part, images: Sequence[Image], sources: Sequence[str], patch: int, variant: str
) -> tuple[dict[str, list[Any]], np.ndarray]:
    """The rows (column -> values) and the patches ``(n, patch, patch)`` of one part."""
    if part.samples is not None:
        labeled = part.samples
        patches, _ = object_patches(labeled, patch, variant)  # type: ignore[arg-type]
        rows: dict[str, list[Any]] = {
            "source": [s.image for s in labeled.samples],
            "z": [s.z for s in labeled.samples],
            "y": [s.y for s in labeled.samples],
            "x": [s.x for s in labeled.samples],
            "label": [s.label for s in labeled.samples],
        }
        for k, name in enumerate(labeled.features):
            rows[name] = [s.features[k] for s in labeled.samples]
        return rows, patches
    if part.grid is not None:
        s, z, first, n_rows, stride = part.grid
        w = images[s].yx_shape[1]
        xs = range(0, w - patch + 1, stride)
        locations = [
            PatchLocation(s, z, (first + r) * stride, x) for r in range(n_rows) for x in xs
        ]
    else:
        locations = list(part.locations)
    patches = read_patches(images, locations, patch)
    half = patch // 2
    rows = {
        "source": [sources[loc.source_index] for loc in locations],
        "z": [loc.z for loc in locations],
        "y": [loc.y + half for loc in locations],
        "x": [loc.x + half for loc in locations],
        "label": list(part.labels) if part.labels else [None] * len(locations),
    }
    rows.update({name: list(values) for name, values in part.extra.items()})
    return rows, patches
