"""2D sections, one per file of a folder or per page of a TIFF, as a lazy ``(Z, H, W)`` stack.

Section files are TIFF, PNG or JPEG, sorted naturally by name (``s2.tif`` before ``s10.tif``);
hidden files and files of other types are ignored. A TIFF whose pages were saved as separate
series (one per page) is stacked in page order. Every section must have the same shape and
dtype, which is checked from the file or page headers when the stack is opened; pixels are read
one section at a time, only when a region is requested.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emae.errors import EmaeError
from emae.io.image import Image

TIFF_SUFFIXES = (".tif", ".tiff")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
SECTION_SUFFIXES = TIFF_SUFFIXES + PIL_SUFFIXES


def natural_key(name: str) -> list[Any]:
    """Sort key treating digit runs as numbers: ``s2.tif`` sorts before ``s10.tif``."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def section_files(folder: Path) -> list[str]:
    """The section files in ``folder`` (see the module docstring), in natural name order."""
    files = [
        str(p)
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SECTION_SUFFIXES
    ]
    return sorted(files, key=lambda f: natural_key(Path(f).name))


def _open_section(path: str) -> Image:
    # Sections are files that open_image reads; imported here because readers imports this module.
    from emae.io.readers import open_image

    return open_image(path)


def _section_header(path: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a 2D section file, read from its header where possible."""
    if path.lower().endswith(PIL_SUFFIXES):
        from PIL import Image as PILImage

        try:
            with PILImage.open(path) as im:
                mode, (w, h) = im.mode, im.size
        except OSError as exc:
            raise EmaeError(f"{path}: not a readable PNG/JPEG image ({exc})") from exc
        dtypes = {"I": "int32", "I;16": "uint16", "I;16B": "uint16", "F": "float32"}
        return (h, w), np.dtype(dtypes.get(mode, "uint8"))
    image = _open_section(path)
    return image.shape, image.dtype


class _Sections:
    """A ``(Z, H, W)`` array-like; ``_read(z, y, x)`` returns region ``[y, x]`` of section z."""

    shape: tuple[int, int, int]
    dtype: np.dtype

    def _read(self, z: int, y: Any, x: Any) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, key: tuple[Any, Any, Any]) -> np.ndarray:
        z, y, x = key
        if isinstance(z, (int, np.integer)):
            return self._read(int(z), y, x)
        zs = range(self.shape[0])[z]
        if len(zs) == 0:
            template = np.empty(self.shape[1:], dtype=self.dtype)[y, x]
            return np.empty((0, *template.shape), dtype=self.dtype)
        return np.stack([self._read(i, y, x) for i in zs])


class SectionFolder(_Sections):
    """A ``(Z, H, W)`` array-like over 2D image files, one per section, read on demand.

    Parameters
    ----------
    files
        Section files in Z order. Every file must hold a 2D image of the same shape and dtype.
    path
        The folder, for error messages.
    """

    def __init__(self, files: Sequence[str], path: str) -> None:
        shape, dtype = _section_header(files[0])
        for f in files:
            f_shape, f_dtype = _section_header(f) if f != files[0] else (shape, dtype)
            if len(f_shape) != 2 or f_shape != shape or f_dtype != dtype:
                raise EmaeError(
                    f"{f}: section of shape {f_shape} and dtype {f_dtype} differs from the first "
                    f"section of {path} ({files[0]}: shape {shape}, dtype {dtype})"
                )
        self.files, self.path = list(files), path
        self.shape = (len(self.files), *shape)
        self.dtype = dtype
        self.chunks = (1, *shape)

    def _read(self, z: int, y: Any, x: Any) -> np.ndarray:
        data = _open_section(self.files[z])[y, x]
        if data.dtype != self.dtype:
            raise EmaeError(f"{self.files[z]}: dtype {data.dtype} differs from {self.dtype}")
        return data


class TiffPages(_Sections):
    """A ``(Z, H, W)`` array-like over the series of one open TIFF, one 2D page each.

    Writers that store every page as its own series (several ``TiffWriter.write`` calls with
    shape metadata, or one OME image per plane) leave a stack that tifffile does not describe as
    one series. It is stacked only when every series is a single 2D page, all of one shape and
    dtype; anything else (a thumbnail beside the image, RGB pages, mixed sizes) is refused.
    Each read decodes only the tiles or strips of one page that the region touches; the caller
    keeps the TIFF file open for as long as the stack is used.

    Parameters
    ----------
    series
        ``tifffile`` series (or one pyramid level of each) in Z order.
    path
        The TIFF file, for error messages.
    """

    def __init__(self, series: Sequence[Any], path: str) -> None:
        pages = [s.keyframe for s in series]
        first = (pages[0].shape, pages[0].dtype)
        if any(
            len(s.pages) != 1 or len(p.shape) != 2 or p.dtype is None or (p.shape, p.dtype) != first
            for s, p in zip(series, pages, strict=True)
        ):
            kinds: dict[str, int] = {}
            for s in series:
                kind = f"{'x'.join(str(d) for d in s.shape if d > 1)} {s.dtype}"
                kinds[kind] = kinds.get(kind, 0) + 1
            found = ", ".join(f"{n} x {kind}" for kind, n in kinds.items())
            raise EmaeError(
                f"{path}: TIFF holds {len(series)} image series ({found}); several series are "
                "read only as a stack of single 2D pages of one shape and dtype"
            )
        self.pages = pages
        self.shape = (len(pages), *first[0])
        self.dtype = np.dtype(first[1])
        self.chunks = (1, *tuple(pages[0].chunks)[-2:])

    def _read(self, z: int, y: Any, x: Any) -> np.ndarray:
        import zarr

        return zarr.open_array(store=self.pages[z].aszarr(), mode="r")[y, x]
