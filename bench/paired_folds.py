"""Paired, fold by fold: one method of one comparison folder minus one of another.

Two ``emae compare`` folders run with the same labels, folds, seed and budgets (e.g. two
encoders, or two classifier step counts) hold the same test folds and the same nested label
subsets, so their macro-F1 can be compared fit by fit. Printed per budget: both means, the
mean and sample std of the differences, and in how many folds A is ahead.

Usage::

    python bench/paired_folds.py A_FOLDER A_METHOD B_FOLDER B_METHOD
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def fold_scores(folder: Path, method: str) -> dict[tuple[str, int], float]:
    """Macro-F1 of ``method`` by ``(budget, fold)`` from a comparison folder's result files."""
    out = {}
    for path in sorted((folder / "results").glob(f"{method}__*.json")):
        row = json.loads(path.read_text())
        out[(row["budget"], row["fold"])] = row["metrics"]["macro_f1"]
    if not out:
        raise SystemExit(f"{folder}: no results of method {method!r}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a_folder", type=Path)
    parser.add_argument("a_method")
    parser.add_argument("b_folder", type=Path)
    parser.add_argument("b_method")
    args = parser.parse_args()
    a = fold_scores(args.a_folder, args.a_method)
    b = fold_scores(args.b_folder, args.b_method)
    budgets = sorted({k[0] for k in a}, key=lambda s: (s == "all", int(s) if s != "all" else 0))
    print(f"A = {args.a_method} in {args.a_folder}, B = {args.b_method} in {args.b_folder}")
    for budget in budgets:
        folds = sorted(f for (s, f) in a if s == budget and (s, f) in b)
        if not folds:
            continue
        va = np.array([a[(budget, f)] for f in folds])
        vb = np.array([b[(budget, f)] for f in folds])
        d = va - vb
        spread = d.std(ddof=1) if len(d) > 1 else float("nan")
        print(
            f"{budget:>4} / class: A {va.mean():.3f}, B {vb.mean():.3f}, A - B {d.mean():+.3f} ± "
            f"{spread:.3f}, A ahead in {int((d > 0).sum())} of {len(d)} folds; per fold A "
            f"{np.round(va, 3).tolist()}, B {np.round(vb, 3).tolist()}"
        )


if __name__ == "__main__":
    main()
