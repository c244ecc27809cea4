"""The report's sections, as plain data the template renders.

A section is ``{"id", "title", "blocks"}``; a block is one of

- ``{"type": "kv", "caption", "items": [(key, value), ...]}``,
- ``{"type": "table", "caption", "id", "header": [...], "rows": [[...], ...]}``; a cell is a
  value or ``{"text", "note"}`` (the note, e.g. an interval, in smaller grey type),
- ``{"type": "figure", "caption", "uri", "alt"}`` (a ``data:`` PNG),
- ``{"type": "code", "caption", "text"}``, ``{"type": "text", "text"}``,
- ``{"type": "warning", "id", "title", "items": [(head, text), ...]}`` and optionally
  ``"text"``: a box to read first, each item a line with its head (e.g. a class) in bold.

A section may also carry ``"highlights"``, ``(name, value)`` pairs for the summary at the top,
and ``"alerts"``, lines for a warning box atop the summary.

Every number comes from the output folders (or, for the anomaly-map AUROC and the example
panels, is computed here from the maps, images and masks they name).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from emae.errors import EmaeError
from emae.report import figures
from emae.report.sources import Runs

MAX_SECTIONS = 8  # test sections drawn and read (the scores CSV lists all of them)
Block = dict[str, Any]
Section = dict[str, Any]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if not np.isfinite(value):
            return "–"
        if 0 < abs(value) < 0.5 * 10**-digits:  # would print as 0.000: show its size instead
            return f"{value:.2g}"
        return f"{value:.{digits}f}"
    return str(value)


def _stat(stat: Any) -> str:
    """``mean ± std`` of a comparison statistic (``{"mean", "std"}``), or one number."""
    if isinstance(stat, dict):
        std = stat.get("std")
        return _fmt(stat.get("mean")) + (f" ± {std:.3f}" if std is not None else "")
    return _fmt(stat)


def _figure(fig: Any, caption: str, alt: str) -> Block:
    return {"type": "figure", "caption": caption, "uri": figures.figure_uri(fig), "alt": alt}


def _file(path: Path, caption: str, alt: str) -> list[Block]:
    uri = figures.file_uri(path)
    return [] if uri is None else [{"type": "figure", "caption": caption, "uri": uri, "alt": alt}]


def _json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` (``{}`` when absent); a corrupt file is one line naming it."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EmaeError(f"{path}: not readable as JSON ({exc})") from None
    if not isinstance(value, dict):
        raise EmaeError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_sections(
    runs: Runs, limit: int = MAX_SECTIONS
) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """The first ``limit`` test sections, in scoring order, as ``(name, image, mask)``.

    ``image`` is the ``(H, W)`` section as stored; ``mask`` the ``(H, W)`` ground truth
    (nonzero = artifact) when ``runs.test_masks`` holds one section per test section, else
    None. Only the returned sections are read, whatever the size of the test stack.
    """
    from emae.io import expand_inputs, open_image

    if not runs.test_images:
        return []
    sections, total = [], 0
    for source in expand_inputs(runs.test_images):
        image = open_image(source)
        total += image.n_sections
        for z in range(min(image.n_sections, limit - len(sections))):
            sections.append((f"{Path(source).name}[{z}]", image.section(z)))
    masks: list[np.ndarray | None] = [None] * len(sections)
    if sections and runs.test_masks and Path(runs.test_masks).exists():
        stack = open_image(runs.test_masks)
        if stack.n_sections == total and stack.yx_shape == sections[0][1].shape:
            masks = [stack.section(z) for z in range(len(sections))]
    return [(n, im, m) for (n, im), m in zip(sections, masks, strict=True)]


def data_section(runs: Runs) -> Section | None:
    """Label counts and imbalance, the input images, the gallery of artifact types."""
    from emae.data.labels import load_labels
    from emae.io import expand_inputs, open_image

    blocks: list[Block] = []
    if runs.labels and Path(runs.labels).is_file():
        labeled = load_labels(runs.labels, check_images=False)
        counts = labeled.class_counts()
        largest, total = max(counts.values()), sum(counts.values())
        groups = {s.group for s in labeled.samples if s.group}
        blocks.append(
            {
                "type": "table",
                "id": "label-counts",
                "caption": f"Labels: {total} {labeled.kind} samples in {len(counts)} classes"
                + (f" from {len(groups)} groups" if groups else "")
                + f" ({runs.labels}); imbalance largest : smallest class = "
                f"{largest} : {min(counts.values())}",
                "header": ["class", "samples", "share", "ratio to the largest"],
                "rows": [
                    [name, n, f"{100 * n / total:.1f}%", f"1 : {largest / max(n, 1):.1f}"]
                    for name, n in counts.items()
                ],
            }
        )
    inputs = []
    config = (runs.pipeline or {}).get("config", {})
    named = [("unlabeled", s) for s in config.get("unlabeled", [])]
    named += [("test", s) for s in runs.test_images]
    if config.get("detect_input"):
        named.append(("detect", config["detect_input"]))
    for role, pattern in named:
        for source in expand_inputs([pattern]):
            image = open_image(source)
            shape = " x ".join(map(str, image.shape))
            inputs.append([role, source, image.axes, shape, str(image.dtype)])
    if inputs:
        blocks.append(
            {
                "type": "table",
                "id": "inputs",
                "caption": "Images",
                "header": ["role", "source", "axes", "shape", "dtype"],
                "rows": inputs,
            }
        )
    if runs.gallery is not None:
        blocks += _file(runs.gallery, "The artifact types of the sample data", "gallery")
    return {"id": "data", "title": "Data", "blocks": blocks} if blocks else None


def _curves(summary: dict[str, Any], title: str) -> Block | None:
    curve = [{"step": p["step"], "value": p["loss"]} for p in summary.get("curve", [])]
    val = [
        {"step": p["step"], "value": p.get("val_loss")}
        for p in summary.get("history", [])
        if p.get("val_loss") is not None
    ]
    if len(curve) + len(val) < 2:  # nothing to draw a curve of (e.g. a model fitted at once)
        return None
    series = {"training loss": curve, "validation loss": val}
    fig = figures.curves_figure({k: v for k, v in series.items() if v}, title)
    return _figure(fig, title, "training curve")


def autoencoder_section(runs: Runs, folder: Path) -> Section:
    """Settings, training curve, and panels input / reconstruction / error / anomaly / target."""
    from emae.anomaly.detector import AutoencoderDetector
    from emae.anomaly.maps import reconstruct

    config = _json(folder / "config.json").get("run", {})
    summary = _json(folder / "training.json")
    threshold = summary.get("threshold", {})
    if "fitted_patches" in summary:  # closed form (PCA): no layers, no steps
        architecture = [
            ("tile, components", f"{config.get('pca_tile')}, {config.get('latent_channels')}")
        ]
        training = [
            ("fitted in closed form on", f"{summary['fitted_patches']} patches"),
            ("fitting time", f"{summary.get('seconds', 0):.0f} s"),
        ]
    else:
        architecture = [
            ("channels", config.get("channels")),
            ("latent", f"{config.get('latent')} ({config.get('latent_channels')} channels)"),
        ]
        training = [
            ("steps x batch", f"{summary.get('steps_done')} x {config.get('batch_size')}"),
            ("training time", f"{summary.get('seconds', 0):.0f} s"),
            ("throughput", f"{summary.get('samples_per_s', 0):.0f} patches/s"),
            ("device, precision", f"{summary.get('device')}, {summary.get('precision')}"),
        ]
    items = [
        ("model", config.get("model")),
        ("folder", str(folder)),
        ("patch size", config.get("patch_size")),
        *architecture,
        *training,
        ("best validation loss", _fmt(summary.get("best_val"), 4)),
        ("anomaly score", config.get("score")),
        (
            "image threshold",
            f"{_fmt(threshold.get('value'))} ({threshold.get('method')}, target FPR "
            f"{threshold.get('target_fpr')})",
        ),
    ]
    blocks: list[Block] = [{"type": "kv", "caption": "Autoencoder", "items": items}]
    curve = _curves(summary, "Autoencoder training")
    if curve:
        blocks.append(curve)
    sections = test_sections(runs)
    if sections:
        detector = AutoencoderDetector.from_bundle(folder, device="cpu")
        size = 128
        rows, titles, outlines = [], [], []
        for name, image, mask in _example_crops(sections, size, 4):
            normalized = detector.normalizer(image[None].astype(np.float32))
            recon = reconstruct(detector.model, normalized, batch_size=1)[0]
            error = np.abs(normalized[0] - recon)
            anomaly = detector.anomaly_map(image[None])[0]
            row = [normalized[0], recon, error, anomaly]
            if mask is not None:
                row.append(mask > 0)
            rows.append(row)
            titles.append(name)
            outlines.append(mask)
        columns = ["input", "reconstruction", "error", "anomaly"]
        columns += ["target"] if len(rows[0]) == 5 else []
        fig = figures.panel_rows_figure(rows, columns, titles, outlines)
        blocks.append(
            _figure(
                fig,
                "Test crops: input, reconstruction, absolute error, anomaly map "
                f"({config.get('score')}) and target (ground-truth outline in cyan)",
                "autoencoder panels",
            )
        )
    return {"id": "autoencoder", "title": "Autoencoder", "blocks": blocks}


def _example_crops(
    sections: list[tuple[str, np.ndarray, np.ndarray | None]], size: int, n: int
) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """``n`` crops of ``size``: centred on the largest artifacts where masks exist."""
    crops = []
    for name, image, mask in sections:
        h, w = image.shape
        if h < size or w < size:
            continue
        if mask is not None and (mask > 0).any():
            ys, xs = np.nonzero(mask > 0)
            label = Counter(mask[mask > 0].tolist()).most_common(1)[0][0]
            pick = mask == label
            ys, xs = np.nonzero(pick)
            cy, cx = int(ys.mean()), int(xs.mean())
        else:
            cy, cx = h // 2, w // 2
        y0 = int(np.clip(cy - size // 2, 0, h - size))
        x0 = int(np.clip(cx - size // 2, 0, w - size))
        crop_mask = None if mask is None else mask[y0 : y0 + size, x0 : x0 + size]
        crops.append((f"{name} y{y0} x{x0}", image[y0 : y0 + size, x0 : x0 + size], crop_mask))
        if len(crops) == n:
            break
    return crops


def anomaly_section(runs: Runs, folder: Path) -> Section | None:
    """Anomaly maps over the test images with the ground-truth outline; per-image scores."""
    import csv

    from sklearn.metrics import roc_auc_score

    from emae.anomaly.pixel_metrics import FPR_LIMIT, pixel_metrics
    from emae.commands.score import scores_path
    from emae.io import open_image

    if runs.score_map is None or not runs.score_map.is_file():
        return None
    stored = open_image(str(runs.score_map))  # read lazily: only the sections shown
    shown = min(stored.n_sections, MAX_SECTIONS)
    maps = np.stack([stored.section(z) for z in range(shown)]).astype(np.float32)
    sections = test_sections(runs, limit=shown)
    pooled = "all sections" if shown == stored.n_sections else f"the first {shown} sections"
    threshold = _json(folder / "training.json").get("pixel_threshold", {}).get("value")
    blocks: list[Block] = []
    if len(sections) == len(maps):
        fig = figures.overlay_figure(
            [s[1] for s in sections],
            list(maps),
            [s[0] for s in sections],
            [s[2] for s in sections],
            threshold=threshold,
        )
        blocks.append(
            _figure(
                fig,
                "Anomaly maps (red: above the pixel threshold "
                f"{_fmt(threshold)}) with the ground-truth artifact outlines (cyan)",
                "anomaly overlays",
            )
        )
    rows = []
    if scores_path(runs.score_map).is_file():
        with scores_path(runs.score_map).open(newline="") as f:
            rows = list(csv.DictReader(f))
    has_masks = len(sections) == len(maps) and all(s[2] is not None for s in sections)
    highlights: list[tuple[str, str]] = []
    table = []
    for i, row in enumerate(rows):
        cells = [
            Path(row["image"]).name + f"[{row['section']}]",
            _fmt(float(row["score"])),
            _fmt(float(row["p99"])),
            f"{100 * float(row['anomalous_fraction']):.2f}%",
        ]
        if has_masks and i < len(sections):
            truth = sections[i][2] > 0
            cells.append(f"{100 * truth.mean():.2f}%")
            cells.append(
                _fmt(roc_auc_score(truth.ravel(), maps[i].ravel())) if 0 < truth.mean() < 1 else "–"
            )
        elif has_masks:
            cells += ["–", "–"]  # not read: beyond the sections shown
        table.append(cells)
    if table:
        header = ["section", "score", "p99", "flagged area"]
        header += ["artifact area", "pixel AUROC"] if has_masks else []
        caption = "Per-section scores (larger = more anomalous)"
        if has_masks:
            truth = np.stack([s[2] > 0 for s in sections])
            if 0 < truth.mean() < 1:
                m = pixel_metrics(maps, truth)
                found = (
                    f"pixel AUROC {m['auroc']:.3f}, average precision {m['ap']:.3f}, "
                    f"AUPRO (to {FPR_LIMIT:.0%} FPR) {m['aupro']:.3f}"
                )
                caption += f"; {pooled} pooled: {found}"
                highlights.append(
                    (
                        "anomaly map vs. ground truth",
                        f"{found} ({len(sections)} test sections, "
                        f"{100 * truth.mean():.1f}% artifact in {m['regions']} regions)",
                    )
                )
        blocks.append(
            {"type": "table", "id": "scores", "caption": caption, "header": header, "rows": table}
        )
    if not blocks:
        return None
    return {"id": "anomaly", "title": "Anomaly maps", "blocks": blocks, "highlights": highlights}
