"""Figures of the HTML report, returned as ``data:`` URIs so the page needs no other file.

Like :mod:`emae.report.plots`, every figure is drawn on the Agg canvas without ``pyplot``. Images
are ``"YX"`` arrays; overlays are drawn in red with opacity proportional to the value, ground-truth
artifact outlines in cyan. Every colour-coded image has a labelled colour bar saying what the
colour measures (anomaly: larger = worse).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure
from scipy import ndimage

_DPI = 100
_RED = (1.0, 0.23, 0.19)
_OUTLINE = (0.0, 0.9, 1.0)
_OVERLAY_ALPHA = 0.6
ANOMALY_LABEL = "anomaly (larger = worse)"
# Colour-bar labels of the colour-coded columns of panel_rows_figure.
PANEL_UNITS = {
    "error": "reconstruction error |input - reconstruction|\n(normalized intensity)",
    "anomaly": ANOMALY_LABEL,
}


def figure(width: float, height: float) -> Figure:
    """A constrained-layout figure on its own Agg canvas (no global state)."""
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_uri(fig: Figure) -> str:
    """The figure as a ``data:image/png;base64,...`` URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def file_uri(path: str | Path) -> str | None:
    """A PNG file as a ``data:`` URI, or None when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def grey(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """``(H, W)`` image scaled to [0, 1] between two of its percentiles."""
    a = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(a, [low, high]) if a.size else (0.0, 1.0)
    return np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)


def outline(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: the one-pixel border of the nonzero regions of ``mask``."""
    m = np.asarray(mask) > 0
    return m & ~ndimage.binary_erosion(m, iterations=1, border_value=0)


def rgba(values: np.ndarray, colour: tuple[float, float, float], alpha: float) -> np.ndarray:
    """``(H, W, 4)`` layer of one colour with opacity ``alpha * values`` (values in [0, 1])."""
    layer = np.zeros((*values.shape, 4))
    layer[..., :3] = colour
    layer[..., 3] = alpha * np.clip(values, 0, 1)
    return layer


