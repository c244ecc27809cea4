"""Square 2D patches: where one lies (:class:`PatchLocation`) and reading many at once.

:func:`read_patches` turns a list of locations into pixels, reading only the chunks the patches
touch, and each of them about once, so reading thousands of patches from a chunked terabyte
volume costs memory for the patches and a few rows of chunks. Planning the locations (random or
on a grid) is :mod:`emae.data.sampling`'s job.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from emae.errors import EmaeError
from emae.io.image import Image

#: Largest block (pixels per axis) read at once when reading patches chunk by chunk.
MAX_BLOCK = 2048
#: Decoded blocks kept during one read_patches call.
CACHE_BYTES = 256 * 2**20


class PatchLocation(NamedTuple):
    """Where a patch lies: image ``source_index``, section ``z`` (0 for 2D), top-left ``(y, x)``."""

    source_index: int
    z: int
    y: int
    x: int


def _chunk_yx(image: Image) -> tuple[int, int] | None:
    chunks = getattr(image.data, "chunks", None)
    if not chunks or not all(isinstance(c, (int, np.integer)) for c in chunks):
        return None
    return min(int(chunks[-2]), MAX_BLOCK), min(int(chunks[-1]), MAX_BLOCK)


def _region(image: Image, z: int, ys: slice, xs: slice) -> np.ndarray:
    return image[ys, xs] if image.axes == "YX" else image[z, ys, xs]


def read_padded(image: Image, z: int, y: int, x: int, size: int) -> np.ndarray:
    """The ``size x size`` window with top-left ``(y, x)`` of section ``z``, parts outside the
    image mirrored from inside it (reflect padding, as the dense maps pad): ``(size, size)``."""
    h, w = image.yx_shape
    y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + size, h), min(x + size, w)
    if y0 >= y1 or x0 >= x1:
        raise EmaeError(f"{image.path}: window at y={y}, x={x} of {size} px lies outside it")
    inside = np.asarray(_region(image, z, slice(y0, y1), slice(x0, x1)))
    pads = ((y0 - y, y + size - y1), (x0 - x, x + size - x1))
    fits = all(p < n for (a, b), n in zip(pads, inside.shape, strict=True) for p in (a, b))
    return np.pad(inside, pads, mode="reflect" if fits else "symmetric")


class _BlockCache:
    """Chunk-aligned blocks decoded during one :func:`read_patches` call, least recent dropped."""

    def __init__(self, budget: int) -> None:
        self.blocks: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self.budget, self.nbytes = budget, 0

    def get(self, image: Image, key: tuple[int, int, int, int], block: tuple[int, int]) -> Any:
        if key in self.blocks:
            self.blocks.move_to_end(key)
            return self.blocks[key]
        _, z, iy, ix = key
        (by, bx), (h, w) = block, image.yx_shape
        ys, xs = slice(iy * by, min(h, (iy + 1) * by)), slice(ix * bx, min(w, (ix + 1) * bx))
        data = self.blocks[key] = _region(image, z, ys, xs)
        self.nbytes += data.nbytes
        while self.nbytes > self.budget and len(self.blocks) > 1:
            self.nbytes -= self.blocks.popitem(last=False)[1].nbytes
        return data

    def drop_before(self, row: tuple[int, int, int]) -> None:
        """Forget blocks above block row ``(source, z, iy)``: patches come in row order."""
        for key in [key for key in self.blocks if key[:3] < row]:
            self.nbytes -= self.blocks.pop(key).nbytes


def read_patches(
    images: Sequence[Image], locations: Sequence[PatchLocation], patch_size: int
) -> np.ndarray:
    """Read the patches at ``locations``, decoding each chunk they touch about once.

    Patches are read in chunk order; decoded chunks (at most ``CACHE_BYTES``) are kept for the
    duration of the call, so patches sharing a chunk cost one decode. Images without a chunk
    layout (memory-mapped files, numpy arrays) are read patch by patch.

    Parameters
    ----------
    images
        The images that ``PatchLocation.source_index`` refers to.
    locations
        Top-left corners; every patch must lie fully inside its image.
    patch_size
        Side of the square patches, in pixels.

    Returns
    -------
    numpy.ndarray
        ``(N, patch_size, patch_size)`` in the images' dtype (their common type when they differ),
        in the order of ``locations``.
    """
    used = sorted({loc.source_index for loc in locations})
    if used and not 0 <= used[0] <= used[-1] < len(images):
        raise EmaeError(f"source_index must be in 0..{len(images) - 1}, got {used[0]}..{used[-1]}")
    blocks = {s: _chunk_yx(images[s]) for s in used}
    dtype = np.result_type(*(images[s].dtype for s in used)) if used else np.dtype(np.uint8)
    out = np.empty((len(locations), patch_size, patch_size), dtype=dtype)
    cache, row = _BlockCache(CACHE_BYTES), None

    def order(k: int) -> tuple[int, ...]:
        s, z, y, x = locations[k]
        by, bx = blocks[s] or (1, 1)
        return s, z, y // by, x // bx

    for k in sorted(range(len(locations)), key=order):
        s, z, y, x = locations[k]
        image, block = images[s], blocks[s]
        image.check_section(z)
        image.check_patch(y, x, patch_size)
        if block is None:
            out[k] = image.read_patch(z, y, x, patch_size)
            continue
        (by, bx), y1, x1 = block, y + patch_size, x + patch_size
        if row != (s, z, y // by):
            row = (s, z, y // by)
            cache.drop_before(row)
        for iy in range(y // by, (y1 - 1) // by + 1):
            for ix in range(x // bx, (x1 - 1) // bx + 1):
                data, y0, x0 = cache.get(image, (s, z, iy, ix), block), iy * by, ix * bx
                ys, xs = slice(max(y, y0), min(y1, y0 + by)), slice(max(x, x0), min(x1, x0 + bx))
                out[k, ys.start - y : ys.stop - y, xs.start - x : xs.stop - x] = data[
                    ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0
                ]
    return out
