"""Where the artifacts are: detections, per-section and per-tile QC, and the QC maps.

From the sections' manifests of ``emae detect`` (each section's QC numbers per chunk and its merged
detections, :mod:`emae.volume.done`), :func:`write_reports` writes beside the map:

``detections.csv``
    one row per connected region above the model's pixel threshold (merged across chunks):
    class, centroid x, y, z, bounding box, area in pixels, peak score; largest peak first;
``qc.csv``
    one row per tile (output chunk) and one summary row per section (``tile = "all"``):
    anomalous area fraction and mean anomaly;
``qc.png``
    the anomalous fraction as a sections x tiles heatmap (the sections to re-image stand out at
    a glance) above one small map per section with its tiles laid out as they lie on the
    section in Y and X (where on the section the problem is); see :func:`qc_figure`.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from emae.errors import EmaeError
from emae.io.atomic import atomic_file
from emae.volume.sections import TABLE, check_numbers

DETECTION_FIELDS = (
    "id",
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
MAX_SECTION_MAPS = 24  # per-section maps drawn; beyond, those with the most anomalous area
_FRACTION_LABEL = "fraction of pixels above threshold"


def _artifact_fraction(qc: dict[str, Any]) -> float:
    """The anomalous fraction, else the summed fractions of the classes other than clean."""
    if "anomalous_fraction" in qc:
        return float(qc["anomalous_fraction"])
    fractions = {k: v for k, v in qc.items() if k.startswith("fraction_")}
    return float(sum(v for k, v in fractions.items() if k != "fraction_clean"))


def _placed(qc: Mapping[str, Any]) -> dict[str, Any]:
    """A tile for :func:`qc_figure`: its place on the section and its anomalous fraction."""
    place = {k: int(qc[k]) for k in ("y0", "x0", "height", "width")}
    return {**place, "fraction": _artifact_fraction(dict(qc))}


def tile_grid(tiles: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lay one section's tiles out as they lie on the section, in Y and X.

    Parameters
    ----------
    tiles
        One mapping per tile with ``y0``, ``x0``, ``height``, ``width`` (pixels) and
        ``fraction``, in any order; together they form a grid of rows and columns (the chunks of
        ``emae detect``, the last row and column possibly narrower).

    Returns
    -------
    tuple of np.ndarray
        ``y_edges`` ``(R + 1,)`` and ``x_edges`` ``(C + 1,)`` in pixels, and ``grid`` ``(R, C)``
        float64: ``grid[r, c]`` is the fraction of the tile spanning ``y_edges[r:r + 2]`` and
        ``x_edges[c:c + 2]``, NaN where no tile lies.
    """
    if not tiles:
        raise EmaeError("tile_grid needs at least one tile, got none")
    edges = []
    for start, size in (("y0", "height"), ("x0", "width")):
        starts = sorted({int(t[start]) for t in tiles})
        ends = {int(t[start]): int(t[start]) + int(t[size]) for t in tiles}
        bounds = [*starts, ends[starts[-1]]]
        for t in tiles:
            i = starts.index(int(t[start]))
            if int(t[start]) + int(t[size]) != bounds[i + 1]:
                raise EmaeError(
                    f"tiles do not form a grid: the tile at y0={t['y0']}, x0={t['x0']} ends at "
                    f"{start[0]} = {int(t[start]) + int(t[size])}, expected {bounds[i + 1]}"
                )
        edges.append(np.array(bounds, dtype=np.int64))
    y_edges, x_edges = edges
    grid = np.full((len(y_edges) - 1, len(x_edges) - 1), np.nan)
    for t in tiles:
        r = int(np.searchsorted(y_edges, int(t["y0"])))
        c = int(np.searchsorted(x_edges, int(t["x0"])))
        grid[r, c] = float(t["fraction"])
    return y_edges, x_edges, grid


def tiles_from_csv(rows: Iterable[Mapping[str, str]]) -> list[tuple[int, list[dict[str, Any]]]]:
    """The tiles of every section from the rows of a ``qc.csv``, for :func:`qc_figure`.

    Returns ``[(z, [{"y0", "x0", "height", "width", "fraction"}, ...]), ...]`` in file order,
    the summary rows (``tile = "all"``) left out; ``fraction`` as :func:`write_reports` draws it.
    """
    sections: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        if row["tile"] == "all":
            continue
        numbers = {k: float(v) for k, v in row.items() if k not in QC_FIELDS and v != ""}
        place = {k: row[k] for k in ("y0", "x0", "height", "width")}
        sections.setdefault(int(row["z"]), []).append(_placed({**place, **numbers}))
    return list(sections.items())


