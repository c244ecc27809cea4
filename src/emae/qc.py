"""Where the artifacts are: detections, per-section and per-tile QC, and the QC heatmap.

From the done markers of ``emae detect`` (one per chunk: its QC numbers and component pieces),
:func:`write_reports` writes beside the map:

``detections.csv``
    one row per connected region above the model's pixel threshold (merged across chunks):
    class, centroid x, y, z, bounding box, area in pixels, peak score; largest peak first;
``qc.csv``
    one row per tile (output chunk) and one summary row per section (``tile = "all"``):
    anomalous area fraction and mean anomaly;
``qc.png``
    sections x tiles heatmap of the anomalous fraction: the sections and tiles to re-image
    stand out at a glance.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from emae.components import ChunkComponents, merge_components
from emae.io.atomic import atomic_file

DETECTION_FIELDS = (
    "class",
    "centroid_x",
    "centroid_y",
    "z",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
    "area",
    "peak",
)
QC_FIELDS = ("z", "tile", "x0", "y0", "width", "height")


def _write_csv(path: Path, fields: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    with atomic_file(path, overwrite=True) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})


def _artifact_fraction(qc: dict[str, Any]) -> float:
    """The anomalous fraction, else the summed fractions of the classes other than clean."""
    if "anomalous_fraction" in qc:
        return float(qc["anomalous_fraction"])
    fractions = {k: v for k, v in qc.items() if k.startswith("fraction_")}
    return float(sum(v for k, v in fractions.items() if k != "fraction_clean"))


def heatmap(fractions: np.ndarray, path: Path, title: str = "anomalous area per tile") -> None:
    """Draw a ``(sections, tiles)`` array of fractions as a PNG heatmap, atomically."""
    z, t = fractions.shape
    fig = Figure(figsize=(min(3 + 0.25 * t, 16), min(2 + 0.25 * z, 12)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(fractions, aspect="auto", cmap="magma", vmin=0, interpolation="nearest")
    ax.set_xlabel("tile (row-major within the section)")
    ax.set_ylabel("section z")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="fraction of pixels above threshold")
    with atomic_file(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_reports(
    out: Path,
    markers: list[tuple[dict[str, Any], list[ChunkComponents]]],
    class_names: list[str],
) -> dict[str, Any]:
    """Write ``OUT_detections.csv``, ``OUT_qc.csv`` and ``OUT_qc.png`` beside ``OUT.zarr``.

    ``markers`` hold every chunk's ``(qc, pieces)`` in row-major order within each section;
    ``class_names[i]`` names component class index ``i``. The QC numbers are the keys of the
    markers' ``qc`` besides the position: ``mean_anomaly``, ``anomalous_fraction`` and
    ``fraction_<class>``. The heatmap shows the anomalous fraction, or for a classifier without
    anomaly map the summed fractions of the classes other than ``clean``.
    Returns the number of detections and the three paths.
    """
    stem = out.with_suffix("")
    components = merge_components([p for _, pieces in markers for p in pieces])
    detections = [
        {
            "class": class_names[c["class_index"]],
            "centroid_x": c["centroid_x"],
            "centroid_y": c["centroid_y"],
            "z": c["z"],
            "x_min": c["x_min"],
            "y_min": c["y_min"],
            "x_max": c["x_max"],
            "y_max": c["y_max"],
            "area": c["area"],
            "peak": c["peak"],
        }
        for c in sorted(components, key=lambda c: -c["peak"])
    ]
    paths = {
        "detections_csv": stem.with_name(stem.name + "_detections.csv"),
        "qc_csv": stem.with_name(stem.name + "_qc.csv"),
        "qc_png": stem.with_name(stem.name + "_qc.png"),
    }
    _write_csv(paths["detections_csv"], DETECTION_FIELDS, detections)
    numbers = [k for k in markers[0][0] if k not in ("z", "y0", "x0", "height", "width")]
    rows, by_section = [], {}
    for qc, _ in markers:
        by_section.setdefault(qc["z"], []).append(qc)
    grid = []
    for z, tiles in sorted(by_section.items()):
        area = sum(t["width"] * t["height"] for t in tiles)
        for i, t in enumerate(tiles):
            rows.append(
                {
                    "z": z,
                    "tile": i,
                    "x0": t["x0"],
                    "y0": t["y0"],
                    "width": t["width"],
                    "height": t["height"],
                    **{k: t[k] for k in numbers},
                }
            )
        weight = [t["width"] * t["height"] / area for t in tiles]
        summary = {k: sum(w * t[k] for w, t in zip(weight, tiles, strict=True)) for k in numbers}
        rows.append({"z": z, "tile": "all", "x0": 0, "y0": 0, "width": "", "height": "", **summary})
        grid.append([_artifact_fraction(t) for t in tiles])
    _write_csv(paths["qc_csv"], (*QC_FIELDS, *numbers), rows)
    heatmap(np.array(grid, dtype=np.float64), paths["qc_png"])
    return {"detections": len(detections), **{k: str(v) for k, v in paths.items()}}
