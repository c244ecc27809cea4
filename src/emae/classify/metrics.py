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

import math
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


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (TPR, TNR, PPV, NPV, ...).

    Unlike ``p +- z sqrt(p (1 - p) / n)`` it stays inside [0, 1] and is not empty at 0 of n or
    n of n, so it stays honest for the supports of 3 to 5 samples common with few labels:
    ``wilson_interval(3, 5)`` is ``(0.231, 0.882)``.

    Parameters
    ----------
    successes
        Count of successes, ``0 <= successes <= n``.
    n
        Count of trials; ``0`` gives ``(0.0, 1.0)``, nothing is known.
    confidence
        Two-sided confidence level in ``(0, 1)``.

    Returns
    -------
    tuple of float
        ``(low, high)``.
    """
    from scipy.stats import norm

    if not (0 <= successes <= n) or not 0 < confidence < 1:
        raise EmaeError(
            "wilson_interval needs 0 <= successes <= n and 0 < confidence < 1, got "
            f"successes={successes}, n={n}, confidence={confidence}"
        )
    if n == 0:
        return 0.0, 1.0
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_intervals(
    confusion: Sequence[Sequence[int]], classes: Sequence[str], confidence: float = 0.95
) -> dict[str, dict[str, Any]]:
    """Per class: the one-vs-rest counts and Wilson intervals of ``tpr``, ``tnr``, ``ppv``, ``npv``.

    Parameters
    ----------
    confusion
        ``K x K`` counts, rows = true class, columns = predicted class (as in
        :func:`classification_metrics`).
    classes
        The ``K`` class names.
    confidence
        Confidence level of the intervals.

    Returns
    -------
    dict
        ``{name: {"tp", "fn", "fp", "tn": int, "tpr", "tnr", "ppv", "npv": [low, high] or
        None}}``; None where the rate has no denominator (e.g. ``ppv`` of a class never
        predicted).
    """
    cm = np.asarray(confusion, dtype=np.int64)
    if cm.shape != (len(classes), len(classes)):
        raise EmaeError(f"a {len(classes)} x {len(classes)} confusion matrix, got {cm.shape}")
    n = int(cm.sum())
    out: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(classes):
        tp = int(cm[c, c])
        fn, fp = int(cm[c].sum()) - tp, int(cm[:, c].sum()) - tp
        tn = n - tp - fn - fp
        out[name] = {"tp": tp, "fn": fn, "fp": fp, "tn": tn}
        for key, (hits, total) in {
            "tpr": (tp, tp + fn),
            "tnr": (tn, tn + fp),
            "ppv": (tp, tp + fp),
            "npv": (tn, tn + fn),
        }.items():
            out[name][key] = list(wilson_interval(hits, total, confidence)) if total else None
    return out


def _rank_auc(positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``(B, N)`` labels and scores (Mann-Whitney, ties count half);
    NaN where a row lacks positives or negatives."""
    from scipy.stats import rankdata

    ranks = rankdata(score, axis=1)
    n_pos = positive.sum(axis=1)
    n_neg = positive.shape[1] - n_pos
    u = (ranks * positive).sum(axis=1) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def _average_precision(positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Average precision of each row of ``(B, N)`` labels and scores, as scikit-learn computes
    it (tied scores form one threshold); NaN where a row has no positive."""
    order = np.argsort(-score, axis=1, kind="stable")
    s = np.take_along_axis(score, order, axis=1)
    hit = np.take_along_axis(positive, order, axis=1)
    tp = np.cumsum(hit, axis=1)
    n = score.shape[1]
    position = np.arange(n)
    last_of_tie = np.ones_like(s, dtype=bool)
    last_of_tie[:, :-1] = s[:, :-1] != s[:, 1:]
    end = np.where(last_of_tie, position, n)
    end = np.minimum.accumulate(end[:, ::-1], axis=1)[:, ::-1]  # each sample's tie end
    precision = np.take_along_axis(tp, end, axis=1) / (end + 1)
    n_pos = hit.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pos > 0, (precision * hit).sum(axis=1) / n_pos, np.nan)


def bootstrap_intervals(
    y_true: Any,
    proba: Any,
    classes: Sequence[str],
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, list[float] | None]]:
    """Percentile bootstrap intervals of each class's ``f1``, ``roc_auc`` and ``pr_auc``.

    The test samples are drawn with replacement ``n_boot`` times; each metric is computed as in
    :func:`classification_metrics` on every draw where it is defined, and the interval is the
    central ``confidence`` share of those values.

    Parameters
    ----------
    y_true
        ``(N,)`` integer true class indices into ``classes``.
    proba
        ``(N, K)`` class probabilities (or scores), columns in ``classes`` order.
    classes
        The ``K`` class names.
    n_boot
        Number of bootstrap draws, ``>= 10``.
    confidence
        Confidence level in ``(0, 1)``.
    seed
        Seed of the draws.

    Returns
    -------
    dict
        ``{name: {"f1", "roc_auc", "pr_auc": [low, high] or None}}``; None where the test set
        has no sample of the class, or where the AUC is undefined on it.
    """
    y, p = check_predictions(y_true, proba, classes)
    if n_boot < 10 or not 0 < confidence < 1:
        raise EmaeError(
            f"bootstrap_intervals needs n_boot >= 10 and 0 < confidence < 1, got n_boot={n_boot}, "
            f"confidence={confidence}"
        )
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, y.size, size=(n_boot, y.size))  # (B, N) sample indices
    yb, pred = y[draw], np.argmax(p, axis=1)[draw]
    tails = [50 * (1 - confidence), 100 - 50 * (1 - confidence)]

    def interval(values: np.ndarray, defined: bool) -> list[float] | None:
        kept = values[np.isfinite(values)]
        return [float(v) for v in np.percentile(kept, tails)] if defined and kept.size else None

    out: dict[str, dict[str, list[float] | None]] = {}
    for c, name in enumerate(classes):
        positive = yb == c
        tp = (positive & (pred == c)).sum(axis=1)
        wrong = (positive != (pred == c)).sum(axis=1)  # FP + FN
        support = int((y == c).sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(2 * tp + wrong > 0, 2 * tp / (2 * tp + wrong), 0.0)
        out[name] = {
            "f1": interval(f1, support > 0),
            "roc_auc": interval(_rank_auc(positive, p[draw, c]), 0 < support < y.size),
            "pr_auc": interval(_average_precision(positive, p[draw, c]), support > 0),
        }
    return out