def _area_fraction(tiles: Sequence[Mapping[str, Any]]) -> float:
    area = sum(t["height"] * t["width"] for t in tiles)
    return sum(t["height"] * t["width"] * t["fraction"] for t in tiles) / max(area, 1)


def qc_figure(
    sections: Sequence[tuple[int, Sequence[Mapping[str, Any]]]],
    title: str = "anomalous area per tile",
    max_maps: int = MAX_SECTION_MAPS,
) -> Figure:
    """The QC figure: a sections x tiles heatmap above one spatial map per section.

    Parameters
    ----------
    sections
        ``[(z, tiles), ...]``, tiles as in :func:`tile_grid`, in the same row-major order in
        every section.
    title
        Title of the figure.
    max_maps
        Most per-section maps drawn: beyond, the sections with the largest anomalous area, in
        z order.

    Returns
    -------
    Figure
        The heatmap (x: tile index, row-major; y: section) and, below it, each section's map
        (x to the right, y down, as in the image), all on one colour scale with one labelled
        colour bar.
    """
    if not sections or not all(tiles for _, tiles in sections):
        raise EmaeError("qc_figure needs at least one section with tiles, got none")
    counts = {len(tiles) for _, tiles in sections}
    fractions = [[float(t["fraction"]) for t in tiles] for _, tiles in sections]
    top = max(max(f) for f in fractions)
    norm = {"vmin": 0.0, "vmax": top if top > 0 else 1.0}
    shown = list(sections)
    if len(shown) > max_maps:
        worst = sorted(range(len(shown)), key=lambda i: -_area_fraction(shown[i][1]))[:max_maps]
        shown = [shown[i] for i in sorted(worst)]
    columns = min(len(shown), 8)
    rows = -(-len(shown) // columns)
    y_edges, x_edges, _ = tile_grid(shown[0][1])
    aspect = (y_edges[-1] - y_edges[0]) / max(x_edges[-1] - x_edges[0], 1)
    maps_h = max(rows * (1.5 * min(aspect, 2.0) + 0.35), 2.2) + 0.4
    z, t = len(sections), max(counts)
    heat_h = min(2 + 0.25 * z, 12) if len(counts) == 1 else 0.0
    fig = Figure(figsize=(max(min(3 + 0.25 * t, 16), 1.5 * columns + 2.0), heat_h + maps_h + 0.4))
    fig.set_layout_engine("constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(title)
    if heat_h:
        heat, maps = fig.subfigures(2, 1, height_ratios=[heat_h, maps_h])
        ax = heat.add_subplot()
        im = ax.imshow(
            np.array(fractions), aspect="auto", cmap="magma", interpolation="nearest", **norm
        )
        if t <= 40:
            ax.set_xticks(range(t))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("tile (row-major within the section)")
        ax.set_ylabel("section z")
        if z <= 40:
            ax.set_yticks(range(z), [str(zi) for zi, _ in sections])
        heat.colorbar(im, ax=ax, label=_FRACTION_LABEL)
    else:
        maps = fig.subfigures(1, 1)
    which = (
        "each section"
        if len(shown) == len(sections)
        else f"the {len(shown)} sections with the most anomalous area"
    )
    maps.suptitle(f"{which}: tiles where they lie (x right, y down)", fontsize=10)
    axes = maps.subplots(rows, columns, squeeze=False)
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="0.85")
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, (zi, tiles) in zip(axes.ravel(), shown, strict=False):
        y_edges, x_edges, grid = tile_grid(tiles)
        mesh = ax.pcolormesh(x_edges, y_edges, np.ma.masked_invalid(grid), cmap=cmap, **norm)
        ax.set_axis_on()
        ax.set_xlim(x_edges[0], x_edges[-1])
        ax.set_ylim(y_edges[-1], y_edges[0])  # y down, as in the image
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"z {zi}: {100 * _area_fraction(tiles):.2g}%", fontsize=8)
    maps.colorbar(mesh, ax=axes, label="fraction above threshold", shrink=0.9)
    return fig


