"""Report sections of the results: classifier, comparison, detection, reproducibility.

Blocks as in :mod:`emae.report.sections`; every number is read from the output folders.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from emae.report import figures
from emae.report.sections import Block, Runs, Section, _curves, _file, _fmt, _json, _stat

PER_CLASS = (("tpr", "TPR"), ("tnr", "TNR"), ("ppv", "PPV"), ("npv", "NPV"), ("f1", "F1"))
PER_CLASS += (("roc_auc", "ROC AUC"), ("pr_auc", "PR AUC"), ("support", "support"))
OVERALL = (
    ("macro_f1", "macro-F1"),
    ("balanced_accuracy", "balanced acc."),
    ("accuracy", "accuracy"),
    ("macro_roc_auc", "macro ROC AUC"),
    ("macro_pr_auc", "macro PR AUC"),
)


def per_class_table(metrics: dict[str, Any], caption: str, table_id: str) -> Block:
    """Rows = classes, columns = TPR, TNR, PPV, NPV, F1, ROC / PR AUC, support."""
    return {
        "type": "table",
        "id": table_id,
        "caption": caption,
        "header": ["class", *(name for _, name in PER_CLASS)],
        "rows": [
            [name, *(_stat(stats.get(key)) for key, _ in PER_CLASS)]
            for name, stats in metrics["per_class"].items()
        ],
    }


def classifier_section(runs: Runs, classifier: Path | None, evaluation: Path | None) -> Section:
    """The classifier's settings and training curve; its held-out evaluation."""
    blocks: list[Block] = []
    highlights: list[tuple[str, str]] = []
    if classifier is not None:
        run = _json(classifier / "config.json").get("run", {})
        summary = _json(classifier / "training.json")
        counts = summary.get("class_counts", {})
        items = [
            ("folder", str(classifier)),
            ("encoder", summary.get("encoder") or "none (from scratch)"),
            ("encoder training", run.get("freeze")),
            ("class imbalance", run.get("balance")),
            ("steps x batch", f"{summary.get('steps_done')} x {run.get('batch_size')}"),
            ("training labels", ", ".join(f"{k} {v}" for k, v in counts.items())),
            ("training time", f"{summary.get('seconds', 0):.0f} s"),
        ]
        blocks.append({"type": "kv", "caption": "Classifier", "items": items})
        curve = _curves(summary, "Classifier training")
        if curve:
            blocks.append(curve)
    if evaluation is not None:
        metrics = _json(evaluation / "metrics.json")
        n = sum(int(c["support"]) for c in metrics["per_class"].values())
        blocks.append(
            {
                "type": "table",
                "id": "evaluation-overall",
                "caption": f"Held-out test set: {n} samples ({evaluation})",
                "header": [name for _, name in OVERALL],
                "rows": [[_fmt(metrics.get(key)) for key, _ in OVERALL]],
            }
        )
        blocks.append(per_class_table(metrics, "Per class, held-out test set", "evaluation"))
        highlights.append(
            (
                "classifier on held-out labels",
                f"macro-F1 {_fmt(metrics.get('macro_f1'))}, balanced accuracy "
                f"{_fmt(metrics.get('balanced_accuracy'))} ({n} samples)",
            )
        )
        blocks += _file(evaluation / "confusion.png", "Confusion matrix (rows: true)", "confusion")
        blocks += _file(evaluation / "roc_pr.png", "One-vs-rest ROC and PR curves", "roc pr")
        blocks += _file(evaluation / "panels.png", "Test samples, mistakes first", "panels")
    return {
        "id": "classifier",
        "title": "Classifier on few labels",
        "blocks": blocks,
        "highlights": highlights,
    }


