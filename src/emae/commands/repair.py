"""``emae repair``: detect artifacts, turn the map into holes, fill them.

One run folder ``OUT/`` holds every step, each resumable on its own:

``detect.zarr`` (+ its reports)
    ``emae detect`` with the detection model (:func:`emae.commands.detect.detect`);
``repaired.zarr`` or ``repaired.tif``
    ``emae inpaint`` with the inpainting model (:func:`emae.commands.restore.inpaint`), the
    holes being the pixels whose anomaly is above the detection model's pixel threshold (or
    ``threshold``), grown by ``margin`` pixels; every other pixel keeps its exact input value
    (up to ``feather`` pixels beyond a hole, where the fill is blended in);
``mask.zarr``
    the pixels that were replaced (uint8, 1 = replaced);
``repaired.*.sections.csv``
    per section, the pixels replaced and their fraction;
``panels.png``
    before / after / mask for the sections with the most replaced area;
``repair.json``
    the settings and the summary.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from matplotlib.figure import Figure

from emae.anomaly.detector import AutoencoderDetector
from emae.commands.detect import detect
from emae.commands.inpaint import inpaint
from emae.errors import EmaeError
from emae.io import open_image
from emae.io.atomic import atomic_file
from emae.io.provenance import check_not_input
from emae.restore.panels import crop_around, restoration_panels
from emae.restore.restorer import FEATHER
from emae.volume.qc import write_figure

logger = logging.getLogger(__name__)

RECORD = "repair.json"
#: Sections shown in ``panels.png``.
PANELS = 3


def _check_folder(out: Path) -> None:
    """``out`` must be new, empty, or a repair folder (which resumes); never anything else."""
    if out.suffix:
        raise EmaeError(f"{out}: emae repair writes a folder; give a name without a suffix")
    if out.exists() and not out.is_dir():
        raise EmaeError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / RECORD).is_file():
        raise EmaeError(f"{out} is a folder that emae repair did not make; refusing to use it")
    if not out.parent.is_dir():
        raise EmaeError(f"cannot write {out}: folder {out.parent} does not exist")
    out.mkdir(exist_ok=True)


def _panels(source: str, scale: int, repaired: Path, mask: Path, table: Path) -> Figure:
    rows = [line.split(",") for line in table.read_text().splitlines()[1:]]
    worst = sorted((r for r in rows if int(r[2])), key=lambda r: -int(r[2]))[:PANELS]
    image = open_image(source, scale=scale)
    after = open_image(str(repaired))
    holes = zarr.open_array(str(mask / "0"), mode="r")
    examples = []
    for row in worst:
        z = int(row[0])
        where = (z,) if image.ndim == 3 else ()
        yx = crop_around(holes, where=where)  # the section is read a block of rows at a time
        examples.append(
            (
                f"z={z}" if image.ndim == 3 else "image",
                np.asarray(image.data[(*where, *yx)]),
                np.asarray(after.data[(*where, *yx)]),
                np.asarray(holes[(*where, *yx)]).astype(bool),
            )
        )
    return restoration_panels(examples)


def repair(
    detect_model: str | Path,
    inpaint_model: str | Path,
    source: str | Path,
    out: str | Path,
    *,
    margin: int = 8,
    threshold: float | None = None,
    feather: int = FEATHER,
    tiff: bool = False,
    chunk: int = 1024,
    overlap: int = 64,
    workers: int | None = None,
    scheduler: str | None = None,
    scale: int = 0,
    device: str = "auto",
    precision: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    rescale: bool = False,
) -> dict[str, Any]:
    """Detect and fill the artifacts of a 2D image or ``"ZYX"`` volume (module docstring).

    Parameters
    ----------
    detect_model
        An autoencoder folder of ``emae pretrain`` (its anomaly score and pixel threshold).
    inpaint_model
        A model folder of ``emae pretrain --model inpainting-ae``.
    source
        Any input :func:`emae.io.open_image` reads; never modified.
    out
        The run folder.
    margin
        Pixels by which the holes grow around the anomalous pixels (at most ``overlap``).
    threshold
        Anomaly above which a pixel is a hole; default: the detection model's pixel threshold.
    feather
        Pixels around a hole over which the fill is blended in.
    tiff
        Write ``repaired.tif`` instead of ``repaired.zarr``.
    precision
        Of the detection's forward passes (the inpainting runs in fp32).
    chunk, overlap, workers, scheduler, scale, device, overwrite, progress, rescale
        As for :func:`emae.commands.detect.detect`, for both steps.

    Returns
    -------
    dict
        ``detect`` and ``inpaint`` (each step's summary), ``threshold``, ``margin``, ``panels``.
    """
    out = Path(out)
    check_not_input(out, [source, detect_model, inpaint_model])
    _check_folder(out)
    if threshold is None:
        detector = AutoencoderDetector.from_bundle(detect_model)
        threshold = float(detector.pixel_threshold_.value)
    shared = {
        "chunk": chunk,
        "overlap": overlap,
        "workers": workers,
        "scheduler": scheduler,
        "scale": scale,
        "device": device,
        "overwrite": overwrite,
        "progress": progress,
        "rescale": rescale,
    }
    found = detect(detect_model, source, out / "detect.zarr", precision=precision, **shared)
    repaired = out / ("repaired.tif" if tiff else "repaired.zarr")
    filled = inpaint(
        inpaint_model,
        source,
        repaired,
        mask=out / "detect.zarr",
        mask_threshold=threshold,
        dilate=margin,
        feather=feather,
        holes_out=out / "mask.zarr",
        **shared,
    )
    panels = out / "panels.png"
    write_figure(
        _panels(str(source), scale, repaired, out / "mask.zarr", Path(filled["table"])), panels
    )
    summary = {
        "detect": found,
        "inpaint": filled,
        "threshold": threshold,
        "margin": margin,
        "panels": str(panels),
    }
    with atomic_file(out / RECORD, overwrite=True) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
    return summary
