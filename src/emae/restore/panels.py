"""Before / after (/ mask) panels: what a restoration changed, at a glance."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

#: Side of the crop shown per example, in pixels.
CROP = 384

Example = tuple[str, np.ndarray, np.ndarray, np.ndarray | None]


def crop_around(holes: np.ndarray, size: int = CROP) -> tuple[slice, slice]:
    """A ``size x size`` window (smaller on a smaller section) centred on the filled pixels'
    centroid, inside the section; the section's centre when ``holes`` ``(H, W)`` is empty."""
    h, w = holes.shape
    ys, xs = np.nonzero(holes)
    cy, cx = (int(ys.mean()), int(xs.mean())) if len(ys) else (h // 2, w // 2)
    sh, sw = min(size, h), min(size, w)
    y0 = int(np.clip(cy - sh // 2, 0, h - sh))
    x0 = int(np.clip(cx - sw // 2, 0, w - sw))
    return slice(y0, y0 + sh), slice(x0, x0 + sw)


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
