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
import tempfile
from collections.abc import Iterable
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from emae.components import ChunkComponents, merge_components
from emae.errors import EmaeError
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


# The numeric columns of a detection, in the order of the on-disk table of :func:`write_reports`.
_TABLE = ("class_index", "centroid_x", "centroid_y", "z", "x_min", "y_min", "x_max", "y_max")
_TABLE += ("area", "peak")
_INTEGER = {"z", "x_min", "y_min", "x_max", "y_max", "area"}
_BLOCK = 65536  # detection rows written per block


def _section_rows(z: int, tiles: list[dict[str, Any]], numbers: list[str]) -> list[dict[str, Any]]:
    """The QC rows of one section: one per tile, then the area-weighted summary (``"all"``)."""
    rows = [
        {
            "z": z,
            "tile": i,
            **{k: t[k] for k in ("x0", "y0", "width", "height")},
            **{k: t[k] for k in numbers},
        }
        for i, t in enumerate(tiles)
    ]
    area = sum(t["width"] * t["height"] for t in tiles)
    weight = [t["width"] * t["height"] / area for t in tiles]
    summary = {k: sum(w * t[k] for w, t in zip(weight, tiles, strict=True)) for k in numbers}
    rows.append({"z": z, "tile": "all", "x0": 0, "y0": 0, "width": "", "height": "", **summary})
    return rows


def _check_numbers(qc: dict[str, Any], numbers: list[str], out: Path) -> None:
    """Refuse a chunk whose QC numbers differ from the first chunk's (a marker of another run)."""
    found = [k for k in qc if k not in ("z", "y0", "x0", "height", "width")]
    if sorted(found) != sorted(numbers):
        chunk = f"z{qc['z']}_y{qc['y0']}_x{qc['x0']}"
        raise EmaeError(
            f"{out}: the done marker of chunk {chunk} holds QC numbers {sorted(found)}, the "
            f"others {sorted(numbers)}; delete that marker and rerun emae detect to map that "
            "chunk again"
        )


def _format(row: dict[str, Any]) -> dict[str, Any]:
    return {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()}


def write_reports(
    out: Path,
    markers: Iterable[tuple[dict[str, Any], list[ChunkComponents]]],
    class_names: list[str],
) -> dict[str, Any]:
    """Write ``OUT_detections.csv``, ``OUT_qc.csv`` and ``OUT_qc.png`` beside ``OUT.zarr``.

    ``markers`` yield every chunk's ``(qc, pieces)`` section by section, row-major within each
    section; ``class_names[i]`` names component class index ``i``. The QC numbers are the keys
    of the markers' ``qc`` besides the position: ``mean_anomaly``, ``anomalous_fraction`` and
    ``fraction_<class>``. The heatmap shows the anomalous fraction, or for a classifier without
    anomaly map the summed fractions of the classes other than ``clean``.

    Memory does not grow with the volume: one section's markers are held at a time (components
    never cross sections), its merged detections go to a table on disk, and only their peaks
    (8 bytes per detection) are read back to write the CSV largest peak first.
    Returns the number of detections and the three paths. A chunk whose QC numbers differ
    from the others' (a done marker of another run) is an ``EmaeError`` naming it, and no
    report is half-written.
    """
    stem = out.with_suffix("")
    paths = {
        "detections_csv": stem.with_name(stem.name + "_detections.csv"),
        "qc_csv": stem.with_name(stem.name + "_qc.csv"),
        "qc_png": stem.with_name(stem.name + "_qc.png"),
    }
    grid: list[list[float]] = []
    n = 0
    with (
        tempfile.NamedTemporaryFile(dir=out.parent, prefix=".detections-", suffix=".f8") as table,
        atomic_file(paths["qc_csv"], overwrite=True) as qc_tmp,
        qc_tmp.open("w", newline="") as qc_file,
    ):
        qc_writer = None
        for z, group in groupby(markers, key=lambda m: m[0]["z"]):
            tiles, pieces = [], []
            for qc, chunk_pieces in group:
                tiles.append(qc)
                pieces.extend(chunk_pieces)
            if qc_writer is None:
                numbers = [k for k in tiles[0] if k not in ("z", "y0", "x0", "height", "width")]
                qc_writer = csv.DictWriter(qc_file, fieldnames=(*QC_FIELDS, *numbers))
                qc_writer.writeheader()
            for t in tiles:
                _check_numbers(t, numbers, out)
            qc_writer.writerows(_format(r) for r in _section_rows(z, tiles, numbers))
            grid.append([_artifact_fraction(t) for t in tiles])
            merged = merge_components(pieces)
            rows = np.array([[c[k] for k in _TABLE] for c in merged], dtype=np.float64)
            table.write(rows.reshape(-1, len(_TABLE)).tobytes())
            n += len(merged)
        table.flush()
        with atomic_file(paths["detections_csv"], overwrite=True) as det_tmp:
            with det_tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=DETECTION_FIELDS)
                writer.writeheader()
                if n:
                    rows = np.memmap(table.name, np.float64, "r", shape=(n, len(_TABLE)))
                    order = np.argsort(-rows[:, _TABLE.index("peak")], kind="stable")
                    for start in range(0, n, _BLOCK):
                        for row in rows[order[start : start + _BLOCK]]:
                            values = dict(zip(_TABLE, row.tolist(), strict=True))
                            d = {k: int(v) if k in _INTEGER else v for k, v in values.items()}
                            d["class"] = class_names[int(d.pop("class_index"))]
                            writer.writerow(_format(d))
                    del rows
    heatmap(np.array(grid, dtype=np.float64), paths["qc_png"])
    return {"detections": n, **{k: str(v) for k, v in paths.items()}}
