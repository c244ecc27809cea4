"""``emae score``: anomaly maps of images under a trained model, and one score row per image.

:func:`score_images` loads the fitted :class:`~emae.anomaly.detector.AutoencoderDetector` of a model
folder, computes the anomaly map of every section of the inputs (larger = more anomalous,
float32) and writes

- the map, with the spatial shape of the input: ``"YX"`` for one 2D image, ``"ZYX"`` for a 3D
  stack, a folder of sections or several 2D images of one size (in input order); a TIFF when
  the path ends in ``.tif``/``.tiff``, an OME-Zarr image when it ends in ``.zarr``;
- ``<map name>_scores.csv`` beside it: one row per section with its source, section index,
  the image score (the detector's reduction of the map), the mean, 99th percentile and maximum
  of the map, and the fraction of pixels above the model's pixel threshold.

Each section is scored in overlapping tiles by :func:`map_section` (:mod:`emae.volume.tiling`, the
code path of ``emae detect``; the napari widget calls it too); the maps of all sections are held
in memory until written, so this command is meant for images of up to a few gigapixels;
``emae detect`` maps whole volumes chunk by chunk.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from emae.anomaly.detector import AutoencoderDetector
from emae.anomaly.pixel_metrics import pixel_metrics
from emae.data.normalization import normalizer_for
from emae.errors import EmaeError
from emae.io import expand_inputs, open_image
from emae.io.atomic import atomic_file, check_writable
from emae.io.image import Image
from emae.io.provenance import check_not_input, is_emae_image
from emae.io.writers import write_image
from emae.runtime import select_device
from emae.volume.tiling import predict_tiled

logger = logging.getLogger(__name__)

MAP_SUFFIXES = (".tif", ".tiff", ".zarr")
CSV_FIELDS = (
    "image",
    "section",
    "score",
    "mean",
    "p99",
    "max",
    "anomalous_fraction",
)
#: What score's maps are marked as (:mod:`emae.io.provenance`); only such a map is replaced.
MAP_KIND = "anomaly map"


def _is_scores_csv(path: Path) -> bool:
    """Whether ``path`` is a scores CSV this command wrote (its header is :data:`CSV_FIELDS`)."""
    try:
        with path.open(newline="") as f:
            return tuple(next(csv.reader(f), ())) == CSV_FIELDS
    except (OSError, UnicodeDecodeError):
        return False


def scores_path(map_path: str | Path) -> Path:
    """The scores CSV written beside a map: ``maps/run.tif`` -> ``maps/run_scores.csv``."""
    path = Path(map_path)
    return path.with_name(path.name.split(".")[0] + "_scores.csv")


def _sources(inputs: Sequence[str | Path]) -> list[str]:
    """The image sources that files, folders and globs name (:func:`emae.io.expand_inputs`)."""
    sources = expand_inputs([str(s) for s in inputs])
    if not sources:
        raise EmaeError(f"no input images found in {', '.join(map(str, inputs))}")
    return sources


def _map_axes(images: list[Image], sources: list[str]) -> str:
    """``"YX"`` for a single 2D image, else ``"ZYX"``; all sections must share one size."""
    shapes = {im.yx_shape for im in images}
    if len(shapes) > 1:
        raise EmaeError(
            f"the {len(images)} inputs have different section sizes {sorted(shapes)}; one map "
            f"holds sections of one size, so score them separately (e.g. {sources[0]})"
        )
    return "YX" if len(images) == 1 and images[0].ndim == 2 else "ZYX"


def _map_pixel_size(images: list[Image], axes: str) -> tuple[float | None, ...] | None:
    """The map's pixel size: the inputs' sizes in Y and X when they agree (and Z for a single
    stack); None, with a warning, when they differ."""
    yx = {im.pixel_size[-2:] if im.pixel_size else None for im in images}
    if len(yx) > 1:
        logger.warning("the inputs have different pixel sizes %s; the map has none", yx)
        return None
    (sizes,) = yx
    if sizes is None:
        return None
    if axes == "YX":
        return sizes
    z = images[0].pixel_size[0] if len(images) == 1 and images[0].ndim == 3 else None
    return (z, *sizes)


def map_section(
    detector: AutoencoderDetector,
    section: np.ndarray,
    *,
    tile: int = 1024,
    overlap: int = 64,
    batch_size: int = 8,
) -> np.ndarray:
    """The anomaly map of one section: the computation of ``emae score`` and the napari widget.

    Parameters
    ----------
    detector
        A fitted detector whose ``normalizer`` suits the section's dtype
        (:func:`emae.data.normalization.normalizer_for`).
    section
        ``(H, W)`` raw pixels (``"YX"``), in the dtype the normalizer expects, all finite.
    tile, overlap
        Sections larger than ``tile`` pixels are mapped in tiles overlapping by ``overlap``
        and blended without seams (:func:`emae.volume.tiling.predict_tiled`).
    batch_size
        Tiles per forward pass.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32, larger = more anomalous.
    """
    return predict_tiled(
        section,
        lambda tiles: detector.anomaly_map(tiles)[:, None],
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
    )[0]


def score_images(
    model_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    overwrite: bool = False,
    device: str = "auto",
    batch_size: int = 8,
    scale: int = 0,
    tile: int = 1024,
    overlap: int = 64,
    precision: str = "auto",
    progress: bool = True,
    rescale: bool = False,
    pixel_size: Sequence[float] | None = None,
    truth: str | Path | None = None,
) -> dict[str, Any]:
    """Write the anomaly map of ``inputs`` under the model in ``model_dir``, and the scores CSV.

    Parameters
    ----------
    model_dir
        A model folder written by ``emae pretrain`` (with its fitted score and thresholds).
    inputs
        Files, folders or globs of 2D images or ``"ZYX"`` stacks, read in the given order.
    out
        The map to write: ``*.tif``/``*.tiff`` or ``*.zarr``. Neither it nor the scores CSV
        may exist unless ``overwrite`` is set, and neither may be, contain or lie inside an
        input or the model folder.
    overwrite
        Replace an existing map and scores CSV, but only a map and CSV that this command wrote.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    batch_size
        Tiles per forward pass.
    scale
        Pyramid level of multiscale inputs.
    tile, overlap
        Sections larger than ``tile`` pixels are scored in tiles overlapping by ``overlap``
        and blended without seams (:mod:`emae.volume.tiling`), so memory stays bounded by the tile.
    precision
        Of the forward passes: ``"auto"`` (default: bf16 where the device has it natively),
        ``"fp32"`` or ``"bf16"`` (see :func:`emae.anomaly.maps.batched_apply`).
    progress
        Show a progress bar over sections.
    rescale
        Normalize the inputs by their own percentiles (those the model was trained with)
        instead of the model's intensity values: the way to score data of another dtype or
        intensity range (:func:`emae.data.normalization.normalizer_for`). Without it, inputs of
        another dtype than the training data are refused.
    pixel_size
        Nanometers per pixel to use instead of (or where the inputs lack) their own
        (:meth:`emae.io.Image.with_pixel_size`); the map carries the inputs' pixel size.
    truth
        Optional artifact masks to check the map against: an image of any reader with the
        map's shape (``"YX"`` or ``"ZYX"``), nonzero = artifact. The result then holds the
        map's pixel AUROC, average precision and AUPRO against them
        (:func:`~emae.anomaly.pixel_metrics.pixel_metrics`).

    Returns
    -------
    dict
        ``{"map": path, "scores": csv path, "axes": "YX" | "ZYX", "shape": [...],
        "sections": int, "anomalous_sections": int}``, plus ``"truth"`` (the metrics) when
        ``truth`` is given; a section counts as anomalous when its image score is above the
        model's image threshold.
    """
    out = Path(out)
    if out.suffix.lower() not in MAP_SUFFIXES:
        raise EmaeError(f"{out}: the map must end in .tif, .tiff or .zarr")
    csv_path = scores_path(out)
    sources = _sources(inputs)
    for path in (out, csv_path):
        check_not_input(path, [model_dir, *sources])
    check_writable(
        out,
        overwrite=overwrite,
        replaceable=lambda p: is_emae_image(p, MAP_KIND),
        kind="an anomaly map written by emae score",
    )
    check_writable(
        csv_path, overwrite=overwrite, replaceable=_is_scores_csv, kind="an emae scores CSV"
    )
    detector = AutoencoderDetector.from_bundle(
        model_dir, batch_size=batch_size, device=select_device(device), precision=precision
    )
    images = [open_image(s, scale=scale).with_pixel_size(pixel_size) for s in sources]
    axes = _map_axes(images, sources)
    for image in images:
        image.check_complete()
    n_sections = sum(im.n_sections for im in images)
    masks = None if truth is None else _truth_masks(truth, n_sections, images[0].yx_shape)
    detector.normalizer = normalizer_for(
        images, detector.normalizer, model=f"the model {model_dir}", rescale=rescale
    )
    sections = [
        (im, src, z) for im, src in zip(images, sources, strict=True) for z in range(im.n_sections)
    ]
    height, width = images[0].yx_shape
    maps = np.empty((len(sections), height, width), dtype=np.float32)
    rows = []
    for i, (image, source, z) in enumerate(tqdm(sections, desc="scoring", disable=not progress)):
        maps[i] = map_section(
            detector,
            image.check_finite(image.section(z), z),
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
        )
        m = maps[i]
        rows.append(
            {
                "image": source,
                "section": z,
                "score": float(detector.reduce_maps(m[None])[0]),
                "mean": float(m.mean(dtype=np.float64)),
                "p99": float(np.percentile(m, 99)),
                "max": float(m.max()),
                "anomalous_fraction": float((m > detector.pixel_threshold_.value).mean()),
            }
        )
    write_image(
        out,
        maps[0] if axes == "YX" else maps,
        axes=axes,
        overwrite=overwrite,
        kind=MAP_KIND,
        pixel_size=_map_pixel_size(images, axes),
    )
    with (
        atomic_file(csv_path, overwrite=overwrite, replaceable=_is_scores_csv) as tmp,
        tmp.open("w", newline="") as f,
    ):
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    anomalous = sum(r["score"] > detector.threshold_ for r in rows)
    logger.info("scored %d section(s); %d above the image threshold", len(rows), anomalous)
    result: dict[str, Any] = {
        "map": str(out),
        "scores": str(csv_path),
        "axes": axes,
        "shape": list(maps[0].shape if axes == "YX" else maps.shape),
        "sections": len(rows),
        "anomalous_sections": int(anomalous),
    }
    if masks is not None:
        result["truth"] = pixel_metrics(maps, masks)
    return result


def _truth_masks(truth: str | Path, n_sections: int, yx_shape: tuple[int, int]) -> np.ndarray:
    """Artifact masks ``(Z, H, W)`` bool from an image of the map's shape, checked."""
    image = open_image(str(truth))
    if (image.n_sections, *image.yx_shape) != (n_sections, *yx_shape):
        raise EmaeError(
            f"{truth}: the truth masks must have the map's shape "
            f"{n_sections} x {yx_shape[0]} x {yx_shape[1]} (sections x height x width), "
            f"got {image.n_sections} x {image.yx_shape[0]} x {image.yx_shape[1]}"
        )
    masks = np.stack([image.section(z) != 0 for z in range(n_sections)])
    if not 0 < masks.sum() < masks.size:
        raise EmaeError(f"{truth}: the truth masks must mark some pixels as artifact, not all")
    return masks
