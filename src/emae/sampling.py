"""Random and grid sampling of square 2D patches from images and section stacks.

Sampling is planned as pure geometry: a :class:`PatchLocation` names the image, the section and
the top-left corner of a patch, and :func:`read_patches` turns a list of locations into pixels,
reading only the chunks the patches touch, and each of them about once, so sampling thousands of
patches from a chunked terabyte volume costs memory for the patches and a few rows of chunks.

Random sampling is reproducible per sample: sample ``i`` of seed ``s`` is drawn from its own
generator ``numpy.random.default_rng([s, i])``, so the first ``k`` samples do not depend on how
many are drawn, and a training run can resume at sample ``k`` exactly. A candidate is retried
(from the same generator) until it passes the validity mask and the ``is_valid`` check.

Validity masks
--------------
A mask marks where patches may come from (nonzero = valid), one per image. It is a ``"YX"``
array (applied to every section of a stack) or a ``"ZYX"`` array with one plane per section. Its
Y and X sizes may be the image's divided by an integer factor (rounded up or down), in which case
it is treated as downsampled by that factor: each mask pixel covers ``factor x factor`` image
pixels. The valid fraction of a patch is computed exactly at full resolution.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from emae.errors import EmaeError
from emae.io.image import Image

logger = logging.getLogger(__name__)

#: Largest block (pixels per axis) read at once when reading patches chunk by chunk.
MAX_BLOCK = 2048
#: Decoded blocks kept during one read_patches call.
CACHE_BYTES = 256 * 2**20
#: Patch bytes held at once while checking candidates.
BATCH_BYTES = 64 * 2**20
#: Give up when this many candidates were tried and none was accepted.
EARLY_GIVE_UP = 1000

PatchCheck = Callable[[np.ndarray], bool]


class PatchLocation(NamedTuple):
    """Where a patch lies: image ``source_index``, section ``z`` (0 for 2D), top-left ``(y, x)``."""

    source_index: int
    z: int
    y: int
    x: int


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


def _check_patch_size(images: Sequence[Image], patch_size: int) -> None:
    if not isinstance(patch_size, (int, np.integer)) or patch_size < 1:
        raise EmaeError(f"patch_size must be a positive integer, got {patch_size!r}")
    if len(images) == 0:
        raise EmaeError("no images to sample patches from")
    for image in images:
        h, w = image.yx_shape
        if patch_size > min(h, w):
            raise EmaeError(
                f"patch_size must be <= image size, got patch_size={patch_size} for "
                f"{image.path} of {h}x{w}"
            )


def _factor(full: int, small: int, what: str) -> int:
    f = max(1, round(full / max(small, 1)))
    if small not in (full // f, -(-full // f)):
        raise EmaeError(f"{what}: size {small} is not the image size {full} divided by an integer")
    return f


class _Mask:
    """A validity mask aligned to one image; answers the valid fraction of a patch."""

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

    def _weights(self, start: int, size: int, f: int, n: int) -> tuple[int, np.ndarray]:
        idx = np.minimum(np.arange(start, start + size) // f, n - 1)
        return int(idx[0]), np.bincount(idx - idx[0])

    def valid_fraction(self, z: int, y: int, x: int, size: int) -> float:
        y0, wy = self._weights(y, size, self.fy, self.shape[0])
        x0, wx = self._weights(x, size, self.fx, self.shape[1])
        key = (slice(y0, y0 + len(wy)), slice(x0, x0 + len(wx)))
        region = np.asarray(self.data[(z, *key) if self.per_section else key]) != 0
        return float(wy @ region @ wx) / (size * size)


def _masks(masks: Sequence[Any] | None, images: Sequence[Image]) -> list[_Mask | None]:
    if masks is None:
        return [None] * len(images)
    if len(masks) != len(images):
        raise EmaeError(
            f"expected one mask (or None) per image, got {len(masks)} for {len(images)}"
        )
    return [
        None if m is None else _Mask(m, im, i)
        for i, (m, im) in enumerate(zip(masks, images, strict=True))
    ]


def _chunk_yx(image: Image) -> tuple[int, int] | None:
    chunks = getattr(image.data, "chunks", None)
    if not chunks or not all(isinstance(c, (int, np.integer)) for c in chunks):
        return None
    return min(int(chunks[-2]), MAX_BLOCK), min(int(chunks[-1]), MAX_BLOCK)


def _check_inside(image: Image, loc: PatchLocation, size: int) -> None:
    h, w = image.yx_shape
    if loc.y < 0 or loc.x < 0 or loc.y + size > h or loc.x + size > w:
        raise EmaeError(
            f"{image.path}: patch of size {size} at y={loc.y}, x={loc.x} crosses the border of "
            f"an image of {h}x{w}"
        )


def _region(image: Image, z: int, ys: slice, xs: slice) -> np.ndarray:
    return image[ys, xs] if image.axes == "YX" else image[z, ys, xs]


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
        s, z, y, x = loc = locations[k]
        image, block = images[s], blocks[s]
        if not 0 <= z < image.n_sections:
            raise EmaeError(f"{image.path}: section z={z} outside 0..{image.n_sections - 1}")
        _check_inside(image, loc, patch_size)
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


class _Sampler:
    """Draws candidates uniformly over all top-left positions and checks them."""

    def __init__(
        self,
        images: Sequence[Image],
        patch_size: int,
        masks: Sequence[Any] | None,
        min_valid_fraction: float,
        is_valid: PatchCheck | None,
    ) -> None:
        _check_patch_size(images, patch_size)
        if not 0.0 <= min_valid_fraction <= 1.0:
            raise EmaeError(f"min_valid_fraction must be in [0, 1], got {min_valid_fraction}")
        self.images, self.patch_size, self.is_valid = images, patch_size, is_valid
        self.masks, self.min_valid_fraction = _masks(masks, images), min_valid_fraction
        self.dtype = np.result_type(*(im.dtype for im in images))
        counts = [
            im.n_sections * (im.yx_shape[0] - patch_size + 1) * (im.yx_shape[1] - patch_size + 1)
            for im in images
        ]
        self.cumulative = np.cumsum(counts, dtype=np.int64)

    def candidate(self, rng: np.random.Generator) -> PatchLocation:
        u = int(rng.integers(self.cumulative[-1]))
        s = int(np.searchsorted(self.cumulative, u, side="right"))
        u -= int(self.cumulative[s - 1]) if s else 0
        h, w = self.images[s].yx_shape
        nx = w - self.patch_size + 1
        z, rest = divmod(u, (h - self.patch_size + 1) * nx)
        y, x = divmod(rest, nx)
        return PatchLocation(s, z, y, x)

    def mask_ok(self, loc: PatchLocation) -> bool:
        mask = self.masks[loc.source_index]
        if mask is None:
            return True
        fraction = mask.valid_fraction(loc.z, loc.y, loc.x, self.patch_size)
        return fraction >= self.min_valid_fraction

    def draw(
        self, seed: int, indices: range, max_attempts: int, out: np.ndarray | None
    ) -> list[PatchLocation]:
        """Locations of samples ``indices``; their pixels go to ``out`` when it is given."""
        rngs = [np.random.default_rng([seed, i]) for i in indices]
        found: list[PatchLocation | None] = [None] * len(rngs)
        pending, tried, accepted = list(range(len(rngs))), 0, 0
        for _ in range(max_attempts):
            candidates = [(j, self.candidate(rngs[j])) for j in pending]
            candidates = [(j, loc) for j, loc in candidates if self.mask_ok(loc)]
            tried += len(pending)
            if self.is_valid is None:
                for j, loc in candidates:
                    found[j] = loc
            else:
                pixels = read_patches(self.images, [loc for _, loc in candidates], self.patch_size)
                for (j, loc), patch in zip(candidates, pixels, strict=True):
                    if self.is_valid(patch):
                        found[j] = loc
                        if out is not None:
                            out[j] = patch
            accepted += len(pending) - sum(found[j] is None for j in pending)
            pending = [j for j in pending if found[j] is None]
            if not pending or (accepted == 0 and tried >= EARLY_GIVE_UP):
                break
        logger.debug("accepted %d of %d candidate patches", accepted, tried)
        if pending:
            n_images = len(self.images)
            where = self.images[0].path if n_images == 1 else f"{n_images} images"
            raise EmaeError(
                f"could not find {len(pending)} of {len(indices)} valid patches of size "
                f"{self.patch_size} in {where}: {accepted} of {tried} candidates passed the masks "
                f"(min_valid_fraction={self.min_valid_fraction}) and is_valid; relax them or "
                "check that the images hold enough valid area"
            )
        locations = [loc for loc in found if loc is not None]
        if out is not None and self.is_valid is None:
            out[:] = read_patches(self.images, locations, self.patch_size)
        return locations


def _sample(
    images: Sequence[Image],
    n: int,
    patch_size: int,
    seed: int,
    start: int,
    masks: Sequence[Any] | None,
    min_valid_fraction: float,
    is_valid: PatchCheck | None,
    max_attempts: int,
    keep_pixels: bool,
) -> tuple[list[PatchLocation], np.ndarray]:
    for name, value in (("n", n), ("seed", seed), ("start", start)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise EmaeError(f"{name} must be a non-negative integer, got {value!r}")
    if max_attempts < 1:
        raise EmaeError(f"max_attempts must be >= 1, got {max_attempts}")
    sampler = _Sampler(images, patch_size, masks, min_valid_fraction, is_valid)
    out = np.empty((n if keep_pixels else 0, patch_size, patch_size), dtype=sampler.dtype)
    batch = max(1, BATCH_BYTES // (patch_size * patch_size * sampler.dtype.itemsize))
    locations: list[PatchLocation] = []
    for b0 in range(0, n, batch):
        b1 = min(n, b0 + batch)
        view = out[b0:b1] if keep_pixels else None
        locations += sampler.draw(seed, range(start + b0, start + b1), max_attempts, view)
    return locations, out


def sample_patches(
    images: Sequence[Image],
    n: int,
    patch_size: int,
    *,
    seed: int,
    start: int = 0,
    masks: Sequence[Any] | None = None,
    min_valid_fraction: float = 1.0,
    is_valid: PatchCheck | None = not_empty,
    max_attempts: int = 1000,
) -> tuple[list[PatchLocation], np.ndarray]:
    """Draw ``n`` random valid patches, uniformly over all positions of all images and sections.

    Parameters
    ----------
    images
        2D (``"YX"``) images and/or section stacks (``"ZYX"``); larger ones give more patches.
    n
        Number of patches.
    patch_size
        Side of the square patches, in pixels; at most the smallest image side.
    seed
        Seed; sample ``i`` comes from ``numpy.random.default_rng([seed, i])``.
    start
        Index of the first sample, to draw samples ``start .. start + n - 1``.
    masks
        One validity mask (nonzero = valid) or None per image; see the module docstring.
    min_valid_fraction
        Smallest fraction of a patch's pixels that its mask must mark valid.
    is_valid
        Check on the ``(patch_size, patch_size)`` pixels of a candidate; the default rejects
        padding (:func:`not_empty`). None accepts every candidate without reading pixels here.
    max_attempts
        Candidates tried per sample before giving up with an :class:`EmaeError`.

    Returns
    -------
    locations : list of PatchLocation
        ``n`` top-left corners.
    patches : numpy.ndarray
        ``(n, patch_size, patch_size)`` pixels in the images' dtype.
    """
    args = (min_valid_fraction, is_valid, max_attempts)
    return _sample(images, n, patch_size, seed, start, masks, *args, keep_pixels=True)


def random_locations(
    images: Sequence[Image],
    n: int,
    patch_size: int,
    *,
    seed: int,
    start: int = 0,
    masks: Sequence[Any] | None = None,
    min_valid_fraction: float = 1.0,
    is_valid: PatchCheck | None = not_empty,
    max_attempts: int = 1000,
) -> list[PatchLocation]:
    """The locations :func:`sample_patches` draws with the same arguments, without the pixels.

    With ``is_valid=None`` this is pure geometry (plus mask look-ups) and reads no pixels;
    otherwise candidates are read to be checked and then dropped: :func:`read_patches` reads
    them again, :func:`sample_patches` keeps them.

    Returns
    -------
    list of PatchLocation
        ``n`` top-left corners.
    """
    args = (min_valid_fraction, is_valid, max_attempts)
    return _sample(images, n, patch_size, seed, start, masks, *args, keep_pixels=False)[0]


def grid_locations(
    image: Image,
    patch_size: int,
    *,
    stride: int | None = None,
    source_index: int = 0,
    sections: Sequence[int] | None = None,
    mask: Any = None,
    min_valid_fraction: float = 1.0,
) -> list[PatchLocation]:
    """Patches on a regular grid, row by row in each section.

    Parameters
    ----------
    image
        A ``"YX"`` image or ``"ZYX"`` stack.
    patch_size
        Side of the square patches, in pixels.
    stride
        Step between neighbouring patches; defaults to ``patch_size`` (no overlap). The grid
        starts at ``(0, 0)`` and holds ``(H - patch_size) // stride + 1`` rows (likewise columns);
        pixels past the last full patch are not covered.
    source_index
        Value of ``PatchLocation.source_index`` in the result.
    sections
        Sections to cover; all by default.
    mask
        Validity mask (nonzero = valid) for the image; see the module docstring.
    min_valid_fraction
        Smallest fraction of a patch's pixels that the mask must mark valid.

    Returns
    -------
    list of PatchLocation
        Top-left corners in ``(z, y, x)`` order.
    """
    _check_patch_size([image], patch_size)
    stride = patch_size if stride is None else stride
    if not isinstance(stride, (int, np.integer)) or stride < 1:
        raise EmaeError(f"stride must be a positive integer, got {stride!r}")
    sections = range(image.n_sections) if sections is None else sections
    for z in sections:
        if not 0 <= z < image.n_sections:
            raise EmaeError(f"{image.path}: section z={z} outside 0..{image.n_sections - 1}")
    spatial = _masks(None if mask is None else [mask], [image])[0]
    h, w = image.yx_shape
    return [
        PatchLocation(source_index, int(z), y, x)
        for z in sections
        for y in range(0, h - patch_size + 1, stride)
        for x in range(0, w - patch_size + 1, stride)
        if spatial is None or spatial.valid_fraction(z, y, x, patch_size) >= min_valid_fraction
    ]
