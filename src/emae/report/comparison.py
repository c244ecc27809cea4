"""Report section of ``emae compare``: every method side by side per label budget.

Cross-validated scores, learning curves, per-class tables and confusion matrices; blocks as in
:mod:`emae.report.sections`, every number read from the comparison folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emae.report import figures
from emae.report.evaluation import OVERALL, per_class_table
from emae.report.plots import readable
from emae.report.sections import Block, Section, _file, _json, _stat


def _fold_scores(folder: Path) -> dict[tuple[str, str], dict[int, float]]:
    """``(method, budget) -> {fold: macro-F1}`` from the comparison's per-fit results."""
    scores: dict[tuple[str, str], dict[int, float]] = {}
    for path in sorted((folder / "results").glob("*.json")):
        row = _json(path)
        f1 = row.get("metrics", {}).get("macro_f1")
        if f1 is not None:
            scores.setdefault((row["method"], str(row["budget"])), {})[int(row["fold"])] = f1
    return scores


def pretraining_verdicts(
    folder: Path, methods: dict[str, dict[str, Any]], budgets: list[str]
) -> list[tuple[str, str]]:
    """Per budget, in plain words: does the best method that uses the autoencoder beat the same
    CNN trained from scratch, fold by fold? (Nothing when either is missing.)"""
    from emae.commands.compare import NEEDS_ENCODER

    if "cnn-scratch" not in methods:
        return []
    scores = _fold_scores(folder)
    out = []
    for budget in budgets:
        scratch = scores.get(("cnn-scratch", budget), {})
        pretrained = [
            (methods[m][budget]["macro_f1"]["mean"], m)
            for m in methods
            if m in NEEDS_ENCODER
            and budget in methods[m]
            and methods[m][budget]["macro_f1"]["mean"] is not None
        ]
        if not scratch or not pretrained:
            continue
        _, best = max(pretrained)
        ours = scores.get((best, budget), {})
        folds = sorted(set(ours) & set(scratch))
        if not folds:
            continue
        diffs = [ours[f] - scratch[f] for f in folds]
        mean = sum(diffs) / len(diffs)
        # the sample std, as the comparison's own summary gives it
        spread = (sum((d - mean) ** 2 for d in diffs) / max(len(diffs) - 1, 1)) ** 0.5
        ahead = sum(d > 0 for d in diffs)
        verdict = "pays" if mean > 0 and ahead > len(folds) / 2 else "does not pay"
        out.append(
            (
                f"does pretraining pay? {budget} labels / class",
                f"{verdict}: {readable(best)} minus the CNN from scratch, fold by fold, "
                f"{mean:+.3f} ± {spread:.3f} macro-F1 (ahead in {ahead} of {len(folds)} folds)",
            )
        )
    return out


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
    highlights += pretraining_verdicts(folder, methods, budgets)
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
