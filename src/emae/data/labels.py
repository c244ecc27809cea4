"""Labeled samples: the labels CSV, its validation, and reading the labeled pixels.

CSV format
----------
One sample per row, comma-separated, with a header line. Two forms:

- patch centres: ``image,x,y[,z],label``: pixel coordinates as copied from webKnossos or napari,
  ``x`` the column, ``y`` the row, ``z`` the section of a 3D stack (leave ``z`` empty or omit the
  column for 2D images). A patch of side ``P`` is centred so that its top-left corner is
  ``(y - P // 2, x - P // 2)``.
- whole images: ``image,label``: one object-centred 2D image per sample; its central
  ``P x P`` crop is used, so images may differ in size as long as both sides are ``>= P``.

``image`` is a path relative to the CSV's folder (or absolute), in any form that
:func:`~emae.io.readers.open_image` reads, e.g. ``stack.h5:/raw``. Optional columns:

- ``group``: samples with the same group stay in one fold when splitting; empty means no group.
- ``mask`` (whole-image form): a 2D image of the same size, nonzero on the object, for the
  object-centred input variants of :mod:`emae.data.objects`; empty means no mask.
- ``feat_*``: numeric features (e.g. ``feat_thickness``), finite numbers in every row.

Any other column is an error, as are coordinates that are not non-negative integers. Class names
are kept as written; ``LabeledSet.classes`` is sorted, or in the order given by ``classes=``.
Errors name the file and the 1-based line (the header is line 1).
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from emae.data.patches import PatchLocation, read_padded, read_patches
from emae.errors import EmaeError
from emae.io.atomic import atomic_file
from emae.io.image import Image
from emae.io.readers import open_image
from emae.io.sources import split_source

FEATURE_PREFIX = "feat_"
KNOWN_COLUMNS = ("image", "x", "y", "z", "label", "group", "mask")
_INTEGER = re.compile(r"\+?\d+")


@dataclass(frozen=True)
class LabeledSample:
    """One labeled sample.

    ``image`` is the resolved path; ``x`` (column), ``y`` (row) and ``z`` (section, None for 2D)
    are the patch centre in pixels, all None for a whole-image sample. ``features`` holds the
    values of the ``feat_*`` columns in the order of ``LabeledSet.features``; ``mask`` the
    resolved path of the object's mask image, if any.
    """

    image: str
    x: int | None
    y: int | None
    z: int | None
    label: str
    group: str | None = None
    features: tuple[float, ...] = ()
    mask: str | None = None


@dataclass(frozen=True)
class LabeledSet:
    """Samples read from a labels CSV, with their class names and feature names."""

    samples: tuple[LabeledSample, ...]
    classes: tuple[str, ...]
    features: tuple[str, ...]
    kind: Literal["patch", "image"]

    def class_counts(self) -> dict[str, int]:
        """Number of samples per class, in the order of :attr:`classes`."""
        counts = Counter(s.label for s in self.samples)
        return {c: counts[c] for c in self.classes}

    def label_indices(self) -> np.ndarray:
        """``(N,)`` int64 index of each sample's label in :attr:`classes`."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[s.label] for s in self.samples], dtype=np.int64)


def _resolve(image: str, folder: Path) -> tuple[str, Path]:
    """The image as an absolute reference, and the file or folder that must exist."""
    file, dataset = split_source(image)
    inner = "" if dataset is None else f":{dataset}"
    path = Path(file).expanduser()
    path = path if path.is_absolute() else folder / path
    return f"{path}{inner}", path


def _integer(value: str, name: str, where: str) -> int:
    if not _INTEGER.fullmatch(value):
        raise EmaeError(
            f"{where}: {name} must be a non-negative integer pixel index, got {value!r}"
        )
    return int(value)


