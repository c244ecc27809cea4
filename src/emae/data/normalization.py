"""Percentile intensity normalization, fitted on a random sample of patches.

:meth:`PercentileNormalizer.fit` never loads whole images: it draws random patches through
:func:`emae.data.sampling.sample_patches` (which reads only the chunks a patch touches and, by
default, skips padding such as all-zero borders) and takes the ``low`` and ``high`` percentiles
of their pixels. The fitted normalizer maps ``low_value`` to 0 and ``high_value`` to 1 with the
same float32 arithmetic on every call, and round-trips through JSON exactly
(:meth:`~PercentileNormalizer.to_dict`, :meth:`~PercentileNormalizer.from_dict`).

Values outside ``[low_value, high_value]`` are not clipped by default: intensities far outside
the normal range (saturated blobs, burnt resin, black holes) are often the artifacts being
looked for, and clipping would hide how far out they are. Pass ``clip=True`` to clip to [0, 1].
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emae.data.sampling import sample_patches
from emae.data.validity import PatchCheck, not_empty
from emae.errors import EmaeError
from emae.io.image import Image

DEFAULT_N_SAMPLES = 1_000_000
DEFAULT_PATCH_SIZE = 64


def _n_patches(n_samples: int, patch_size: int) -> int:
    if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise EmaeError(f"n_samples must be a positive integer, got {n_samples!r}")
    return -(-int(n_samples) // (patch_size * patch_size))


def _patch_size(images: Sequence[Image], patch_size: int) -> int:
    """``patch_size`` shrunk to the smallest section side among ``images``."""
    return min(patch_size, *(min(im.yx_shape) for im in images))


def check_finite(
    image: Image,
    n_samples: int = DEFAULT_N_SAMPLES,
    *,
    seed: int = 0,
    patch_size: int = DEFAULT_PATCH_SIZE,
) -> None:
    """Raise if a float image holds NaN or infinite values, checking about ``n_samples`` pixels.

    Integer images pass at once. An image of at most ``n_samples`` pixels is checked whole,
    section by section; a larger one through ``ceil(n_samples / patch_size**2)`` random patches,
    so a few non-finite pixels in a huge image may go unnoticed.

    Raises
    ------
    EmaeError
        Naming the image's path and where a non-finite value was found.
    """
    if image.dtype.kind != "f":
        return
    if math.prod(image.shape) <= n_samples:
        for z in range(image.n_sections):
            image.check_finite(image.section(z), z)
        return
    size = _patch_size([image], patch_size)
    n = _n_patches(n_samples, size)
    locations, patches = sample_patches([image], n, size, seed=seed, is_valid=None)
    for loc, patch in zip(locations, patches, strict=True):
        if not np.isfinite(patch).all():
            raise EmaeError(
                f"{image.path}: holds NaN or infinite values (in the {size}x{size} patch at "
                f"section {loc.z}, y={loc.y}, x={loc.x}); replace them before processing"
            )


@dataclass(frozen=True)
class PercentileNormalizer:
    """Map intensities linearly so that ``low_value`` becomes 0 and ``high_value`` becomes 1.

    Build one with :meth:`fit` (or directly from known values). Calling it maps any array to
    float32 with the same shape.

    Parameters
    ----------
    low_value, high_value
        Intensities mapped to 0 and 1, in the units of the source images; ``high_value`` must be
        greater than ``low_value``.
    low, high
        The percentiles (0-100) these values were taken at; kept for the record.
    source_dtype
        Dtype of the images the normalizer was fitted on (e.g. ``"uint8"``), which
        :meth:`check_dtype` requires of its inputs; ``None`` (built by hand) accepts any.
    clip
        Clip the output to [0, 1]. Off by default, so out-of-range intensities stay visible.
    """

    low_value: float
    high_value: float
    low: float = 1.0
    high: float = 99.0
    source_dtype: str | None = None
    clip: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low_value) and math.isfinite(self.high_value)):
            raise EmaeError(
                f"normalizer values must be finite, got low_value={self.low_value}, "
                f"high_value={self.high_value}"
            )
        if not self.high_value > self.low_value:
            raise EmaeError(
                f"high_value must be greater than low_value, got low_value={self.low_value} and "
                f"high_value={self.high_value}"
            )
        if not 0.0 <= self.low < self.high <= 100.0:
            raise EmaeError(
                f"percentiles must satisfy 0 <= low < high <= 100, got {self.low}, {self.high}"
            )

    @classmethod
    def fit(
        cls,
        images: Image | Sequence[Image],
        *,
        low: float = 1.0,
        high: float = 99.0,
        n_samples: int = DEFAULT_N_SAMPLES,
        patch_size: int = DEFAULT_PATCH_SIZE,
        seed: int = 0,
        clip: bool = False,
        is_valid: PatchCheck | None = not_empty,
    ) -> PercentileNormalizer:
        """Estimate ``low_value`` and ``high_value`` from random patches of ``images``.

        Parameters
        ----------
        images
            One or more ``"YX"``/``"ZYX"`` images with the same dtype; patches are drawn
            uniformly over all their positions, so larger images contribute more.
        low, high
            Percentiles (0-100) mapped to 0 and 1.
        n_samples
            About how many pixels to sample, as ``ceil(n_samples / patch_size**2)`` patches.
        patch_size
            Side of the sampled patches, shrunk to the smallest image side if needed.
        seed
            Seed of the patch sampling; the same seed gives the same normalizer.
        clip
            Stored in the normalizer; see the class docstring.
        is_valid
            Patch check passed to :func:`~emae.data.sampling.sample_patches`; the default skips
            padding (constant patches and patches mostly 0 or the dtype maximum). ``None`` keeps
            every patch.

        Returns
        -------
        PercentileNormalizer

        Raises
        ------
        EmaeError
            When the images have different dtypes, a float image holds NaN or infinite values
            (checked with :func:`check_finite` on ``n_samples`` pixels shared among the images),
            or the two percentiles are equal (a constant image).
        """
        images = [images] if isinstance(images, Image) else list(images)
        if not images:
            raise EmaeError("no images to fit the normalizer on")
        dtypes = sorted({str(im.dtype) for im in images})
        if len(dtypes) > 1:
            raise EmaeError(f"images to normalize together must share one dtype, got {dtypes}")
        if not 0.0 <= low < high <= 100.0:
            raise EmaeError(f"percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
        size = _patch_size(images, patch_size)
        n = _n_patches(n_samples, size)
        per_image = max(size * size, n_samples // len(images))
        for image in images:
            check_finite(image, per_image, seed=seed, patch_size=size)
        _, patches = sample_patches(images, n, size, seed=seed, is_valid=is_valid)
        low_value, high_value = np.percentile(patches, [low, high])
        where = images[0].path if len(images) == 1 else f"{len(images)} images"
        if not high_value > low_value:
            raise EmaeError(
                f"{where}: the {low} and {high} percentiles of {patches.size} sampled pixels are "
                f"both {low_value}; the images look constant and cannot be normalized"
            )
        return cls(float(low_value), float(high_value), low, high, dtypes[0], clip)

    @classmethod
    def from_array(
        cls,
        values: Any,
        *,
        low: float = 1.0,
        high: float = 99.0,
        source_dtype: str | None = None,
        clip: bool = False,
        what: str = "the values",
    ) -> PercentileNormalizer:
        """A normalizer from the ``low`` and ``high`` percentiles of ``values`` (in memory).

        The in-memory counterpart of :meth:`fit`, for patches already read (fine-tuning,
        evaluation, detectors fitted on arrays). ``what`` names the values in the error for a
        constant array.
        """
        a = np.asarray(values)
        low_value, high_value = np.percentile(a, [low, high])
        if not high_value > low_value:
            raise EmaeError(
                f"the {low:g} and {high:g} percentiles of {what} are both {low_value}; they "
                "look constant and cannot be normalized"
            )
        dtype = str(a.dtype) if source_dtype is None else str(source_dtype)
        return cls(float(low_value), float(high_value), low, high, dtype, clip)

    def check_dtype(
        self, dtype: Any, where: str = "input", model: str = "the model", *, strict: bool = True
    ) -> None:
        """Refuse pixels of ``dtype`` unless they are in the units this normalizer was fitted on.

        The same dtype passes, and so do two float dtypes (float32 data stored as float64 keeps
        its values); anything else (uint16 data under a uint8 model, floats in [0, 1] under a
        uint8 model) would be mapped far outside the trained range and give a silently wrong
        result. :func:`normalizer_for` offers the conversion. With ``strict=False`` (arrays
        given to the Python API, which may hold intensities already converted to float) every
        float dtype passes; the commands check the files' own dtypes strictly.

        Raises
        ------
        EmaeError
            Naming ``where``, both dtypes and the way out (``--rescale``).
        """
        if self.source_dtype is None:
            return
        dtype, source = np.dtype(dtype), np.dtype(self.source_dtype)
        if dtype == source or (dtype.kind == "f" and (source.kind == "f" or not strict)):
            return
        raise EmaeError(
            f"{where}: pixels are {dtype} but {model} was trained on {source} images, so its "
            f"intensity normalization does not fit; pass --rescale to normalize the input by its "
            f"own {self.low:g}-{self.high:g} percentiles, or convert it to {source}"
        )

    def __call__(self, array: Any) -> np.ndarray:
        """Normalize ``array`` (any shape, integer or float) to float32 of the same shape.

        Computes ``(x - low_value) / (high_value - low_value)`` in float32, then clips to [0, 1]
        when :attr:`clip` is set. Raises :class:`EmaeError` on NaN or infinite input.
        """
        a = np.asarray(array)
        if a.dtype.kind not in "uif":
            raise EmaeError(f"cannot normalize an array of dtype {a.dtype}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise EmaeError(f"cannot normalize: array of shape {a.shape} holds NaN or infinities")
        lo, hi = np.float32(self.low_value), np.float32(self.high_value)
        out = a.astype(np.float32)
        out -= lo
        out /= hi - lo
        if self.clip:
            np.clip(out, 0.0, 1.0, out=out)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serializable fields; :meth:`from_dict` restores an identical normalizer."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PercentileNormalizer:
        """Rebuild a normalizer from :meth:`to_dict` output (e.g. loaded from JSON)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = set(data) - fields, {"low_value", "high_value"} - set(data)
        if unknown or missing:
            raise EmaeError(
                f"normalizer fields: unknown {sorted(unknown)}, missing {sorted(missing)}; "
                f"expected {sorted(fields)}"
            )
        return cls(**data)


