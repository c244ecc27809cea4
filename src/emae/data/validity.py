"""Where patches may come from: validity masks, and the check that rejects padding.

Validity masks
--------------
A mask marks where patches may come from (nonzero = valid), one per image. It is a ``"YX"``
array (applied to every section of a stack) or a ``"ZYX"`` array with one plane per section. Its
Y and X sizes may be the image's divided by an integer factor (rounded up or down), in which case
it is treated as downsampled by that factor: each mask pixel covers ``factor x factor`` image
pixels. The valid fraction of a patch is computed exactly at full resolution.

Patch checks
------------
A :data:`PatchCheck` looks at the ``(H, W)`` pixels of a candidate patch and says whether to keep
it; :func:`not_empty`, the default of the samplers, rejects padding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from emae.errors import EmaeError
from emae.io.image import Image

PatchCheck = Callable[[np.ndarray], bool]


def not_empty(patch: np.ndarray, *, min_std: float = 0.0, max_fill_fraction: float = 0.5) -> bool:
    """Reject padding: constant patches and patches mostly filled with 0 or the dtype maximum.

    Parameters
    ----------
    patch
        ``(H, W)`` patch in its source dtype.
    min_std
        The patch's standard deviation must exceed this (in pixel units).
    max_fill_fraction
        Largest allowed fraction of fill pixels: 0, the maximum of an integer dtype, or NaN.

    Returns
    -------
    bool
        True when the patch holds image content.
    """
    p = np.asarray(patch)
    fill = p == 0
    if np.issubdtype(p.dtype, np.integer):
        fill |= p == np.iinfo(p.dtype).max
    elif np.issubdtype(p.dtype, np.floating):
        fill |= np.isnan(p)
    if fill.mean() > max_fill_fraction:
        return False
    return bool(np.nanstd(p) > min_std)


def _factor(full: int, small: int, what: str) -> int:
    f = max(1, round(full / max(small, 1)))
    if small not in (full // f, -(-full // f)):
        raise EmaeError(f"{what}: size {small} is not the image size {full} divided by an integer")
    return f


def _weights(start: int, size: int, f: int, n: int) -> tuple[int, np.ndarray]:
    """First mask index and per-mask-pixel counts of image pixels ``start .. start + size - 1``."""
    idx = np.minimum(np.arange(start, start + size) // f, n - 1)
    return int(idx[0]), np.bincount(idx - idx[0])


class ValidityMask:
    """A validity mask aligned to one image; answers the valid fraction of a patch.

    Parameters
    ----------
    data
        ``"YX"`` or ``"ZYX"`` array-like (nonzero = valid), at the image's resolution or
        downsampled by an integer factor; see the module docstring.
    image
        The image the mask belongs to.
    index
        Position of the mask in its list, for error messages.
    """

    def __init__(self, data: Any, image: Image, index: int) -> None:
        shape = tuple(int(s) for s in data.shape)
        what = f"mask {index} for {image.path}"
        if len(shape) == 3 and (image.axes != "ZYX" or shape[0] != image.n_sections):
            raise EmaeError(f"{what}: a ZYX mask needs {image.n_sections} sections, got {shape}")
        if len(shape) not in (2, 3):
            raise EmaeError(f"{what}: expected a YX or ZYX array, got shape {shape}")
        self.data, self.per_section, self.shape = data, len(shape) == 3, shape[-2:]
        self.fy = _factor(image.yx_shape[0], shape[-2], what)
        self.fx = _factor(image.yx_shape[1], shape[-1], what)

    def valid_fraction(self, z: int, y: int, x: int, size: int) -> float:
        """Fraction of the ``(size, size)`` patch at ``(y, x)`` in section ``z`` marked valid."""
        y0, wy = _weights(y, size, self.fy, self.shape[0])
        x0, wx = _weights(x, size, self.fx, self.shape[1])
        key = (slice(y0, y0 + len(wy)), slice(x0, x0 + len(wx)))
        region = np.asarray(self.data[(z, *key) if self.per_section else key]) != 0
        return float(wy @ region @ wx) / (size * size)


def validity_masks(
    masks: Sequence[Any] | None, images: Sequence[Image]
) -> list[ValidityMask | None]:
    """One :class:`ValidityMask` (or None) per image, from one array (or None) per image."""
    if masks is None:
        return [None] * len(images)
    if len(masks) != len(images):
        raise EmaeError(
            f"expected one mask (or None) per image, got {len(masks)} for {len(images)}"
        )
    return [
        None if m is None else ValidityMask(m, im, i)
        for i, (m, im) in enumerate(zip(masks, images, strict=True))
    ]
