"""Classification metrics for one test fold, and their mean and spread over folds.

:func:`classification_metrics` turns true labels and predicted class probabilities into a plain
JSON dict; :func:`summarize_folds` reduces one such dict per cross-validation fold to a mean and a
standard deviation per number. Every value is a Python ``int``, ``float``, ``None``, list or dict,
so ``json.dumps(..., allow_nan=False)`` always works.

Conventions
-----------
- The predicted class is ``argmax(proba, axis=1)``; ties go to the first (lowest-index) class.
  Rows need not sum to 1.
- Per class ``k`` (one-vs-rest), from the confusion matrix: ``tpr = TP / (TP + FN)`` (recall),
  ``tnr = TN / (TN + FP)``, ``ppv = TP / (TP + FP)`` (precision), ``npv = TN / (TN + FN)``,
  ``f1 = 2 TP / (2 TP + FP + FN)``. A ratio with a zero denominator is ``0.0``, as scikit-learn
  does with ``zero_division=0``: e.g. ``ppv`` of a class never predicted is ``0.0``.
- ``roc_auc`` and ``pr_auc`` (average precision) of class ``k`` rank the samples by
  ``proba[:, k]``. ``roc_auc`` is ``None`` when ``y_true`` has no sample of class ``k`` or only
  samples of class ``k`` (no positives or no negatives); ``pr_auc`` is ``None`` when it has no
  sample of class ``k``.
- Macro averages (``balanced_accuracy``, ``macro_f1``, ``macro_roc_auc``, ``macro_pr_auc``) are
  unweighted means over the classes present in ``y_true`` (support > 0), skipping ``None``;
  ``balanced_accuracy`` is thus the mean ``tpr``, as in scikit-learn. A macro average with no
  class to average is ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from emae.errors import EmaeError

PER_CLASS_KEYS = ("tpr", "tnr", "ppv", "npv", "f1", "roc_auc", "pr_auc", "support")


def check_predictions(
    y_true: Any, proba: Any, classes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels and class probabilities.

    Parameters
    ----------
    y_true
        ``(N,)`` integer class indices in ``0 .. K-1``.
    proba
        ``(N, K)`` finite class scores (usually probabilities), columns in ``classes`` order.
    classes
        The ``K`` class names.

    Returns
    -------
    tuple of np.ndarray
        ``y_true`` as ``(N,)`` int64 and ``proba`` as ``(N, K)`` float64.
    """
    k = len(classes)
    y = np.asarray(y_true)
    p = np.asarray(proba)
    if k < 2:
        raise EmaeError(f"classification metrics need at least 2 classes, got {list(classes)}")
    if y.ndim != 1 or y.size == 0 or y.dtype.kind not in "iu":
        raise EmaeError(
            f"y_true must be a non-empty 1D array of integer class indices, "
            f"got shape {y.shape} dtype {y.dtype}"
        )
    if p.ndim != 2 or p.shape != (y.size, k) or p.dtype.kind not in "uif":
        raise EmaeError(
            f"proba must be a numeric array of shape (N, K) = ({y.size}, {k}) for {y.size} "
            f"labels and {k} classes, got shape {p.shape} dtype {p.dtype}"
        )
    outside = np.flatnonzero((y < 0) | (y >= k))
    if outside.size:
        raise EmaeError(
            f"y_true holds {outside.size} label(s) outside 0..{k - 1} for classes "
            f"{list(classes)} (first at index {outside[0]}: {y[outside[0]]})"
        )
    p = p.astype(np.float64)
    bad = np.argwhere(~np.isfinite(p))
    if bad.size:
        row, col = bad[0]
        raise EmaeError(
            f"proba holds {len(bad)} NaN or infinite value(s) (first at row {row}, "
            f"class {classes[col]!r}: {p[row, col]})"
        )
    return y.astype(np.int64), p


def _ratio(num: int, den: int) -> float:
    """``num / den``, or ``0.0`` when ``den == 0`` (scikit-learn's ``zero_division=0``)."""
    return float(num / den) if den else 0.0


