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
