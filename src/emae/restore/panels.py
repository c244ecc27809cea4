"""Before / after (/ mask) panels: what a restoration changed, at a glance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

#: Side of the crop shown per example, in pixels.
CROP = 384

Example = tuple[str, np.ndarray, np.ndarray, np.ndarray | None]


def hole_centre(
    holes: Any, where: tuple[int, ...] = (), rows: int = 1024
) -> tuple[int, int] | None:
    """The centroid ``(y, x)`` of the non-zero pixels of section ``holes[where]`` (a numpy or
    zarr array, ``(H, W)`` or ``(Z, H, W)`` with ``where = (z,)``), read ``rows`` rows at a
    time so that a section of any size is never loaded whole; None when there are none."""
    h = holes.shape[-2]
    count = sum_y = sum_x = 0
    for y0 in range(0, h, rows):
        ys, xs = np.nonzero(np.asarray(holes[(*where, slice(y0, y0 + rows))]))
        count += len(ys)
        sum_y += int(ys.sum()) + y0 * len(ys)
        sum_x += int(xs.sum())
    return (sum_y // count, sum_x // count) if count else None


def crop_at(
    shape: tuple[int, int], centre: tuple[int, int] | None = None, size: int = CROP
) -> tuple[slice, slice]:
    """``(rows, columns)`` of a ``size x size`` window (smaller on a smaller section) of a
    section of ``shape = (H, W)``, centred on ``centre = (y, x)`` (default: the section's
    centre) and moved inside the section."""
    h, w = shape
    cy, cx = centre or (h // 2, w // 2)
    sh, sw = min(size, h), min(size, w)
    y0 = int(np.clip(cy - sh // 2, 0, h - sh))
    x0 = int(np.clip(cx - sw // 2, 0, w - sw))
    return slice(y0, y0 + sh), slice(x0, x0 + sw)


def crop_around(holes: Any, size: int = CROP, where: tuple[int, ...] = ()) -> tuple[slice, slice]:
    """:func:`crop_at` the centroid of the filled pixels of section ``holes[where]``
    (:func:`hole_centre`), or the section's centre when it has none."""
    return crop_at(tuple(holes.shape[-2:]), hole_centre(holes, where), size)


def restoration_panels(examples: Sequence[Example]) -> Figure:
    """One row per example ``(title, before, after, holes)`` (``(h, w)`` each; ``holes`` bool,
    or None when every pixel was restored, as in denoising): the input and the restored image
    on the same grey scale, and where there are holes the input with them outlined in colour."""
    columns = 3 if any(e[3] is not None for e in examples) else 2
    rows = max(len(examples), 1)
    fig = Figure(figsize=(3 * columns, 3.1 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for row, (title, before, after, holes) in zip(axes, examples, strict=False):
        low, high = np.percentile(before, [0.5, 99.5])
        names = ("before", "after", "mask")[:columns]
        for ax, image, name in zip(row, (before, after, before), names, strict=False):
            ax.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            ax.set_title(f"{title}: {name}", fontsize=9)
            ax.set_axis_off()
        if holes is not None and holes.any():
            row[2].contour(holes, levels=[0.5], colors="#ff2d55", linewidths=0.8)
    if not examples:
        axes[0, 1].text(0.5, 0.5, "nothing was replaced", ha="center", va="center")
        for ax in axes[0]:
            ax.set_axis_off()
    return fig
