"""Writing restored intensities back into an image's dtype."""

from __future__ import annotations

from typing import Any

import numpy as np


def cast_to(values: np.ndarray, dtype: Any) -> tuple[np.ndarray, int]:
    """``values`` (float, any shape) in ``dtype`` (same shape), and how many pixels had to be
    clipped to fit it.

    Integer dtypes round to the nearest integer and clip to the dtype's range (a denoiser can
    overshoot near saturated pixels: 255 + 3 must not wrap round to 2); float dtypes keep the
    values, float32 clipping only what exceeds its range.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        info = np.finfo(dtype)
    else:
        info = np.iinfo(dtype)
        values = np.rint(values)
    low, high = float(info.min), float(info.max)
    outside = int(np.count_nonzero((values < low) | (values > high)))
    return np.clip(values, low, high).astype(dtype), outside
