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

from emae.classify.metrics import bootstrap_intervals, rate_intervals
from emae.report import figures
from emae.report.plots import readable
from emae.report.sections import (
    Block,
    Runs,
    Section,
    _curves,
    _figure,
    _file,
    _fmt,
    _json,
    _stat,
)
from emae.volume.qc import qc_figure, tiles_from_csv

PER_CLASS = ("tpr", "tnr", "ppv", "npv", "f1", "roc_auc", "pr_auc", "support")
OVERALL = ("macro_f1", "balanced_accuracy", "accuracy", "macro_roc_auc", "macro_pr_auc")
LOW_RATE = 0.5  # a class whose TPR or PPV is below this is flagged
FEW_SAMPLES = 10  # ... and one with fewer test samples (its rates are uncertain)
INTERVALS = (
    "in grey, 95% intervals: Wilson score for TPR, TNR, PPV and NPV, bootstrap over the test "
    "samples for F1 and the AUCs"
)


def per_class_table(
    metrics: dict[str, Any],
    caption: str,
    table_id: str,
    intervals: dict[str, dict[str, Any]] | None = None,
) -> Block:
    """Rows = classes, columns = TPR, TNR, PPV, NPV, F1, ROC / PR AUC, support.

    A cell with an interval in ``intervals[class][key]`` (``[low, high]``) is
    ``{"text", "note"}``: the value and, in smaller grey type, the interval.
    """

    def cell(name: str, key: str, stat: Any) -> Any:
        bounds = (intervals or {}).get(name, {}).get(key)
        if bounds is None or stat is None:
            return _stat(stat)
        return {"text": _stat(stat), "note": f"{bounds[0]:.2f}–{bounds[1]:.2f}"}

    return {
        "type": "table",
        "id": table_id,
        "caption": caption,
        "header": ["class", *(readable(key) for key in PER_CLASS)],
        "rows": [
            [name, *(cell(name, key, stats.get(key)) for key in PER_CLASS)]
            for name, stats in metrics["per_class"].items()
        ],
    }


