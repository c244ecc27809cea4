"""Report section of the classifier: its training, its held-out evaluation, what to distrust.

The per-class table (with Wilson and bootstrap intervals) and the warnings for poorly
recognised or thinly supported classes; blocks as in :mod:`emae.report.sections`, every number
read from the output folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emae.classify.metrics import bootstrap_intervals, rate_intervals
from emae.report.plots import readable
from emae.report.sections import (
    Block,
    Runs,
    Section,
    _curves,
    _file,
    _fmt,
    _json,
    _read_csv,
    _stat,
)

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