def compare_section(folder: Path) -> Section:
    """Every method side by side per budget, per-class tables, confusion matrices, curves."""
    summary = _json(folder / "summary.json")
    settings = _json(folder / "compare.json")
    methods: dict[str, dict[str, Any]] = summary.get("methods", {})
    budgets = list(dict.fromkeys(b for m in methods.values() for b in m))
    rows = []
    for method, by_budget in methods.items():
        for budget in budgets:
            stats = by_budget.get(budget)
            if stats:
                rows.append([method, budget, *(_stat(stats.get(key)) for key, _ in OVERALL)])
    blocks: list[Block] = [
        {
            "type": "table",
            "id": "compare",
            "caption": f"{settings.get('folds')}-fold cross-validation (group-aware when the "
            f"labels have groups), mean ± std over folds, by labels per class",
            "header": ["method", "labels / class", *(name for _, name in OVERALL)],
            "rows": rows,
        }
    ]
    blocks += _file(folder / "learning_curves.png", "Learning curves (macro-F1)", "learning")
    highlights: list[tuple[str, str]] = []
    for budget in budgets:
        scored = [
            (m, b[budget]["macro_f1"]["mean"])
            for m, b in methods.items()
            if budget in b and b[budget]["macro_f1"]["mean"] is not None
        ]
        if scored:
            ranked = ", ".join(f"{m} {v:.3f}" for m, v in sorted(scored, key=lambda x: -x[1]))
            highlights.append((f"cross-validated macro-F1, {budget} labels / class", ranked))
    last = budgets[-1] if budgets else None
    uris = []
    for method, by_budget in methods.items():
        stats = by_budget.get(last)
        if not stats:
            continue
        blocks.append(
            per_class_table(
                stats, f"{method}, {last} labels per class, per class", f"compare-{method}"
            )
        )
        uris.append(
            figures.confusion_uri(
                stats["confusion_matrix"], stats["classes"], f"{method} ({last} / class)"
            )
        )
    blocks += [
        {"type": "figure", "caption": "Confusion matrices, all folds pooled", "uri": u, "alt": "cm"}
        for u in uris
    ]
    return {
        "id": "compare",
        "title": "Comparison with baselines",
        "blocks": blocks,
        "highlights": highlights,
    }


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _chunks_done(folder: Path, settings: dict[str, Any]) -> tuple[int, int] | None:
    """``(done, planned)`` chunks of a detect store, from its settings (volume shape, chunk
    size) and its done markers; None when the settings do not say."""
    from emae.detect_chunk import DONE, plan_chunks

    shape, chunk = settings.get("shape"), settings.get("chunk")
    if not (
        isinstance(shape, list)
        and len(shape) in (2, 3)
        and all(isinstance(n, int) and n > 0 for n in shape)
        and isinstance(chunk, int)
        and chunk > 0
    ):
        return None
    planned = {f"{c.name}.npz" for c in plan_chunks((1, *shape)[-3:], chunk)}
    markers = folder / DONE
    found = {e.name for e in os.scandir(markers) if e.is_file()} if markers.is_dir() else set()
    return len(planned & found), len(planned)


def _incomplete(folder: Path, settings: dict[str, Any], detections_csv: Path) -> str | None:
    """Why the store holds no finished detection (a killed or failed run), or None.

    ``emae detect`` writes a done marker per chunk and the reports only after the last chunk,
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
    """QC heatmap, worst sections, and the top detections with thumbnails.

    A store whose run was killed or failed is reported as incomplete (how many chunks are
    done), without detection counts.
    """
    import zarr

    from emae.io import open_image

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
    qc = [r for r in _read_csv(stem.with_name(stem.name + "_qc.csv")) if r["tile"] == "all"]
    items.append(("detections", len(detections)))
    blocks: list[Block] = [{"type": "kv", "caption": "Detection", "items": items}]
    highlights = [("detections in the volume", str(len(detections)))]
    blocks += _file(stem.with_name(stem.name + "_qc.png"), "QC: sections x tiles", "qc heatmap")
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
        anomaly = (
            zarr.open_array(folder / "anomaly" / "0", mode="r")
            if (folder / "anomaly" / "0").exists()
            else None
        )
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
                    "caption": "Top detections (anomaly map in red)",
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


def reproducibility_section(runs: Runs, folders: list[Path]) -> Section:
    """The exact commands, their times, the configurations, the version and the seed."""
    from emae import __version__

    blocks: list[Block] = []
    record = runs.pipeline
    if record:
        steps = record.get("steps", {})
        commands = "\n".join(s["command"] for s in steps.values() if s.get("command"))
        if record.get("demo", {}).get("command"):
            commands = record["demo"]["command"] + "\n\n# its steps:\n" + commands
        blocks.append({"type": "code", "caption": "Commands", "text": commands})
        blocks.append(
            {
                "type": "table",
                "id": "timings",
                "caption": f"Steps, {sum(s['seconds'] for s in steps.values()):.0f} s in all",
                "header": ["step", "seconds"],
                "rows": [[name, f"{s['seconds']:.1f}"] for name, s in steps.items()],
            }
        )
        blocks.append(
            {
                "type": "code",
                "caption": "Pipeline configuration",
                "text": json.dumps(record.get("config", {}), indent=2),
            }
        )
    for folder in folders:
        config = _json(folder / "config.json")
        if config:
            blocks.append(
                {
                    "type": "code",
                    "caption": f"Configuration of {folder}",
                    "text": json.dumps(config.get("run", config), indent=2),
                }
            )
    seed = (record or {}).get("seed")
    items = [("emae version", __version__), ("seed", seed if seed is not None else "–")]
    blocks.insert(0, {"type": "kv", "caption": "Versions", "items": items})
    return {"id": "reproduce", "title": "How to reproduce", "blocks": blocks}
