"""The lazy image type every reader returns.

An :class:`Image` wraps an array-like (a ``zarr.Array``, a ``numpy.memmap``, an ``h5py.Dataset``,
a TIFF page store, ...) that supports ``shape``, ``dtype`` and basic slicing, and remembers its
axes. Slicing reads only the chunks that intersect the request and returns a ``numpy.ndarray``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emae.errors import EmaeError

AXES = ("YX", "ZYX")


@dataclass(frozen=True)
class Image:
    """A lazily read 2D or 3D grayscale image.

    Parameters
    ----------
    data
        Array-like with ``shape``, ``dtype`` and ``__getitem__`` accepting a tuple of slices.
        It is never read whole by this class.
    axes
        ``"YX"`` for a 2D image or ``"ZYX"`` for a stack of sections.
    path
        Where the image came from, used in error messages.
    pixel_size
        Physical size of a pixel along each axis in nanometers (``None`` for an axis whose
        size the file does not give), or ``None`` when the file gives none
        (:mod:`emae.io.pixel_size`).
    """

    data: Any
    axes: str
    path: str
    pixel_size: tuple[float | None, ...] | None = None

    def __post_init__(self) -> None:
        if self.axes not in AXES:
            raise EmaeError(f"{self.path}: axes must be one of {AXES}, got {self.axes!r}")
        if len(self.data.shape) != len(self.axes):
            raise EmaeError(
                f"{self.path}: expected a {len(self.axes)}D array for axes {self.axes!r}, "
                f"got shape {tuple(self.data.shape)}"
            )

    def with_pixel_size(self, sizes: Sequence[float] | None) -> Image:
        """This image with the pixel size ``sizes`` (nm) given by the user, e.g. ``--pixel-size``.

        One size applies to Y and X, two are Y and X, three are Z, Y and X (Z is ignored for a
        2D image). ``None`` returns the image unchanged.
        """
        if sizes is None:
            return self
        sizes = tuple(float(s) for s in sizes)
        if len(sizes) == 1:
            sizes = (sizes[0], sizes[0])
        if len(sizes) == 2:
            z = self.pixel_size[0] if self.ndim == 3 and self.pixel_size else None
            full = (z, *sizes) if self.ndim == 3 else sizes
        elif len(sizes) == 3:
            full = sizes if self.ndim == 3 else sizes[1:]
        else:
            raise EmaeError(f"pixel size takes one to three sizes, got {sizes}")
        return dataclasses.replace(self, pixel_size=tuple(full))

    def pixel_size_text(self) -> str:
        """The pixel size for people: ``"30 x 4 x 4 nm"``, ``"? x 4 x 4 nm"`` or ``"unknown"``."""
        if not self.pixel_size or all(s is None for s in self.pixel_size):
            return "unknown"
        return " x ".join("?" if s is None else f"{s:g}" for s in self.pixel_size) + " nm"

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape in the order of :attr:`axes`."""
        return tuple(int(s) for s in self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        """Pixel dtype of the stored data."""
        return np.dtype(self.data.dtype)

    @property
    def ndim(self) -> int:
        """Number of axes (2 or 3)."""
        return len(self.axes)

    @property
    def n_sections(self) -> int:
        """Number of 2D sections: 1 for ``"YX"``, the Z size for ``"ZYX"``."""
        return 1 if self.axes == "YX" else self.shape[0]

    @property
    def yx_shape(self) -> tuple[int, int]:
        """``(height, width)`` of one section."""
        return self.shape[-2], self.shape[-1]

    def __getitem__(self, key: Any) -> np.ndarray:
        """Read a region; only the chunks it touches are loaded."""
        return np.asarray(self.data[key])

    def check_complete(self) -> None:
        """Raise an :class:`EmaeError` if chunks of the stored array were never written.

        Unwritten zarr chunks read as the fill value (often 0) and would pass for data: a hole
        in a volume that is still being written, or was copied in part. Formats without
        optional chunks always pass. Lists the store's keys once.
        """
        missing = getattr(self.data, "missing_chunks", None)
        if missing:
            raise EmaeError(
                f"{self.path}: {missing} chunk(s) of the zarr array were never written (they "
                f"read as the fill value); finish or repair the input first"
            )

    def check_finite(self, region: np.ndarray, z: int = 0, y0: int = 0, x0: int = 0) -> np.ndarray:
        """Return the ``(h, w)`` ``region`` read from section ``z`` at ``(y0, x0)``, refusing
        NaN or infinite values in one line that names the file and the first bad pixel.

        Integer regions pass at once.
        """
        if region.dtype.kind == "f" and not np.isfinite(region).all():
            y, x = np.argwhere(~np.isfinite(region))[0]
            raise EmaeError(
                f"{self.path}: holds NaN or infinite values (section {z}, y={y0 + y}, "
                f"x={x0 + x}); replace them before processing"
            )
        return region

    def check_section(self, z: int) -> None:
        """Raise an :class:`EmaeError` unless ``0 <= z < n_sections``."""
        if not 0 <= z < self.n_sections:
            raise EmaeError(f"{self.path}: section z={z} outside 0..{self.n_sections - 1}")

    def check_patch(self, y: int, x: int, size: int) -> None:
        """Raise an :class:`EmaeError` unless the ``(size, size)`` patch at ``(y, x)`` fits."""
        h, w = self.yx_shape
        if y < 0 or x < 0 or y + size > h or x + size > w:
            raise EmaeError(
                f"{self.path}: patch of size {size} at y={y}, x={x} crosses the border of an "
                f"image of {h}x{w}"
            )

    def section(self, z: int) -> np.ndarray:
        """Read the whole 2D section ``z`` as ``(H, W)``; ``z`` must be 0 for a ``"YX"`` image."""
        if self.axes == "YX":
            if z != 0:
                raise EmaeError(f"{self.path}: a 2D image has only section 0, got z={z}")
            return self[:, :]
        self.check_section(z)
        return self[z, :, :]

    def read_patch(self, z: int, y: int, x: int, size: int) -> np.ndarray:
        """Read the ``(size, size)`` patch whose top-left corner is ``(y, x)`` in section ``z``."""
        self.check_patch(y, x, size)
        if self.axes == "YX":
            return self[y : y + size, x : x + size]
        return self[z, y : y + size, x : x + size]

    def __repr__(self) -> str:
        return (
            f"Image(path={self.path!r}, axes={self.axes!r}, shape={self.shape}, dtype={self.dtype})"
        )