def normalizer_for(
    images: Image | Sequence[Image],
    normalizer: PercentileNormalizer,
    *,
    model: str = "the model",
    rescale: bool = False,
    seed: int = 0,
) -> PercentileNormalizer:
    """The normalizer to apply to ``images`` under a model fitted with ``normalizer``.

    This is the one dtype check of every command and of the API on files: the model's own
    normalizer when the images are in its units (:meth:`PercentileNormalizer.check_dtype`);
    with ``rescale``, a normalizer fitted on ``images`` themselves at the model's percentiles,
    so their ``low``-``high`` percentile range maps to [0, 1] as the training data's did (the
    documented conversion for data of another dtype or intensity range); otherwise an error.

    Parameters
    ----------
    images
        The ``"YX"``/``"ZYX"`` inputs, all of one dtype.
    normalizer
        The model's normalizer.
    model
        How to name the model in the error, e.g. its folder.
    rescale
        Refit the percentile values on ``images`` (about a million pixels sampled with ``seed``).

    Raises
    ------
    EmaeError
        When the images' dtype does not fit and ``rescale`` is off, or the images have mixed
        dtypes.
    """
    images = [images] if isinstance(images, Image) else list(images)
    dtypes = sorted({str(im.dtype) for im in images})
    if len(dtypes) > 1:
        raise EmaeError(f"the inputs have different pixel dtypes {dtypes}; process them separately")
    if rescale:
        return PercentileNormalizer.fit(
            images, low=normalizer.low, high=normalizer.high, clip=normalizer.clip, seed=seed
        )
    for image in images:
        normalizer.check_dtype(image.dtype, image.path, model)
    return normalizer
