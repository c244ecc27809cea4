"""Report section of a whole-volume detection (``emae detect``): QC maps, top detections.

A killed or failed run is reported as incomplete from its chunk markers; blocks as in
:mod:`emae.report.sections`, every number read from the store and the CSVs beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emae.report import figures
from emae.report.sections import Block, Section, _figure, _fmt, _json, _read_csv
from emae.volume.qc import qc_figure, tiles_from_csv


def _chunks_done(folder: Path, settings: dict[str, Any]) -> tuple[int, int] | None:
    """``(done, planned)`` chunks of a detect store, from its settings (volume shape, chunk
    size) and its done-state; None when the settings do not say."""
    from emae.volume.done import chunks_done

    shape, chunk = settings.get("shape"), settings.get("chunk")
    if not (
        isinstance(shape, list)
        and len(shape) in (2, 3)
        and all(isinstance(n, int) and n > 0 for n in shape)
        and isinstance(chunk, int)
        and chunk > 0
    ):
        return None
    return chunks_done(folder, tuple((1, *shape)[-3:]), chunk)


def _incomplete(folder: Path, settings: dict[str, Any], detections_csv: Path) -> str | None:
    """Why the store holds no finished detection (a killed or failed run), or None.

    ``emae detect`` records every chunk as done and writes the reports only after the last one,
    so a store with chunks left, or without reports, is unfinished whatever CSV lies beside it
    (an earlier run's, replaced by the next complete one).
    """
    progress = _chunks_done(folder, settings)
    rerun = "rerun emae detect to finish"
    if progress is not None and progress[0] < progress[1]:
        return f"incomplete: {progress[0]} of {progress[1]} chunks done; {rerun}"
    if not detections_csv.is_file():
        done = f"all {progress[1]} chunks done" if progress is not None else "chunks mapped"
        return f"incomplete: {done} but no detection report written; {rerun}"
    return None


def detect_section(folder: Path, top: int = 12) -> Section:
    """QC heatmap and per-section maps, worst sections, and the top detections with thumbnails.

    A store whose run was killed or failed is reported as incomplete (how many chunks are
    done), without detection counts.
    """
    import zarr

    from emae.io import open_image
    from emae.io.map_store import store_images

    settings = _json(folder / "emae_run.json")
    stem = folder.with_suffix("")
    detections_csv = stem.with_name(stem.name + "_detections.csv")
    items = [
        ("store", str(folder)),
        ("input", settings.get("source")),
        ("shape", " x ".join(map(str, settings.get("shape", [])))),
        (
            "tile, overlap, chunk",
            f"{settings.get('tile')}, {settings.get('overlap')}, {settings.get('chunk')}",
        ),
    ]
    status = _incomplete(folder, settings, detections_csv)
    if status is not None:
        items.append(("status", status))
        return {
            "id": "detect",
            "title": "Whole-volume detection",
            "blocks": [{"type": "kv", "caption": "Detection", "items": items}],
            "highlights": [("whole-volume detection", status)],
        }
    detections = _read_csv(detections_csv)
    qc_rows = _read_csv(stem.with_name(stem.name + "_qc.csv"))
    qc = [r for r in qc_rows if r["tile"] == "all"]
    items.append(("detections", len(detections)))
    blocks: list[Block] = [{"type": "kv", "caption": "Detection", "items": items}]
    highlights = [("detections in the volume", str(len(detections)))]
    tiles = tiles_from_csv(qc_rows)
    if tiles:
        blocks.append(
            _figure(
                qc_figure(tiles),
                "QC: share of each tile above the threshold. Top: sections x tiles; below: each "
                "section with its tiles where they lie on it (x right, y down), to see where on "
                "the section to look or re-image",
                "qc map",
            )
        )
    if qc:
        keys = [k for k in qc[0] if k.startswith("fraction_") or k in ("mean_anomaly",)]
        column = "anomalous_fraction" if "anomalous_fraction" in qc[0] else keys[0]
        worst = sorted(qc, key=lambda r: -float(r[column]))[:10]
        highlights.append(
            (
                f"section with the largest {column.replace('_', ' ')}",
                f"z = {worst[0]['z']} ({_fmt(float(worst[0][column]))})",
            )
        )
        blocks.append(
            {
                "type": "table",
                "id": "qc",
                "caption": f"Sections with the largest {column.replace('_', ' ')}",
                "header": ["section", column.replace("_", " "), *keys],
                "rows": [
                    [r["z"], _fmt(float(r[column])), *(_fmt(float(r[k])) for k in keys)]
                    for r in worst
                ],
            }
        )
    if detections:
        shown = detections[:top]
        header = ["#", "class", "z", "centroid x, y", "bounding box", "area", "peak"]
        rows = [
            [
                i + 1,
                d["class"],
                d["z"],
                f"{float(d['centroid_x']):.0f}, {float(d['centroid_y']):.0f}",
                f"x {d['x_min']}-{d['x_max']}, y {d['y_min']}-{d['y_max']}",
                d["area"],
                _fmt(float(d["peak"])),
            ]
            for i, d in enumerate(shown)
        ]
        blocks.append(
            {
                "type": "table",
                "id": "detections",
                "caption": f"Top {len(shown)} of {len(detections)} detections by peak score",
                "header": header,
                "rows": rows,
            }
        )
        image = open_image(settings["source"]) if settings.get("source") else None
        found = store_images(folder).get("anomaly")
        anomaly = zarr.open_array(found / "0", mode="r") if found is not None else None
        if image is not None:
            crops, maps, titles = [], [], []
            for i, d in enumerate(shown):
                z = int(d["z"] or 0)
                cy, cx = float(d["centroid_y"]), float(d["centroid_x"])
                half = max(
                    32,
                    (int(d["y_max"]) - int(d["y_min"])) // 2 + 16,
                    (int(d["x_max"]) - int(d["x_min"])) // 2 + 16,
                )
                h, w = image.yx_shape
                y0, y1 = max(0, int(cy) - half), min(h, int(cy) + half)
                x0, x1 = max(0, int(cx) - half), min(w, int(cx) + half)
                index = (
                    (z, slice(y0, y1), slice(x0, x1))
                    if image.axes == "ZYX"
                    else (slice(y0, y1), slice(x0, x1))
                )
                crops.append(np.asarray(image[index], np.float32))
                maps.append(None if anomaly is None else np.asarray(anomaly[index], np.float32))
                titles.append(f"#{i + 1} {d['class']} z{z}")
            fig = figures.thumbnails_figure(crops, maps, titles)
            blocks.append(
                {
                    "type": "figure",
                    "caption": "Top detections (anomaly map in red, one scale for all crops)",
                    "uri": figures.figure_uri(fig),
                    "alt": "detections",
                }
            )
    return {
        "id": "detect",
        "title": "Whole-volume detection",
        "blocks": blocks,
        "highlights": highlights,
    }