def _mean(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are not None, or None if there are none."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro averages, confusion matrix and per-class rates of one prediction.

    See the module docstring for the definitions and the ``0/0`` and ``None`` conventions.

    Parameters
    ----------
    y_true
        ``(N,)`` integer true class indices into ``classes``.
    proba
        ``(N, K)`` float class probabilities (or any scores), columns in ``classes`` order; the
        prediction is the column-wise argmax. NaN or infinite values raise :class:`EmaeError`.
    classes
        The ``K`` class names.

    Returns
    -------
    dict
        Plain JSON: ``classes`` (list of ``K`` names), ``accuracy``, ``balanced_accuracy``,
        ``macro_f1``, ``macro_roc_auc``, ``macro_pr_auc`` (float or None),
        ``confusion_matrix`` (``K x K`` list of int lists, rows = true class, columns =
        predicted class, both in ``classes`` order) and ``per_class``: ``{name: {tpr, tnr,
        ppv, npv, f1, roc_auc, pr_auc, support}}`` with ``support`` the number of true samples.
    """
    y, p = check_predictions(y_true, proba, classes)
    k, n = len(classes), y.size
    pred = np.argmax(p, axis=1)
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)

    per_class: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(classes):
        tp = int(cm[c, c])
        fn = int(cm[c].sum()) - tp
        fp = int(cm[:, c].sum()) - tp
        tn = n - tp - fn - fp
        positive = y == c
        support = tp + fn
        roc = float(roc_auc_score(positive, p[:, c])) if 0 < support < n else None
        ap = float(average_precision_score(positive, p[:, c])) if support > 0 else None
        per_class[name] = {
            "tpr": _ratio(tp, tp + fn),
            "tnr": _ratio(tn, tn + fp),
            "ppv": _ratio(tp, tp + fp),
            "npv": _ratio(tn, tn + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "roc_auc": roc,
            "pr_auc": ap,
            "support": support,
        }

    present = [m for m in per_class.values() if m["support"] > 0]
    return {
        "classes": list(classes),
        "accuracy": float(np.trace(cm) / n),
        "balanced_accuracy": _mean([m["tpr"] for m in present]),
        "macro_f1": _mean([m["f1"] for m in present]),
        "macro_roc_auc": _mean([m["roc_auc"] for m in present]),
        "macro_pr_auc": _mean([m["pr_auc"] for m in present]),
        "confusion_matrix": cm.tolist(),
        "per_class": per_class,
    }


def _is_scalar(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _stats(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation (ddof=1) and count of the values that are not None."""
    kept = np.asarray([v for v in values if v is not None], dtype=np.float64)
    mean = float(kept.mean()) if kept.size else None
    std = float(kept.std(ddof=1)) if kept.size > 1 else None
    return {"mean": mean, "std": std, "n": int(kept.size)}


def summarize_folds(folds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and spread over folds of every number in :func:`classification_metrics` dicts.

    Parameters
    ----------
    folds
        One :func:`classification_metrics` dict per fold, all for the same ``classes``.

    Returns
    -------
    dict
        Plain JSON: ``n_folds``; ``classes``; for every top-level scalar (``accuracy``,
        ``macro_f1``, ...) a dict ``{mean, std, n}``; ``per_class``: ``{name: {key: {mean, std,
        n}}}`` for every per-class key; and ``confusion_matrix``, the element-wise sum over
        folds (in k-fold cross-validation, every sample counted once). ``None`` values are
        ignored: ``n`` is the number of folds that had a value, ``mean`` is None when ``n == 0``
        and ``std`` is the sample standard deviation (``ddof=1``, the spread one would expect
        between folds) when ``n >= 2``, else None.
    """
    if not folds:
        raise EmaeError("summarize_folds needs at least one fold's metrics, got none")
    classes = list(folds[0]["classes"])
    for i, fold in enumerate(folds):
        if list(fold["classes"]) != classes:
            raise EmaeError(
                f"fold {i} has classes {list(fold['classes'])}, fold 0 has {classes}; "
                "every fold must use the same classes in the same order"
            )
    keys = [key for key, value in folds[0].items() if _is_scalar(value)]
    summary: dict[str, Any] = {"n_folds": len(folds), "classes": classes}
    for key in keys:
        summary[key] = _stats([fold[key] for fold in folds])
    summary["confusion_matrix"] = np.sum(
        [np.asarray(fold["confusion_matrix"], dtype=np.int64) for fold in folds], axis=0
    ).tolist()
    summary["per_class"] = {
        name: {
            key: _stats([fold["per_class"][name][key] for fold in folds]) for key in PER_CLASS_KEYS
        }
        for name in classes
    }
    return summary
