"""A one-figure gallery of every artifact type on a synthetic section."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emae.io.atomic import atomic_file
from emae.synth.artifacts import ARTIFACT_TYPES, inject
from emae.synth.tissue import make_section

_COLUMNS = 4
_MASK_COLOUR = "#ff3b30"


def write_gallery(path: str | Path, *, seed: int = 0, size: int = 256) -> Path:
    """Write a PNG with the clean section and one panel per artifact type.

    Each artifact is drawn at the centre of the same synthetic section; its mask is outlined
    in red and the panel is titled with the artifact type.

    Parameters
    ----------
    path
        Destination ``.png``; replaced atomically if it exists.
    seed
        Seed of the section and of every artifact's parameters.
    size
        Height and width of the section in pixels.

    Returns
    -------
    Path
        The written file.
    """
    from matplotlib.figure import Figure  # lazy: matplotlib is slow to import

    path = Path(path)
    rng = np.random.default_rng(seed)
    clean = make_section((size, size), seed=rng)
    panels = [("clean", clean, None)]
    for kind in ARTIFACT_TYPES:
        image, mask = inject(clean, kind, seed=rng, center=(size // 2, size // 2))
        panels.append((kind, image, mask))

    rows = -(-len(panels) // _COLUMNS)
    fig = Figure(figsize=(2.6 * _COLUMNS, 2.75 * rows), dpi=100, layout="constrained")
    axes = fig.subplots(rows, _COLUMNS).ravel()
    for ax, (title, image, mask) in zip(axes, panels, strict=False):  # spare axes stay empty
        ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if mask is not None and mask.any():
            ax.contour(mask, levels=[0.5], colors=_MASK_COLOUR, linewidths=0.7, alpha=0.7)
        ax.set_title(title, fontsize=10)
    for ax in axes:
        ax.set_axis_off()

    with atomic_file(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png")
    return path
