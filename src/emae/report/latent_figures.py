"""Figures of a latent map: the 2-D map coloured by cluster, label, anomaly or novelty, the
montage of a cluster's most and least typical patches, and the VAE's image grids.

Drawn on the Agg canvas without ``pyplot`` (:func:`emae.report.figures.figure`). Cluster ``k``
is drawn in :func:`emae.report.plots.class_style` ``(k)``; rows in no cluster are small grey
dots, so the clusters stand out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage

from emae.report.figures import ANOMALY_LABEL, figure, grey
from emae.report.plots import class_style

_GREY = (0.72, 0.72, 0.72)
#: Points drawn at most in one scatter (a seeded sample beyond; the tables hold every row).
MAX_POINTS = 50000


def _shown(n: int, seed: int = 0) -> np.ndarray:
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_POINTS, replace=False))


def _size(n: int) -> float:
    return float(np.clip(4000 / max(n, 1), 0.5, 12))


def categorical_map(
    coords: np.ndarray,
    groups: Sequence[Any],
    title: str,
    *,
    background: np.ndarray | None = None,
    unassigned: Any = None,
    thumbnails: Sequence[tuple[np.ndarray, np.ndarray]] = (),
) -> Figure:
    """Map ``(N, 2)`` with one colour per group (cluster or label) and a legend of their sizes.

    ``unassigned`` (e.g. -1: in no cluster) is drawn grey; ``background`` ``(M, 2)`` (the
    fitted map, when new data is shown over it) in light grey underneath; ``thumbnails``, pairs
    of a position ``(2,)`` and a patch ``(P, P)``, are drawn small at their positions (each
    cluster's most typical patch at its centre).
    """
    fig = figure(6.4, 5.0)
    ax = fig.subplots()
    if background is not None:
        keep = _shown(len(background), 1)
        ax.scatter(*background[keep].T, s=_size(len(keep)), color="0.88", linewidths=0)
    keep = _shown(len(coords))
    values = np.asarray(groups, dtype=object)[keep]
    xy = coords[keep]
    names = sorted({v for v in values if v != unassigned}, key=lambda v: (str(type(v)), v))
    size = _size(len(keep))
    if unassigned is not None and np.any(values == unassigned):
        mask = values == unassigned
        ax.scatter(*xy[mask].T, s=size, color=_GREY, linewidths=0, label=f"none ({mask.sum()})")
    for k, name in enumerate(names):
        mask = values == name
        colour = class_style(k)["color"]
        ax.scatter(*xy[mask].T, s=size, color=colour, linewidths=0, label=f"{name} ({mask.sum()})")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP 1", fontsize=8)
    ax.set_ylabel("UMAP 2", fontsize=8)
    if len(names) <= 24:
        ax.legend(fontsize=7, markerscale=max(1.0, 6 / size), loc="best", frameon=False)
    for where, patch in thumbnails:
        box = AnnotationBbox(
            OffsetImage(grey(patch), cmap="gray", zoom=22 / max(patch.shape)),
            tuple(where),
            frameon=True,
            pad=0.1,
        )
        ax.add_artist(box)
    return fig


def continuous_map(coords: np.ndarray, values: np.ndarray, title: str, label: str) -> Figure:
    """Map ``(N, 2)`` coloured by a number per row (anomaly, novelty), highest drawn on top."""
    fig = figure(6.4, 5.0)
    ax = fig.subplots()
    keep = _shown(len(coords))
    v = np.asarray(values, dtype=np.float64)[keep]
    order = np.argsort(v, kind="stable")
    lo, hi = np.nanpercentile(v, [1, 99]) if len(v) else (0.0, 1.0)
    points = ax.scatter(
        *coords[keep][order].T, c=v[order], s=_size(len(keep)), cmap="magma_r",
        vmin=lo, vmax=hi if hi > lo else lo + 1e-6, linewidths=0,
    )  # fmt: skip
    bar = fig.colorbar(points, ax=ax, shrink=0.8)
    bar.set_label(label, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def anomaly_map_figure(coords: np.ndarray, anomaly: np.ndarray) -> Figure:
    """Map coloured by each patch's anomaly score."""
    return continuous_map(coords, anomaly, "latent map by anomaly score", ANOMALY_LABEL)


def montage_figure(
    typical: Sequence[np.ndarray], atypical: Sequence[np.ndarray], title: str
) -> Figure:
    """Two rows of patches ``(P, P)``: a cluster's most typical and its least typical members."""
    columns = max(len(typical), len(atypical), 1)
    fig = figure(1.1 * columns + 0.8, 2.6)
    axes = fig.subplots(2, columns, squeeze=False)
    for row, (patches, name) in enumerate(((typical, "most typical"), (atypical, "least typical"))):
        for j in range(columns):
            ax = axes[row, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(patches):
                ax.imshow(grey(patches[j]), cmap="gray", vmin=0, vmax=1)
            else:
                ax.set_axis_off()
        axes[row, 0].set_ylabel(name, fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig


def image_grid_figure(rows: Sequence[np.ndarray], row_titles: Sequence[str], title: str) -> Figure:
    """Rows of equally sized images ``(n, H, W)`` (samples, interpolations, traversals)."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig = figure(0.9 * n_cols + 1.0, 0.95 * n_rows + 0.5)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i, images in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(images):
                ax.imshow(np.clip(images[j], 0, 1), cmap="gray", vmin=0, vmax=1)
            else:
                ax.set_axis_off()
        axes[i, 0].set_ylabel(row_titles[i], fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=9)
    return fig