def write_figure(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a PNG, atomically."""
    with atomic_file(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


_INTEGER = {"id", "z", "x_min", "y_min", "x_max", "y_max", "area"}
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


def _format(row: dict[str, Any]) -> dict[str, Any]:
    return {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()}


def write_reports(
    out: Path,
    sections: Iterable[tuple[int, list[dict[str, Any]], np.ndarray]],
    class_names: list[str],
    on_detection: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """Write ``OUT_detections.csv``, ``OUT_qc.csv`` and ``OUT_qc.png`` beside ``OUT.zarr``.

    ``sections`` yield, in z order, each section's ``(z, tiles, detections)``: its chunks' QC
    numbers (row-major; dicts with the position and ``mean_anomaly``, ``anomalous_fraction``,
    ``fraction_<class>``) and its merged detections, ``(n, len(TABLE))`` float64 rows in
    :data:`emae.volume.sections.TABLE` order with ids ``1..n`` within the section (the
    sections' manifests, :mod:`emae.volume.done`). ``class_names[i]`` names class index ``i``.
    The QC figure (:func:`qc_figure`) shows the anomalous fraction, or for a classifier
    without anomaly map the summed fractions of the classes other than ``clean``.

    Detections are numbered ``1..n`` in section order (``id``, the first column), as the label
    images (:mod:`emae.volume.labels`) hold them; ``on_detection`` is called with each one
    (``id``, ``class``, ``area``, ``peak``, ...) in id order until it returns False. Memory
    does not grow with the volume's detections: they go to a table on disk, and only their
    peaks (8 bytes per detection) are read back to write the CSV largest peak first. Returns
    the number of detections and the three paths. A section whose QC numbers differ from the
    others' (a marker of another run) is an ``EmaeError`` naming its chunk, and no report is
    half-written.
    """
    stem = out.with_suffix("")
    paths = {
        "detections_csv": stem.with_name(stem.name + "_detections.csv"),
        "qc_csv": stem.with_name(stem.name + "_qc.csv"),
        "qc_png": stem.with_name(stem.name + "_qc.png"),
    }
    qc_tiles: list[tuple[int, list[dict[str, Any]]]] = []  # per section, for qc_figure
    n = 0
    with (
        tempfile.NamedTemporaryFile(dir=out.parent, prefix=".detections-", suffix=".f8") as table,
        atomic_file(paths["qc_csv"], overwrite=True) as qc_tmp,
        qc_tmp.open("w", newline="") as qc_file,
    ):
        qc_writer = None
        for z, tiles, rows in sections:
            if qc_writer is None:
                numbers = [k for k in tiles[0] if k not in ("z", "y0", "x0", "height", "width")]
                qc_writer = csv.DictWriter(qc_file, fieldnames=(*QC_FIELDS, *numbers))
                qc_writer.writeheader()
            for t in tiles:
                check_numbers(t, numbers, str(out))
            qc_writer.writerows(_format(r) for r in _section_rows(z, tiles, numbers))
            qc_tiles.append((z, [_placed(t) for t in tiles]))
            rows = np.array(rows, dtype=np.float64).reshape(-1, len(TABLE))
            rows[:, TABLE.index("id")] += n
            for row in rows.tolist() if on_detection is not None else ():
                if not on_detection(_detection(dict(zip(TABLE, row, strict=True)), class_names)):
                    on_detection = None  # it has all it wants
                    break
            table.write(rows.tobytes())
            n += len(rows)
        table.flush()
        with atomic_file(paths["detections_csv"], overwrite=True) as det_tmp:
            with det_tmp.open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(DETECTION_FIELDS)
                if n:
                    rows = np.memmap(table.name, np.float64, "r", shape=(n, len(TABLE)))
                    order = np.argsort(-rows[:, TABLE.index("peak")], kind="stable")
                    for start in range(0, n, _BLOCK):
                        block = rows[order[start : start + _BLOCK]].tolist()
                        writer.writerows(_csv_row(row, class_names) for row in block)
                    del rows
    if qc_writer is None:
        raise EmaeError(f"{out}: no section to report")
    write_figure(qc_figure(qc_tiles), paths["qc_png"])
    return {"detections": n, **{k: str(v) for k, v in paths.items()}}


def _csv_row(row: list[float], class_names: list[str]) -> list[Any]:
    """A table row (:data:`TABLE` order) as the fields of a detections.csv line."""
    id_, k, cx, cy, z, x0, y0, x1, y1, area, peak = row
    ints = (int(z), int(x0), int(y0), int(x1), int(y1), int(area))
    return [int(id_), class_names[int(k)], f"{cx:.6g}", f"{cy:.6g}", *ints, f"{peak:.6g}"]


def _detection(values: dict[str, float], class_names: list[str]) -> dict[str, Any]:
    """A table row as a detection: integer columns as ints, the class by name."""
    d: dict[str, Any] = {k: int(v) if k in _INTEGER else v for k, v in values.items()}
    d["class"] = class_names[int(d.pop("class_index"))]
    return d
