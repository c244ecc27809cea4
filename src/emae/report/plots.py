"""Figures of classification results: confusion matrix, ROC/PR curves, learning curves, samples.

Every function builds a :class:`matplotlib.figure.Figure` on the Agg canvas without touching
``pyplot``, so no window opens, no global backend is changed and no figure is left registered
(``plt.get_fignums()`` stays empty). Each returns the figure and, when ``path`` is given, also
writes it as a PNG atomically (a temporary sibling renamed into place; an existing file is
replaced). The numbers shown come from :mod:`emae.classify.metrics`, so a figure and the metrics
JSON
never disagree.

Two conventions keep every figure of a report readable at a glance: class ``k`` is always drawn
in :func:`class_style` ``(k)`` (20 distinct colours, then line styles), and method and metric keys
are shown by their readable names from :data:`READABLE` (via :func:`readable`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator
from sklearn.metrics import precision_recall_curve, roc_curve

from emae.classify.metrics import check_predictions, classification_metrics
from emae.errors import EmaeError
from emae.io.atomic import atomic_file

_DPI = 100
_OVERLAY_RGB = (1.0, 0.23, 0.19)  # red, drawn with alpha proportional to the overlay value
_OVERLAY_ALPHA = 0.45

# The readable name of every method, metric and encoder-training key shown in figures and in
# the report's tables; a key not listed is shown as it is.
READABLE: dict[str, str] = {
    # methods of emae compare
    "head": "pretrained encoder, frozen",
    "head-finetune": "pretrained encoder, fine-tuned",
    "head-semi": "pretrained encoder, fine-tuned, semi-supervised",
    "cnn-scratch": "same CNN, trained from scratch",
    "cnn-residual": "CNN on the autoencoder's residual",
    "cnn-both": "CNN on the patch and the autoencoder's residual",
    "svm-features": "SVM on handcrafted features",
    "latent-logreg": "logistic regression on latents",
    "latent-knn": "k-nearest neighbours on latents",
    # overall metrics
    "macro_f1": "macro-F1",
    "balanced_accuracy": "balanced accuracy",
    "accuracy": "accuracy",
    "macro_roc_auc": "macro ROC AUC",
    "macro_pr_auc": "macro PR AUC",
    # per-class metrics
    "tpr": "TPR",
    "tnr": "TNR",
    "ppv": "PPV",
    "npv": "NPV",
    "f1": "F1",
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC",
    "support": "support",
    # encoder training of a classifier
    "frozen": "frozen",
    "finetune": "fine-tuned",
    "unfreeze": "frozen, then fine-tuned",
}
# Class k is drawn in _CLASS_COLOURS[k % 20]: tab10's ten colours, then tab20's ten light ones.
_TAB20 = matplotlib.colormaps["tab20"].colors
_CLASS_COLOURS = tuple(_TAB20[0::2]) + tuple(_TAB20[1::2])
_CLASS_LINESTYLES = ("-", "-.", ":")  # beyond 20 classes, colours repeat with another style


def readable(key: Any) -> str:
    """The readable name of a method or metric key (``"head-finetune"`` ->
    ``"pretrained encoder, fine-tuned"``), or the key itself when :data:`READABLE` lacks it."""
    return READABLE.get(str(key), str(key))


def class_style(index: int) -> dict[str, Any]:
    """Colour and line style of class ``index``, the same in every figure.

    The first 20 classes get 20 distinct colours (tab10's, then tab20's light ones); beyond 20
    the colours repeat with a dash-dot, then a dotted line. Returns ``{"color", "linestyle"}``,
    ready for ``ax.plot(..., **class_style(k))``.
    """
    n = len(_CLASS_COLOURS)
    style = _CLASS_LINESTYLES[(index // n) % len(_CLASS_LINESTYLES)]
    return {"color": _CLASS_COLOURS[index % n], "linestyle": style}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path | None) -> None:
    if path is not None:
        with atomic_file(path, overwrite=True) as tmp:
            fig.savefig(tmp, format="png")


def plot_confusion_matrix(
    matrix: Any,
    classes: Sequence[str],
    normalize: bool = True,
    path: str | Path | None = None,
) -> Figure:
    """Draw a confusion matrix as an annotated heat map.

    Parameters
    ----------
    matrix
        ``(K, K)`` non-negative counts, rows = true class, columns = predicted class, as in
        :func:`~emae.classify.metrics.classification_metrics`.
    classes
        The ``K`` class names.
    normalize
        Colour and annotate each row as fractions of its true class (a row without samples is
        all 0), with the count in brackets; otherwise show counts.
    path
        Where to write the PNG, or None.

    Returns
    -------
    Figure
        The figure.
    """
    m = np.asarray(matrix)
    k = len(classes)
    if m.shape != (k, k) or m.dtype.kind not in "uif" or not np.isfinite(m).all() or (m < 0).any():
        raise EmaeError(
            f"the confusion matrix must be a ({k}, {k}) array of non-negative counts for "
            f"classes {list(classes)}, got shape {m.shape} dtype {m.dtype}"
        )
    rows = m.sum(axis=1, keepdims=True)
    shown = np.divide(m, rows, out=np.zeros(m.shape), where=rows > 0) if normalize else m
    top = 1.0 if normalize else max(float(m.max()), 1.0)

    side = 1.6 + 0.7 * k
    fig = _figure(side + 1.0, side)
    ax = fig.subplots()
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=top)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true class" if normalize else "count")
    for i in range(k):
        for j in range(k):
            text = f"{shown[i, j]:.2f}\n({m[i, j]:g})" if normalize else f"{m[i, j]:g}"
            colour = "white" if shown[i, j] > 0.5 * top else "black"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=8)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    _save(fig, path)
    return fig


def plot_roc_pr(
    y_true: Any, proba: Any, classes: Sequence[str], path: str | Path | None = None
) -> Figure:
    """Draw one-vs-rest ROC curves (left) and precision-recall curves (right), one per class.

    A class is drawn in a panel only where its metric is defined (see :mod:`emae.classify.metrics`):
    ROC needs samples of the class and of other classes, precision-recall needs samples of it.
    Each class has its :func:`class_style` colour in both panels. On the precision-recall
    panel a dashed horizontal line in the class's colour marks its prevalence (its share of the
    samples), the precision of a classifier without skill.

    Parameters
    ----------
    y_true
        ``(N,)`` integer true class indices into ``classes``.
    proba
        ``(N, K)`` class probabilities (or scores), columns in ``classes`` order.
    classes
        The ``K`` class names.
    path
        Where to write the PNG, or None.

    Returns
    -------
    Figure
        The figure with two axes; each legend sits below its axes.
    """
    y, p = check_predictions(y_true, proba, classes)
    per_class = classification_metrics(y, p, classes)["per_class"]
    drawn = sum(stats["pr_auc"] is not None for stats in per_class.values()) + 1  # + the key
    rows = -(-drawn // 2)  # legend rows below each panel, two entries per row
    fig = _figure(10.0, 5.4 + 0.2 * rows)  # panels about square above their legends
    roc_ax, pr_ax = fig.subplots(1, 2)
    roc_ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=0.8)
    for c, name in enumerate(classes):
        positive, score, stats = y == c, p[:, c], per_class[name]
        style = class_style(c)
        if stats["roc_auc"] is not None:
            fpr, tpr, _ = roc_curve(positive, score)
            roc_ax.plot(fpr, tpr, **style, label=f"{name} (AUC {stats['roc_auc']:.3f})")
        if stats["pr_auc"] is not None:
            prevalence = stats["support"] / y.size
            precision, recall, _ = precision_recall_curve(positive, score)
            pr_ax.step(
                recall,
                precision,
                where="post",
                **style,
                label=f"{name} (AP {stats['pr_auc']:.3f}, prevalence {prevalence:.2f})",
            )
            pr_ax.axhline(prevalence, color=style["color"], linestyle="--", linewidth=1.0)
    if pr_ax.get_legend_handles_labels()[0]:
        pr_ax.add_line(
            Line2D([], [], color="0.4", linestyle="--", label="dashed: prevalence = no skill")
        )
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, one-vs-rest")
    pr_ax.set(
        xlabel="recall",
        ylabel="precision",
        title="precision-recall, one-vs-rest\n(dashed: each class's prevalence, the no-skill line)",
    )
    for ax in (roc_ax, pr_ax):
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2)
    _save(fig, path)
    return fig


def _is_all(budget: Any) -> bool:
    return budget is None or budget == "all"


def plot_learning_curves(
    results: Sequence[Mapping[str, Any]],
    metric: str = "macro_f1",
    path: str | Path | None = None,
) -> Figure:
    """Draw a metric against the number of labels per class, one line per method.

    Parameters
    ----------
    results
        One dict per (method, budget): ``method`` (str), ``budget`` (labels per class, int
        ``>= 1``, or None / ``"all"`` for every label), ``mean`` (float or None, skipped) and
        optionally ``std`` (float or None), drawn as a band of ``mean +- std``.
    metric
        Key of the metric (e.g. ``"macro_f1"``), shown by its :func:`readable` name on the y
        axis; methods are shown by theirs in the legend.
    path
        Where to write the PNG, or None.

    Returns
    -------
    Figure
        The figure; the x axis is logarithmic and ``all`` sits one factor of 2 beyond the
        largest numeric budget.
    """
    if not results:
        raise EmaeError("plot_learning_curves needs at least one result, got none")
    for i, row in enumerate(results):
        missing = [key for key in ("method", "budget", "mean") if key not in row]
        budget = row.get("budget")
        if missing:
            raise EmaeError(f"learning-curve result {i} lacks {missing}: {dict(row)}")
        is_count = isinstance(budget, (int, np.integer)) and not isinstance(budget, bool)
        if not (_is_all(budget) or (is_count and budget >= 1)):
            raise EmaeError(
                f"learning-curve result {i} has budget {budget!r}; expected an integer >= 1, "
                "None or 'all'"
            )
    numeric = sorted({int(r["budget"]) for r in results if not _is_all(r["budget"])})
    all_x = 2.0 * numeric[-1] if numeric else 1.0
    has_all = any(_is_all(r["budget"]) for r in results)

    fig = _figure(6.4, 4.4)
    ax = fig.subplots()
    methods = list(dict.fromkeys(str(r["method"]) for r in results))
    for m, method in enumerate(methods):
        points = sorted(
            (all_x if _is_all(r["budget"]) else float(r["budget"]), float(r["mean"]), r.get("std"))
            for r in results
            if str(r["method"]) == method and r["mean"] is not None
        )
        if not points:
            continue
        x = np.array([pt[0] for pt in points])
        mean = np.array([pt[1] for pt in points])
        std = np.array([math.nan if pt[2] is None else float(pt[2]) for pt in points])
        style = class_style(m)
        ax.plot(x, mean, marker="o", **style, label=readable(method))
        ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.2, linewidth=0)
    ticks = numeric + ([all_x] if has_all else [])
    ax.set_xscale("log")
    ax.set_xticks(ticks, [str(b) for b in numeric] + (["all"] if has_all else []))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set(xlabel="labels per class", ylabel=readable(metric))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return fig


def plot_panels(
    images: Any,
    titles: Sequence[str],
    overlays: Any = None,
    path: str | Path | None = None,
    columns: int = 4,
) -> Figure:
    """Draw a grid of sample images, each titled (e.g. ``"pred dust / true fold"``).

    Parameters
    ----------
    images
        ``(N, H, W)`` ``"YX"`` images, drawn in grey, each scaled to its own range.
    titles
        ``N`` panel titles, e.g. the prediction and the target; may contain newlines.
    overlays
        Optional ``(N, H, W)`` masks (bool) or maps in ``[0, 1]``, drawn in red over each image
        with opacity proportional to the value.
    path
        Where to write the PNG, or None.
    columns
        Panels per row (fewer when ``N`` is smaller).

    Returns
    -------
    Figure
        The figure.
    """
    a = np.asarray(images)
    if a.ndim != 3 or a.shape[0] == 0 or a.dtype.kind not in "uifb":
        raise EmaeError(f"images must be a non-empty (N, H, W) array, got shape {a.shape}")
    n = a.shape[0]
    if len(titles) != n:
        raise EmaeError(f"got {len(titles)} titles for {n} images; give one title per image")
    if overlays is not None:
        o = np.asarray(overlays, dtype=np.float64)
        if o.shape != a.shape or not np.isfinite(o).all() or o.min() < 0 or o.max() > 1:
            raise EmaeError(
                f"overlays must be a {a.shape} array of values in [0, 1] like the images, "
                f"got shape {o.shape}"
            )
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise EmaeError(f"columns must be an integer >= 1, got {columns!r}")

    cols = min(columns, n)
    rows = -(-n // cols)
    fig = _figure(2.4 * cols, 2.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= n:
            continue  # spare axes stay empty
        ax.imshow(a[i].astype(np.float64), cmap="gray", interpolation="nearest")
        if overlays is not None:
            rgba = np.zeros((*a.shape[1:], 4))
            rgba[..., :3] = _OVERLAY_RGB
            rgba[..., 3] = _OVERLAY_ALPHA * o[i]
            ax.imshow(rgba, interpolation="nearest")
        ax.set_title(str(titles[i]), fontsize=8)
    _save(fig, path)
    return fig
