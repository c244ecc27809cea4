"""Object-centred images (one particle, cell or defect per image): three input variants.

For whole-image labels (``image,label[,mask]``), what the classifier sees can be:

``"surrounding"``
    the central ``P x P`` crop: the object with its surroundings (the default everywhere);
``"cropped"``
    the object's bounding box, squared, with a margin, resized to ``P x P``: the object alone,
    at a common scale;
``"masked"``
    the same crop with everything outside the object set to the median background intensity:
    the object's own pixels only;
``"whole"``
    the whole image, reflect-padded to a square and resized to ``P x P``: for images whose
    class is a property of all of it (e.g. the defect density of a fibre mat).

The object is the sample's ``mask`` (labels CSV column) when given, else
:func:`emae.data.segmentation.segment_object` (Otsu threshold, largest component). An image
in which no object is found falls back to the whole image, and the number of such images is
logged.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

from emae.data.labels import LabeledSet, read_labeled_patches
from emae.data.segmentation import segment_object
from emae.errors import EmaeError
from emae.io.readers import open_image

logger = logging.getLogger(__name__)

Variant = Literal["surrounding", "cropped", "masked", "whole"]
VARIANTS: tuple[str, ...] = ("surrounding", "cropped", "masked", "whole")


def object_box(mask: np.ndarray, margin: float) -> tuple[int, int, int]:
    """Square box ``(y0, x0, side)`` around the nonzero pixels of ``mask``, grown by ``margin``
    times its side; it may extend beyond the image."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    side = int(np.ceil(max(y1 - y0, x1 - x0) * (1 + 2 * margin)))
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    return round(float(cy) - side / 2), round(float(cx) - side / 2), max(side, 1)


def crop_object(
    image: np.ndarray,
    mask: np.ndarray,
    size: int,
    *,
    masked: bool = False,
    margin: float = 0.1,
) -> np.ndarray:
    """The object of ``image`` ``(H, W)``, squared and resized to ``(size, size)`` float32.

    Beyond the image border the crop is filled by reflection. With ``masked``, pixels outside
    the object take the median intensity of the image outside the mask.
    """
    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        mask = np.ones_like(mask)
    if masked:
        background = image[~mask] if (~mask).any() else image.ravel()
        image = np.where(mask, image, np.median(background)).astype(np.float32)
    y0, x0, side = object_box(mask, margin)
    pad = max(0, -y0, -x0, y0 + side - image.shape[0], x0 + side - image.shape[1])
    padded = np.pad(image, pad, mode="reflect" if pad < min(image.shape) else "edge")
    crop = padded[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
    zoomed = ndi.zoom(crop, size / side, order=1, grid_mode=True, mode="nearest")
    return np.ascontiguousarray(zoomed[:size, :size], dtype=np.float32)


def labeled_dtype(labeled: LabeledSet) -> np.dtype:
    """The pixel dtype of the images of a labels CSV, which must be one.

    Opens each image once (lazily: only the header of a TIFF or zarr store is read).

    Raises
    ------
    EmaeError
        When the images have different dtypes: one model normalizes one kind of data.
    """
    found: dict[str, str] = {}
    for path in dict.fromkeys(s.image for s in labeled.samples):
        found.setdefault(str(open_image(path).dtype), path)
    if len(found) > 1:
        which = ", ".join(f"{d} ({p})" for d, p in sorted(found.items()))
        raise EmaeError(
            f"the labeled images have different pixel dtypes: {which}; convert them to one"
        )
    return np.dtype(next(iter(found), "float32"))


def object_patches(
    labeled: LabeledSet,
    patch_size: int,
    variant: Variant = "surrounding",
    margin: float = 0.1,
    context: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The inputs of whole-image samples in one of :data:`VARIANTS`.

    ``context`` pixels on every side are added to each input (for a residual view's
    autoencoder): read around a patch (mirrored where they cross the image border), or a larger
    crop of an object.

    Returns
    -------
    patches : numpy.ndarray
        ``(N, S, S)`` float32 (the images' intensity units), ``S = patch_size + 2 context``.
    labels : numpy.ndarray
        ``(N,)`` int64 class indices.
    """
    if variant not in VARIANTS:
        raise EmaeError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if variant == "surrounding":
        patches, labels = read_labeled_patches(labeled, patch_size, context)
        return patches.astype(np.float32), labels
    patch_size += 2 * context
    if labeled.kind != "image":
        raise EmaeError(f"the {variant!r} variant needs whole-image samples (image,label[,mask])")
    out, missing = [], 0
    for sample in labeled.samples:
        image = open_image(sample.image).section(0)
        if variant == "whole":
            mask = np.ones(image.shape, dtype=bool)
        elif sample.mask is not None:
            mask = open_image(sample.mask).section(0) > 0
        else:
            mask = segment_object(image)
        missing += not mask.any()
        m = 0.0 if variant == "whole" else margin
        out.append(crop_object(image, mask, patch_size, masked=variant == "masked", margin=m))
    if missing:
        logger.warning("%d of %d images show no object; using them whole", missing, len(out))
    return np.stack(out), labeled.label_indices()
