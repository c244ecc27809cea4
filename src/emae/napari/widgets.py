"""napari widgets: score an image layer with a model; write labelled points as a labels CSV.

Each widget is a magicgui factory (:data:`score_widget`, :data:`points_widget`) over a function
of napari layers (:func:`score_image_layer`, :func:`write_points_csv`), which reads the layer
and calls a pure function of arrays and paths; all of them are tested without a viewer:

- :func:`score_layer`: the anomaly map of a ``"YX"`` image or each section of a ``"ZYX"`` stack,
  computed by :func:`emae.commands.score.map_section` (the computation of ``emae score``) after the
  same dtype check (:func:`emae.data.normalization.normalizer_for`); returned as napari layer data
  tuples: the map (magma) and the pixels above the model's pixel threshold (labels).
- :func:`points_to_labels_csv`: ``(y, x)`` or ``(z, y, x)`` pixel coordinates with one label
  each, written with :func:`emae.data.labels.write_labels` (``x`` = column, ``y`` = row,
  ``z`` = section), ready for ``emae finetune``.

Scoring runs in napari's main thread: the viewer waits until the map is done.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import napari.layers
import napari.types
import numpy as np
from magicgui import magic_factory
from napari.utils.notifications import show_info

from emae.anomaly.detector import AutoencoderDetector
from emae.commands.score import map_section
from emae.data.labels import LabeledSample, write_labels
from emae.data.normalization import normalizer_for
from emae.errors import EmaeError
from emae.io import open_image
from emae.io.image import Image
from emae.io.provenance import check_not_input
from emae.io.sources import split_source
from emae.napari.reader import LayerData, contrast_limits
from emae.runtime import select_device

DEVICES = ("auto", "cpu", "cuda", "mps")


def score_layer(
    data: Any,
    model_dir: str | Path,
    *,
    name: str = "image",
    rescale: bool = False,
    scale: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
    tile: int = 1024,
    overlap: int = 64,
    batch_size: int = 8,
    device: str = "auto",
    precision: str = "auto",
) -> list[LayerData]:
    """The anomaly map of an image layer's data under the model in ``model_dir``.

    Parameters
    ----------
    data
        ``(H, W)`` (``"YX"``) or ``(Z, H, W)`` (``"ZYX"``) array-like of raw pixels.
    model_dir
        A model folder written by ``emae pretrain``.
    name
        The layer's name, for error messages.
    rescale
        Normalize ``data`` by its own percentiles, as ``emae score --rescale`` does; without
        it, data of another dtype than the model's training images is refused.
    scale, translate
        The source layer's, given to the new layers so that they overlay it.
    tile, overlap, batch_size, device, precision
        As for :func:`emae.commands.score.score_images` (the same defaults, hence the same map).

    Returns
    -------
    list of (data, kwargs, layer_type)
        ``"anomaly (<model folder name>)"``: float32 of ``data``'s shape, colormap magma; and
        ``"above threshold (<model folder name>)"``: uint8 labels, 1 where the map is above
        the model's pixel threshold.
    """
    shape = tuple(int(s) for s in data.shape)
    if len(shape) not in (2, 3):
        raise EmaeError(f"layer {name!r}: expected a 2D (YX) or 3D (ZYX) image, got {shape}")
    image = Image(data, "YX" if len(shape) == 2 else "ZYX", f"layer {name!r}")
    detector = AutoencoderDetector.from_bundle(
        model_dir, batch_size=batch_size, device=select_device(device), precision=precision
    )
    try:
        detector.normalizer = normalizer_for(
            image, detector.normalizer, model=f"the model {model_dir}", rescale=rescale
        )
    except EmaeError as err:
        raise EmaeError(f"{err} (here: tick 'rescale')") from None
    maps = np.empty((image.n_sections, *image.yx_shape), dtype=np.float32)
    for z in range(image.n_sections):
        section = image.check_finite(image.section(z), z)
        maps[z] = map_section(detector, section, tile=tile, overlap=overlap, batch_size=batch_size)
    maps = maps.reshape(shape)
    model = Path(model_dir).name
    where = {"scale": (1.0,) * len(shape) if scale is None else tuple(map(float, scale))}
    if translate is not None:
        where["translate"] = tuple(map(float, translate))
    threshold = float(detector.pixel_threshold_.value)
    anomaly = {
        "name": f"anomaly ({model})",
        "colormap": "magma",
        "contrast_limits": contrast_limits(maps),
        "metadata": {"emae": {"model": str(model_dir), "pixel_threshold": threshold}},
        **where,
    }
    above = {"name": f"above threshold ({model})", "opacity": 0.5, **where}
    return [(maps, anomaly, "image"), ((maps > threshold).astype(np.uint8), above, "labels")]


def _missing(label: Any) -> bool:
    return (
        label is None or (isinstance(label, float) and math.isnan(label)) or not str(label).strip()
    )


def _is_labels_csv(path: Path) -> bool:
    try:
        with path.open(newline="") as f:
            return f.readline().split(",")[0].strip() == "image"
    except (OSError, UnicodeDecodeError):
        return False


def points_to_labels_csv(
    points: Any,
    labels: Sequence[Any],
    image: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
) -> Path:
    """Write labelled points as a labels CSV (:mod:`emae.data.labels`).

    Parameters
    ----------
    points
        ``(N, 2)`` ``(y, x)`` or ``(N, 3)`` ``(z, y, x)`` pixel coordinates in ``image``;
        rounded to the nearest pixel.
    labels
        One class name per point; a point without one (None, NaN, empty) is refused.
    image
        The image the points were placed on, in any form :func:`emae.io.open_image` reads; 2D
        for ``(y, x)`` points, a stack for ``(z, y, x)`` ones.
    out
        The CSV to write; an existing file is replaced only with ``overwrite``, and only when
        it is a labels CSV.

    Returns
    -------
    Path
        ``out``.
    """
    out, coords = Path(out), np.asarray(points, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[0] == 0 or coords.shape[1] not in (2, 3):
        raise EmaeError(f"expected (N, 2) (y, x) or (N, 3) (z, y, x) points, got {coords.shape}")
    if len(labels) != len(coords):
        raise EmaeError(f"got {len(labels)} labels for {len(coords)} points; give one per point")
    unlabelled = [i for i, label in enumerate(labels) if _missing(label)]
    if unlabelled:
        raise EmaeError(
            f"{len(unlabelled)} of {len(coords)} points have no label (points "
            f"{', '.join(map(str, unlabelled[:10]))}); give every point a 'label' feature"
        )
    opened = open_image(image)
    if coords.shape[1] != opened.ndim:
        raise EmaeError(
            f"{image}: a {opened.ndim}D image ({opened.axes}) takes points with {opened.ndim} "
            f"coordinates, got {coords.shape[1]}"
        )
    pixels = np.rint(coords).astype(np.int64)
    outside = np.flatnonzero(((pixels < 0) | (pixels >= opened.shape)).any(axis=1))
    if outside.size:
        raise EmaeError(
            f"{image}: point {outside[0]} at {tuple(coords[outside[0]])} lies outside the image "
            f"of shape {opened.shape} ({len(outside)} point(s) outside)"
        )
    check_not_input(out, [image])
    if out.exists() and not overwrite:
        raise EmaeError(f"{out} already exists; tick 'overwrite' to replace it")
    if out.exists() and not _is_labels_csv(out):
        raise EmaeError(f"{out} exists and is not a labels CSV; refusing to replace it")
    file, dataset = split_source(str(image))
    source = str(Path(file).expanduser().resolve()) + (f":{dataset}" if dataset else "")
    samples = [
        LabeledSample(source, int(p[-1]), int(p[-2]), int(p[0]) if len(p) == 3 else None, label)
        for p, label in zip(pixels, (str(label).strip() for label in labels), strict=True)
    ]
    return write_labels(out, samples, overwrite=overwrite)


def score_image_layer(
    image: napari.layers.Image,
    model_dir: Path = Path(),
    rescale: bool = False,
    tile: int = 1024,
    overlap: int = 64,
    device: str = "auto",
) -> list[napari.types.LayerDataTuple]:
    """Score with a model: the anomaly map of an image layer (full resolution)."""
    if image.rgb:
        raise EmaeError(f"layer {image.name!r}: RGB layers cannot be scored; use a gray image")
    data = image.data[0] if image.multiscale else image.data
    return score_layer(
        data,
        model_dir,
        name=image.name,
        rescale=rescale,
        scale=image.scale,
        translate=image.translate,
        tile=tile,
        overlap=overlap,
        device=device,
    )


def write_points_csv(
    points: napari.layers.Points,
    image: Path = Path(),
    out: Path = Path("labels.csv"),
    overwrite: bool = False,
) -> Path:
    """Points to labels CSV: each point's ``label`` feature at its pixel of ``image``.

    The points' data coordinates are taken as the image's pixels, as they are when the Points
    layer was created with the image layer selected (it then has the image layer's scale).
    """
    if "label" not in points.features:
        raise EmaeError(f"layer {points.name!r} has no 'label' feature; give every point one")
    path = points_to_labels_csv(
        points.data, list(points.features["label"]), image, out, overwrite=overwrite
    )
    show_info(f"wrote {len(points.data)} labelled points to {path}")
    return path


#: "Score with a model" (npe2 command ``emae.score_widget``).
score_widget = magic_factory(
    score_image_layer,
    call_button="Score",
    model_dir={"label": "model folder", "mode": "d"},
    device={"choices": DEVICES},
    tile={"min": 16, "max": 65536},
    overlap={"min": 0, "max": 4096},
)
#: "Points to labels CSV" (npe2 command ``emae.points_widget``).
points_widget = magic_factory(
    write_points_csv,
    call_button="Write CSV",
    image={"label": "image file", "mode": "r"},
    out={"label": "labels CSV", "mode": "w", "filter": "*.csv"},
)