def _feature(value: str, name: str, where: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise EmaeError(f"{where}: feature {name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise EmaeError(f"{where}: feature {name} must be a finite number, got {value!r}")
    return number


def _check_geometry(
    sample: LabeledSample, image: Image, name: str, patch_size: int | None, where: str
) -> None:
    h, w = image.yx_shape
    if sample.x is None or sample.y is None:
        if image.axes != "YX":
            raise EmaeError(f"{where}: whole-image samples need 2D images, {name} is {image.shape}")
        if patch_size is not None and min(h, w) < patch_size:
            raise EmaeError(f"{where}: image {name} of {h}x{w} is smaller than {patch_size=}")
        return
    if image.axes == "YX" and sample.z is not None:
        raise EmaeError(f"{where}: z={sample.z} given for the 2D image {name}; leave z empty")
    if image.axes == "ZYX" and sample.z is None:
        raise EmaeError(
            f"{where}: z is required for {name}, a stack of {image.n_sections} sections"
        )
    if sample.z is not None and sample.z >= image.n_sections:
        raise EmaeError(
            f"{where}: z={sample.z} outside the stack {name} of sections 0..{image.n_sections - 1}"
        )
    if sample.x >= w or sample.y >= h:
        raise EmaeError(
            f"{where}: x={sample.x}, y={sample.y} outside {name} of {h}x{w} (height x width)"
        )
    if patch_size is not None:
        y0, x0 = sample.y - patch_size // 2, sample.x - patch_size // 2
        if y0 < 0 or x0 < 0 or y0 + patch_size > h or x0 + patch_size > w:
            raise EmaeError(
                f"{where}: a patch of size {patch_size} centred at x={sample.x}, y={sample.y} "
                f"crosses the border of {name} of {h}x{w}"
            )


def _check_mask(mask: str, image: Image, where: str) -> None:
    if not Path(split_source(mask)[0]).exists():
        raise EmaeError(f"{where}: mask {Path(mask).name!r} not found")
    try:
        shape = open_image(mask).shape
    except (EmaeError, OSError) as err:
        raise EmaeError(f"{where}: {err}") from None
    if shape != image.shape:
        raise EmaeError(f"{where}: mask of shape {shape} differs from its image's {image.shape}")


def _read_header(path: Path) -> tuple[list[str], Any]:
    if not path.is_file():
        raise EmaeError(f"{path}: labels file not found")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise EmaeError(f"{path}: not a UTF-8 text file ({err})") from None
    reader = csv.reader(lines)
    header = [c.strip() for c in next(reader, [])]
    if not any(header):
        raise EmaeError(f"{path} is empty: expected a header image,x,y[,z],label or image,label")
    where = f"{path} line 1"
    repeated = sorted(c for c, k in Counter(header).items() if k > 1)
    unknown = [c for c in header if c not in KNOWN_COLUMNS and not c.startswith(FEATURE_PREFIX)]
    missing = [c for c in ("image", "label") if c not in header]
    if "x" in header or "y" in header or "z" in header:
        missing += [c for c in ("x", "y") if c not in header]
    if repeated:
        raise EmaeError(f"{where}: repeated columns {repeated}")
    if missing:
        raise EmaeError(f"{where}: missing required columns {missing} in header {header}")
    if unknown:
        raise EmaeError(
            f"{where}: unknown columns {unknown}; expected image, x, y, z, label, group, mask "
            f"and numeric feature columns named {FEATURE_PREFIX}*"
        )
    return header, reader


def _parse_row(
    row: dict[str, str], features: Sequence[str], folder: Path, where: str
) -> tuple[LabeledSample, Path]:
    if not row["image"]:
        raise EmaeError(f"{where}: empty image")
    if not row["label"]:
        raise EmaeError(f"{where}: empty label")
    coords = {
        c: _integer(row[c], c, where) if row.get(c) else None for c in ("x", "y", "z") if c in row
    }
    for c in ("x", "y"):
        if c in row and coords[c] is None:
            raise EmaeError(f"{where}: empty {c}")
    resolved, file = _resolve(row["image"], folder)
    mask = None
    if row.get("mask"):
        if "x" in row:
            raise EmaeError(f"{where}: masks are for whole-image samples (image,label,mask)")
        mask, _ = _resolve(row["mask"], folder)
    sample = LabeledSample(
        image=resolved,
        x=coords.get("x"),
        y=coords.get("y"),
        z=coords.get("z"),
        label=row["label"],
        group=row.get("group") or None,
        features=tuple(_feature(row[f], f, where) for f in features),
        mask=mask,
    )
    return sample, file


def load_labels(
    csv_path: str | Path,
    *,
    patch_size: int | None = None,
    classes: Sequence[str] | None = None,
    check_images: bool = True,
    partial: bool = False,
) -> LabeledSet:
    """Read and validate a labels CSV (format in the module docstring).

    Parameters
    ----------
    csv_path
        The CSV file; relative image paths are resolved against its folder.
    patch_size
        When given, check that a patch of this size centred on each sample fits in its image
        (patch form), or that each image is at least this large (whole-image form).
    classes
        Expected class names, in the order to use: a label outside them, or a class without
        samples, is an error. By default the classes are the sorted labels found.
    check_images
        Open each image (lazily, once) to check that it exists and that the coordinates fit.
    partial
        A file that adds labels to others (a filled ``emae suggest`` file): rows whose label is
        left empty are skipped, and ``classes`` need not all have samples.

    Returns
    -------
    LabeledSet
        The samples in file order, with image paths resolved.
    """
    path = Path(csv_path)
    if classes is not None and len(set(classes)) != len(classes):
        raise EmaeError(f"classes must be distinct, got {list(classes)}")
    header, reader = _read_header(path)
    features = tuple(c for c in header if c.startswith(FEATURE_PREFIX))
    folder = path.resolve().parent
    images: dict[str, Image] = {}
    samples: list[LabeledSample] = []
    for cells in reader:
        where = f"{path} line {reader.line_num}"
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise EmaeError(f"{where}: expected {len(header)} fields, got {len(cells)}")
        if partial and not cells[header.index("label")].strip():
            continue
        sample, file = _parse_row(
            dict(zip(header, (c.strip() for c in cells), strict=True)), features, folder, where
        )
        if classes is not None and sample.label not in classes:
            raise EmaeError(
                f"{where}: unknown class {sample.label!r}; expected one of {list(classes)}"
            )
        if check_images:
            if not file.exists():
                raise EmaeError(f"{where}: image {file.name!r} not found (looked in {file.parent})")
            if sample.image not in images:
                try:
                    images[sample.image] = open_image(sample.image)
                except (EmaeError, OSError) as err:
                    raise EmaeError(f"{where}: {err}") from None
            name = repr(cells[header.index("image")].strip())
            _check_geometry(sample, images[sample.image], name, patch_size, where)
            if sample.mask is not None:
                _check_mask(sample.mask, images[sample.image], where)
        samples.append(sample)
    if not samples:
        what = "no labeled rows" if partial else "no samples, only a header"
        raise EmaeError(f"{path}: {what}")
    found = sorted({s.label for s in samples})
    if classes is not None:
        empty = [] if partial else [c for c in classes if c not in found]
        if empty:
            raise EmaeError(f"{path}: no samples for classes {empty} of {list(classes)}")
        found = list(classes)
    kind = "image" if "x" not in header else "patch"
    return LabeledSet(tuple(samples), tuple(found), features, kind)


def load_label_files(paths: Sequence[str | Path], *, patch_size: int | None = None) -> LabeledSet:
    """The samples of several labels CSVs as one set.

    The first file defines the classes (its sorted labels); each later one adds samples, e.g.
    a filled ``emae suggest`` file: its rows with an empty label are skipped, and a label
    outside the first file's classes is refused. All files must have the same form (patch or
    whole-image) and the same feature columns.
    """
    if not paths:
        raise EmaeError("give at least one labels CSV")
    first = load_labels(paths[0], patch_size=patch_size)
    samples = list(first.samples)
    for path in paths[1:]:
        more = load_labels(path, patch_size=patch_size, classes=first.classes, partial=True)
        if more.kind != first.kind or more.features != first.features:
            raise EmaeError(
                f"{path}: its form ({more.kind}, features {list(more.features)}) differs from "
                f"{paths[0]} ({first.kind}, features {list(first.features)})"
            )
        samples += more.samples
    return LabeledSet(tuple(samples), first.classes, first.features, first.kind)


def read_labeled_patches(
    labeled_set: LabeledSet, patch_size: int, context: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Read the pixels of every sample.

    Parameters
    ----------
    labeled_set
        From :func:`load_labels`.
    patch_size
        Side of the square patches: centred on the sample (patch form) or the central crop of
        the whole image (image form); each must lie inside its image.
    context
        Pixels of surroundings read on every side besides the patch (for a residual view's
        autoencoder); where they cross the image border they are mirrored from inside it.

    Returns
    -------
    patches : numpy.ndarray
        ``(N, S, S)`` with ``S = patch_size + 2 context``, in the images' dtype (their common
        type when they differ).
    labels : numpy.ndarray
        ``(N,)`` int64 index of each sample's class in ``labeled_set.classes``.
    """
    paths = sorted({s.image for s in labeled_set.samples})
    index = {p: i for i, p in enumerate(paths)}
    images = [open_image(p) for p in paths]
    locations = []
    for n, sample in enumerate(labeled_set.samples):
        image = images[index[sample.image]]
        _check_geometry(sample, image, repr(sample.image), patch_size, f"sample {n}")
        h, w = image.yx_shape
        if sample.x is None or sample.y is None:
            y, x = (h - patch_size) // 2, (w - patch_size) // 2
        else:
            y, x = sample.y - patch_size // 2, sample.x - patch_size // 2
        locations.append(PatchLocation(index[sample.image], sample.z or 0, y, x))
    if not context:
        return read_patches(images, locations, patch_size), labeled_set.label_indices()
    size = patch_size + 2 * context
    wider = [loc._replace(y=loc.y - context, x=loc.x - context) for loc in locations]
    fits = [
        loc.y >= 0 and loc.x >= 0 and loc.y + size <= h and loc.x + size <= w
        for loc in wider
        for h, w in [images[loc.source_index].yx_shape]
    ]
    inside = [loc for loc, ok in zip(wider, fits, strict=True) if ok]
    read = iter(read_patches(images, inside, size)) if inside else iter(())
    patches = [
        next(read) if ok else read_padded(images[loc.source_index], loc.z, loc.y, loc.x, size)
        for loc, ok in zip(wider, fits, strict=True)
    ]
    return np.stack(patches), labeled_set.label_indices()


def write_labels(
    path: str | Path,
    samples: Sequence[LabeledSample] | LabeledSet,
    *,
    features: Sequence[str] = (),
    overwrite: bool = False,
) -> Path:
    """Write samples as a labels CSV atomically (temporary file, then rename).

    Parameters
    ----------
    path
        Destination CSV; its folder must exist. Images inside that folder are written relative
        to it, others as given.
    samples
        All patch samples (x, y set) or all whole-image samples; or a :class:`LabeledSet`.
    features
        Names of the feature columns (each starting with ``feat_``), one per value in
        ``LabeledSample.features``; taken from the set when ``samples`` is a :class:`LabeledSet`.
    overwrite
        Replace an existing file.

    Returns
    -------
    Path
        The written file.
    """
    if isinstance(samples, LabeledSet):
        samples, features = samples.samples, samples.features
    path, features = Path(path), tuple(features)
    kinds = {s.x is not None and s.y is not None for s in samples}
    if len(kinds) > 1:
        raise EmaeError(f"{path}: cannot mix patch samples (with x, y) and whole-image samples")
    bad = [f for f in features if not f.startswith(FEATURE_PREFIX)]
    if bad or any(len(s.features) != len(features) for s in samples):
        raise EmaeError(
            f"{path}: every sample needs one value per feature column {features}, "
            f"each named {FEATURE_PREFIX}*"
        )
    coords = ["x", "y"] + (["z"] if any(s.z is not None for s in samples) else [])
    coords = coords if kinds == {True} else []
    group = ["group"] if any(s.group is not None for s in samples) else []
    mask = ["mask"] if any(s.mask is not None for s in samples) else []
    folder = path.parent.resolve()

    def relative(file: str) -> str:
        p = Path(file)
        return (
            p.relative_to(folder) if p.is_absolute() and p.is_relative_to(folder) else p
        ).as_posix()

    with atomic_file(path, overwrite=overwrite) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image", *coords, "label", *group, *mask, *features])
        for s in samples:
            values = {"x": s.x, "y": s.y, "z": s.z}
            writer.writerow(
                [
                    relative(s.image),
                    *("" if values[c] is None else values[c] for c in coords),
                    s.label,
                    *([s.group or ""] if group else []),
                    *([relative(s.mask) if s.mask else ""] if mask else []),
                    *(repr(float(v)) for v in s.features),
                ]
            )
    return path
