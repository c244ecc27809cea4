"""Random and grid sampling of square 2D patches from images and section stacks.

Sampling is planned as pure geometry: it yields :class:`~emae.data.patches.PatchLocation` values
naming the image, the section and the top-left corner of each patch;
:func:`~emae.data.patches.read_patches` turns them into pixels, reading only the chunks they touch.
Where patches may come from is set by validity masks and a patch check
(:mod:`emae.data.validity`).

Random sampling is reproducible per sample: sample ``i`` of seed ``s`` is drawn from its own
generator ``numpy.random.default_rng([s, i])``, so the first ``k`` samples do not depend on how
many are drawn, and a training run can resume at sample ``k`` exactly. A candidate is retried
(from the same generator) until it passes the validity mask and the ``is_valid`` check.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from emae.data.patches import PatchLocation, read_patches
from emae.data.validity import PatchCheck, not_empty, validity_masks
from emae.errors import EmaeError
from emae.io.image import Image

__all__ = [
    "PatchCheck",
    "PatchLocation",
    "PatchSampler",
    "draw_patches",
    "grid_locations",
    "not_empty",
    "random_locations",
    "read_patches",
    "sample_patches",
]

logger = logging.getLogger(__name__)

#: Patch bytes held at once while checking candidates.
BATCH_BYTES = 64 * 2**20
#: Give up when this many candidates were tried and none was accepted.
EARLY_GIVE_UP = 1000


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


class PatchSampler:
    """Draws candidates uniformly over all top-left positions of some images and checks them.

    Built once from the images' shapes (cheap per image, but not free for thousands of them),
    then :func:`draw_patches` draws from it any number of times; drawing never changes it.
    """

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
        self.masks, self.min_valid_fraction = validity_masks(masks, images), min_valid_fraction
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
    sampler = PatchSampler(images, patch_size, masks, min_valid_fraction, is_valid)
    return draw_patches(
        sampler, n, seed=seed, start=start, max_attempts=max_attempts, keep_pixels=keep_pixels
    )


def draw_patches(
    sampler: PatchSampler,
    n: int,
    *,
    seed: int,
    start: int = 0,
    max_attempts: int = 1000,
    keep_pixels: bool = True,
) -> tuple[list[PatchLocation], np.ndarray]:
    """Samples ``start .. start + n - 1`` of ``sampler``: what :func:`sample_patches` returns.

    For callers that draw many times from the same images (a dataset drawing one item at a
    time), so the sampler is built once. ``keep_pixels=False`` returns an empty pixel array.
    """
    for name, value in (("n", n), ("seed", seed), ("start", start)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise EmaeError(f"{name} must be a non-negative integer, got {value!r}")
    if max_attempts < 1:
        raise EmaeError(f"max_attempts must be >= 1, got {max_attempts}")
    patch_size = sampler.patch_size
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
        One validity mask (nonzero = valid) or None per image; see :mod:`emae.data.validity`.
    min_valid_fraction
        Smallest fraction of a patch's pixels that its mask must mark valid.
    is_valid
        Check on the ``(patch_size, patch_size)`` pixels of a candidate; the default rejects
        padding (:func:`~emae.data.validity.not_empty`). None accepts every candidate without
        reading
        pixels here.
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
        Validity mask (nonzero = valid) for the image; see :mod:`emae.data.validity`.
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
        image.check_section(z)
    spatial = validity_masks(None if mask is None else [mask], [image])[0]
    h, w = image.yx_shape
    return [
        PatchLocation(source_index, int(z), y, x)
        for z in sections
        for y in range(0, h - patch_size + 1, stride)
        for x in range(0, w - patch_size + 1, stride)
        if spatial is None or spatial.valid_fraction(z, y, x, patch_size) >= min_valid_fraction
    ]