def _predictions(evaluation: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """True class indices ``(N,)`` and probabilities ``(N, K)`` from ``predictions.csv``, or
    None when the file is absent or does not match ``classes``."""
    rows = _read_csv(evaluation / "predictions.csv")
    columns = [f"p_{c}" for c in classes]
    if not rows or any(c not in rows[0] for c in columns):
        return None
    try:
        y = np.array([classes.index(r["label"]) for r in rows])
        proba = np.array([[float(r[c]) for c in columns] for r in rows])
    except ValueError:
        return None
    return y, proba


def class_intervals(metrics: dict[str, Any], evaluation: Path) -> dict[str, dict[str, Any]]:
    """Per class: counts and Wilson intervals of the rates
    (:func:`emae.classify.metrics.rate_intervals`)
    and, where ``predictions.csv`` is readable, bootstrap intervals of F1 and the AUCs."""
    classes = list(metrics["classes"])
    out = rate_intervals(metrics["confusion_matrix"], classes)
    found = _predictions(evaluation, classes)
    if found is not None:
        for name, bounds in bootstrap_intervals(*found, classes).items():
            out[name].update(bounds)
    return out


def class_warnings(
    metrics: dict[str, Any], intervals: dict[str, dict[str, Any]]
) -> list[tuple[str, str]]:
    """One plain ``(classes, explanation)`` line per class to distrust: TPR or PPV below
    :data:`LOW_RATE`, or fewer than :data:`FEW_SAMPLES` test samples; and one line naming the
    classes without a test sample.

    The class named ``clean`` is the artifact-free one: its misses are false alarms.
    ``intervals`` are those of :func:`class_intervals`.
    """
    lines, absent = [], []
    for name, stats in metrics["per_class"].items():
        support = int(stats["support"])
        if support == 0:
            absent.append(name)
            continue
        counts = intervals[name]
        called = counts["tp"] + counts["fp"]
        reasons = []
        if stats["tpr"] < LOW_RATE and name == "clean":
            reasons.append(f"{counts['fn']} of {support} good patches are flagged as artifacts")
        elif stats["tpr"] < LOW_RATE:
            missed = f"{counts['fn']} of {support} {name} samples"
            reasons.append(f"{missed} are missed (given another class)")
        if stats["ppv"] < LOW_RATE:
            if called == 0:
                reasons.append(f"no patch is ever called {name}")
            elif name == "clean":
                reasons.append(f"{counts['fp']} of {called} patches called clean hold an artifact")
            else:
                reasons.append(
                    f"{counts['fp']} of {called} patches called {name} are something else"
                )
        if support < FEW_SAMPLES:
            low, high = counts["tpr"]
            reasons.append(
                f"only {support} test sample{'s' if support > 1 else ''}, so its TPR "
                f"{stats['tpr']:.2f} could be anywhere from {low:.2f} to {high:.2f} (95%)"
            )
        if reasons:
            lines.append((name, "; ".join(reasons) + "."))
    if absent:
        lines.append((", ".join(absent), "no test sample, so not evaluated at all."))
    return lines


def classifier_section(runs: Runs, classifier: Path | None, evaluation: Path | None) -> Section:
    """The classifier's settings and training curve; its held-out evaluation."""
    blocks: list[Block] = []
    highlights: list[tuple[str, str]] = []
    alerts: list[str] = []
    if classifier is not None:
        run = _json(classifier / "config.json").get("run", {})
        summary = _json(classifier / "training.json")
        counts = summary.get("class_counts", {})
        items = [
            ("folder", str(classifier)),
            ("encoder", summary.get("encoder") or "none (from scratch)"),
            ("encoder training", readable(run.get("freeze"))),
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
                "header": [readable(key) for key in OVERALL],
                "rows": [[_fmt(metrics.get(key)) for key in OVERALL]],
            }
        )
        intervals = class_intervals(metrics, evaluation)
        warnings = class_warnings(metrics, intervals)
        if warnings:
            blocks.append(
                {
                    "type": "warning",
                    "id": "evaluation",
                    "title": "Check before relying on this classifier",
                    "text": f"Classes with TPR or PPV below {LOW_RATE}, or fewer than "
                    f"{FEW_SAMPLES} test samples:",
                    "items": warnings,
                }
            )
            flagged = sum(1 for _, text in warnings if not text.startswith("no test sample"))
            alerts.append(
                f"Classifier: {flagged} of {len(metrics['per_class'])} classes are poorly "
                "recognised or have too few test samples to judge (see Classifier on few labels)."
            )
        blocks.append(
            per_class_table(
                metrics, f"Per class, held-out test set; {INTERVALS}", "evaluation", intervals
            )
        )
        highlights.append(
            (
                "classifier on held-out labels",
                f"macro-F1 {_fmt(metrics.get('macro_f1'))}, balanced accuracy "
                f"{_fmt(metrics.get('balanced_accuracy'))} ({n} samples)",
            )
        )
        blocks += _file(evaluation / "confusion.png", "Confusion matrix (rows: true)", "confusion")
        blocks += _file(
            evaluation / "roc_pr.png",
            "One-vs-rest ROC and precision-recall curves, one colour per class in both panels; "
            "dashed horizontal lines: each class's prevalence (its share of the test samples), "
            "the precision of a classifier without skill",
            "roc pr",
        )
        blocks += _file(evaluation / "panels.png", "Test samples, mistakes first", "panels")
    return {
        "id": "classifier",
        "title": "Classifier on few labels",
        "blocks": blocks,
        "highlights": highlights,
        "alerts": alerts,
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
                rows.append([readable(method), budget, *(_stat(stats.get(key)) for key in OVERALL)])
    blocks: list[Block] = [
        {
            "type": "table",
            "id": "compare",
            "caption": f"{settings.get('folds')}-fold cross-validation (group-aware when the "
            f"labels have groups), mean ± std over folds, by labels per class",
            "header": ["method", "labels / class", *(readable(key) for key in OVERALL)],
            "rows": rows,
        }
    ]
    blocks += _file(
        folder / "learning_curves.png",
        "Learning curves: macro-F1 against labels per class, mean ± std over folds",
        "learning",
    )
    highlights: list[tuple[str, str]] = []
    for budget in budgets:
        scored = [
            (m, b[budget]["macro_f1"]["mean"])
            for m, b in methods.items()
            if budget in b and b[budget]["macro_f1"]["mean"] is not None
        ]
        if scored:
            ranked = "; ".join(
                f"{readable(m)} {v:.3f}" for m, v in sorted(scored, key=lambda x: -x[1])
            )
            highlights.append((f"cross-validated macro-F1, {budget} labels / class", ranked))
    last = budgets[-1] if budgets else None
    uris = []
    for method, by_budget in methods.items():
        stats = by_budget.get(last)
        if not stats:
            continue
        blocks.append(
            per_class_table(
                stats,
                f"{readable(method)}, {last} labels per class, per class",
                f"compare-{method}",
            )
        )
        uris.append(
            figures.confusion_uri(
                stats["confusion_matrix"], stats["classes"], f"{readable(method)} ({last} / class)"
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
    from emae.volume.chunks import DONE, plan_chunks

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