def curves_figure(curves: Mapping[str, Sequence[Mapping[str, float]]], title: str) -> Figure:
    """Loss against optimizer step: one line per named series of ``{"step", <value>}`` points.

    ``curves`` maps a label (e.g. ``"training loss"``) to its points; each point holds ``step``
    and one value under ``"value"``.
    """
    fig = figure(6.0, 3.4)
    ax = fig.subplots()
    for i, (label, points) in enumerate(curves.items()):
        pts = [p for p in points if p.get("value") is not None and np.isfinite(p["value"])]
        if not pts:
            continue
        steps = [p["step"] for p in pts]
        values = [p["value"] for p in pts]
        ax.plot(
            steps, values, marker="o" if len(pts) < 20 else None, ms=3, label=label, color=f"C{i}"
        )
    ax.set(xlabel="step", ylabel="loss", title=title)
    if all(p["value"] > 0 for pts in curves.values() for p in pts if p.get("value") is not None):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def panel_rows_figure(
    rows: Sequence[Sequence[np.ndarray]],
    columns: Sequence[str],
    row_titles: Sequence[str],
    outlines: Sequence[np.ndarray | None] | None = None,
) -> Figure:
    """A grid: one row per sample, one column per view (input, reconstruction, error, ...).

    Parameters
    ----------
    rows
        Per sample, one ``(H, W)`` image per column, each drawn in grey scaled to its own range,
        except columns named ``"error"`` or ``"anomaly"`` (drawn with the ``magma`` colour map
        and a shared range over that column, with a colour bar below it labelled as in
        :data:`PANEL_UNITS`) and ``"target"`` / ``"prediction"`` masks.
    columns
        Column titles.
    row_titles
        One label per row (e.g. the image and position).
    outlines
        Per row, an optional ground-truth mask whose outline is drawn on every panel.
    """
    n, k = len(rows), len(columns)
    fig = figure(2.1 * k, 2.2 * n + 0.9)
    axes = fig.subplots(n, k, squeeze=False)
    ranges, shown = {}, {}
    for j, name in enumerate(columns):
        if name in ("error", "anomaly"):
            values = np.concatenate([np.ravel(r[j]) for r in rows])
            ranges[j] = (float(np.percentile(values, 1)), float(np.percentile(values, 99.5)))
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j in ranges:
                lo, hi = ranges[j]
                shown[j] = ax.imshow(image, cmap="magma", vmin=lo, vmax=hi if hi > lo else lo + 1)
            elif columns[j] in ("target", "prediction"):
                ax.imshow(np.asarray(image) > 0, cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(grey(image), cmap="gray", vmin=0, vmax=1)
            if outlines is not None and outlines[i] is not None and outlines[i].any():
                ax.imshow(rgba(outline(outlines[i]).astype(float), _OUTLINE, 1.0))
            if i == 0:
                ax.set_title(columns[j], fontsize=9)
            if j == 0:
                ax.set_ylabel(row_titles[i], fontsize=8)
    for j, image in shown.items():
        bar = fig.colorbar(image, ax=axes[:, j], location="bottom", shrink=0.95, aspect=15)
        bar.set_label(PANEL_UNITS.get(columns[j], columns[j]), fontsize=8)
        bar.ax.tick_params(labelsize=7)
    return fig


def _grid(n: int, columns: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    """A figure of ``n`` axes without ticks, ``columns`` per row; each ``width x height`` in."""
    cols = min(columns, n)
    rows = -(-n // cols)
    fig = figure(width * cols, height * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    return fig, axes


def _overlay_range(maps: Sequence[np.ndarray], threshold: float | None) -> tuple[float, float]:
    """Where the red overlay starts (``threshold``, else the pooled median) and saturates (the
    pooled 99.5th percentile; when that is not above the start, nothing is red and the scale
    spans the median to 99.5th percentile spread above the start)."""
    values = np.concatenate([np.ravel(m) for m in maps])
    median, top = (float(v) for v in np.percentile(values, [50, 99.5]))
    lo = median if threshold is None else float(threshold)
    return lo, top if top > lo else lo + max(top - median, 1e-6)


def _overlay_bar(fig: Figure, axes: np.ndarray, lo: float, hi: float, label: str) -> None:
    """A colour bar of the red overlay: transparent at ``lo``, full red at ``hi``."""
    cmap = LinearSegmentedColormap.from_list("overlay", [(*_RED, 0.0), (*_RED, _OVERLAY_ALPHA)])
    mappable = ScalarMappable(Normalize(lo, hi), cmap)
    bar = fig.colorbar(mappable, ax=list(axes), location="bottom", shrink=0.5, aspect=30)
    bar.set_label(label, fontsize=8)
    bar.formatter.set_useOffset(False)
    bar.update_ticks()
    bar.ax.tick_params(labelsize=7)


def overlay_figure(
    images: Sequence[np.ndarray],
    maps: Sequence[np.ndarray],
    titles: Sequence[str],
    masks: Sequence[np.ndarray | None] | None = None,
    threshold: float | None = None,
    columns: int = 4,
) -> Figure:
    """Anomaly maps over their images, with the ground-truth outline where known.

    The map is drawn in red with opacity rising from its 50th percentile to its 99.5th
    percentile over all images (or from ``threshold`` upward when given, so red means
    "flagged"); a colour bar below shows the scale.
    """
    lo, hi = _overlay_range(maps, threshold)
    fig, axes = _grid(len(images), columns, 3.0, 3.1)
    for i in range(len(images)):
        ax = axes[i]
        ax.imshow(grey(images[i]), cmap="gray", vmin=0, vmax=1)
        ax.imshow(rgba((np.asarray(maps[i], np.float64) - lo) / (hi - lo), _RED, _OVERLAY_ALPHA))
        if masks is not None and masks[i] is not None:
            ax.imshow(rgba(outline(masks[i]).astype(float), _OUTLINE, 1.0))
        ax.set_title(titles[i], fontsize=8)
    start = f"the pixel threshold {lo:.3g}" if threshold is not None else "the median"
    _overlay_bar(fig, axes, lo, hi, f"{ANOMALY_LABEL}; red from {start} up")
    return fig


def thumbnails_figure(
    crops: Sequence[np.ndarray],
    maps: Sequence[np.ndarray | None],
    titles: Sequence[str],
    columns: int = 6,
) -> Figure:
    """Small crops around detections, the anomaly map in red where given.

    The red rises from the median to the 99.5th percentile of all the crops' maps together (one
    scale, shown by the colour bar), so crops can be compared.
    """
    fig, axes = _grid(len(crops), columns, 1.9, 2.1)
    given = [np.asarray(m, np.float64) for m in maps if m is not None]
    lo, hi = _overlay_range(given, None) if given else (0.0, 1.0)
    for i in range(len(crops)):
        axes[i].imshow(grey(crops[i]), cmap="gray", vmin=0, vmax=1)
        if maps[i] is not None:
            m = np.asarray(maps[i], np.float64)
            axes[i].imshow(rgba((m - lo) / (hi - lo), _RED, _OVERLAY_ALPHA))
        axes[i].set_title(titles[i], fontsize=7)
    if given:
        _overlay_bar(fig, axes, lo, hi, f"{ANOMALY_LABEL}; red from the median up")
    return fig


def confusion_uri(matrix: Any, classes: Sequence[str], title: str) -> str:
    """The row-normalized confusion matrix of :func:`emae.report.plots.plot_confusion_matrix`."""
    from emae.report.plots import plot_confusion_matrix

    fig = plot_confusion_matrix(matrix, classes)
    fig.suptitle(title, fontsize=10)
    return figure_uri(fig)
