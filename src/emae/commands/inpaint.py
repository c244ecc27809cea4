"""``emae inpaint``: fill the holes a mask marks, keep every other pixel.

See :mod:`emae.commands.restore` for the outputs, resuming and the chunks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from emae.commands.restore import restore_volume
from emae.restore import Restorer
from emae.restore.restorer import FEATHER

logger = logging.getLogger(__name__)


def inpaint(
    model: str | Path,
    source: str | Path,
    out: str | Path,
    *,
    mask: str | Path,
    mask_threshold: float = 0.0,
    dilate: int = 0,
    feather: int = FEATHER,
    precision: str = "fp32",
    **options: Any,
) -> dict[str, Any]:
    """Fill the holes that ``mask`` marks in a 2D image or ``"ZYX"`` volume
    (:mod:`emae.commands.restore`).

    Parameters
    ----------
    model
        A model folder of ``emae pretrain --model inpainting-ae``.
    source, out, precision, **options
        As for :func:`denoise`.
    mask
        An image of the input's shape (any reader): a pixel is a hole where the mask is above
        ``mask_threshold``: a binary mask, a label image (``OUT.zarr/labels/anomaly`` of
        ``emae detect``), or an anomaly map with its threshold.
    dilate
        Grow the holes by this many pixels first (at most the overlap).
    feather
        Pixels around a hole over which the prediction is blended into the image.

    Returns
    -------
    dict
        As :func:`denoise`; ``replaced_pixels`` counts the holes. A mask without holes
        writes the input unchanged and says so.
    """
    restorer = Restorer.from_folder(model, "inpaint", precision=precision, feather=feather)
    summary = restore_volume(
        restorer,
        model,
        source,
        out,
        mask=mask,
        mask_threshold=mask_threshold,
        dilate=dilate,
        **options,
    )
    if not summary["replaced_pixels"]:
        logger.warning("%s: the mask marks no pixel; the output is the input unchanged", mask)
    elif summary["replaced_pixels"] == summary["pixels"]:
        logger.warning(
            "%s: the mask covers every pixel; nothing of the input is left to fill from", mask
        )
    return summary
