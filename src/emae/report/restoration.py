"""Report sections of restorations: ``emae repair`` folders and ``emae denoise`` outputs.

Every number is read from the run's own files (``repair.json``, the sections table beside the
restored image); the panels are the run's ``panels.png`` or, for a denoised image, drawn here
from the input and the output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emae.report.sections import Block, Section, _figure, _file, _fmt, _json, _read_csv


def _worst_sections(table: Path, top: int = 10) -> Block | None:
    rows = _read_csv(table)
    if not rows:
        return None
    worst = sorted(rows, key=lambda r: -int(r["replaced_pixels"]))[:top]
    return {
        "type": "table",
        "id": "repair-sections",
        "caption": "Sections with the largest replaced area",
        "header": ["section", "replaced pixels", "replaced fraction", "clipped pixels"],
        "rows": [
            [r["z"], r["replaced_pixels"], _fmt(float(r["replaced_fraction"])), r["clipped_pixels"]]
            for r in worst
        ],
    }


def repair_section(folder: Path) -> Section:
    """What ``emae repair`` replaced: settings, totals, the sections most changed, and the
    before / after / mask panels."""
    record = _json(folder / "repair.json")
    filled = record.get("inpaint", {})
    found = record.get("detect", {})
    pixels = filled.get("pixels") or 0
    replaced = filled.get("replaced_pixels", 0)
    share = f"{replaced:,} ({replaced / pixels:.2%})" if pixels else "-"
    items = [
        ("run folder", str(folder)),
        ("repaired image", filled.get("out", "-")),
        (
            "anomaly threshold, margin",
            f"{_fmt(record.get('threshold'))}, {record.get('margin')} pixels",
        ),
        ("detections", found.get("detections", "-")),
        ("pixels replaced", share),
    ]
    blocks: list[Block] = [{"type": "kv", "caption": "Repair", "items": items}]
    table = Path(filled["table"]) if filled.get("table") else None
    if table is not None and table.is_file():
        worst = _worst_sections(table)
        if worst is not None:
            blocks.append(worst)
    blocks += _file(
        folder / "panels.png",
        "Before, after and the replaced pixels (outlined) of the sections with the most "
        "replaced area",
        "repair panels",
    )
    return {
        "id": "repair",
        "title": "Repair",
        "blocks": blocks,
        "highlights": [("pixels replaced by the repair", share)],
    }


def noise_text(noise: dict | None) -> str:
    """The noise model a denoising run recorded, in words (none: the prediction alone)."""
    from emae.restore.noise import NoiseModel

    return str(NoiseModel(**noise)) if noise else "none: the network's prediction alone"


def denoise_section(store: Path, source: str | None, shown: int = 2) -> Section | None:
    """A denoised image beside its input, for the first ``shown`` sections (a 384-pixel crop)."""
    from emae.io import open_image
    from emae.restore.panels import crop_at, restoration_panels

    settings = _json(store / "emae_restore.json")
    source = source or settings.get("source")
    if not source:
        return None
    before, after = open_image(str(source)), open_image(str(store))
    examples = []
    for z in range(min(shown, before.n_sections)):
        where = (z,) if before.ndim == 3 else ()
        yx = crop_at(before.yx_shape)
        examples.append(
            (
                f"z={z}",
                np.asarray(before.data[(*where, *yx)]),
                np.asarray(after.data[(*where, *yx)]),
                None,
            )
        )
    items = [
        ("denoised image", str(store)),
        ("input", str(source)),
        ("model", settings.get("model", "-")),
        ("noise model", noise_text(settings.get("noise"))),
    ]
    fig = restoration_panels(examples)
    return {
        "id": "denoise",
        "title": "Denoising",
        "blocks": [
            {"type": "kv", "caption": "Denoising", "items": items},
            _figure(fig, "The input and the denoised image, on the same grey scale", "denoise"),
        ],
    }
