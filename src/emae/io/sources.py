"""Image sources: the strings that :func:`~emae.io.readers.open_image` accepts, and finding them.

A source is a TIFF, PNG, JPEG or ``.npy`` file, a zarr array or OME-Zarr image folder, an HDF5
dataset written ``file.h5:/path/to/dataset`` (:func:`split_source` takes it apart), or a folder of
2D sections (:mod:`emae.io.sections`). :func:`expand_inputs` turns files, folders and glob
patterns given on a command line into a list of sources.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from pathlib import Path

from emae.errors import EmaeError
from emae.io.ngff import is_zarr
from emae.io.sections import SECTION_SUFFIXES, natural_key, section_files

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
SUPPORTED = ", ".join((*SECTION_SUFFIXES, *HDF5_SUFFIXES, ".npy", ".zarr", "a folder of sections"))
_HDF5_SOURCE = re.compile(r"^(.*?\.(?:h5|hdf5|hdf))(?::(.*))?$", re.IGNORECASE)


def split_source(source: str | Path) -> tuple[str, str | None]:
    """Split an HDF5 source ``file.h5:/dataset`` into its file and its dataset.

    Parameters
    ----------
    source
        Any source; only one whose file ends in ``.h5``, ``.hdf5`` or ``.hdf`` (any case) is split.

    Returns
    -------
    path, dataset
        ``("file.h5", "/dataset")`` for ``file.h5:/dataset``; ``("file.h5", None)`` for
        ``file.h5``; ``(source, None)`` for anything that is not an HDF5 source. ``dataset`` is
        the text after the first colon following the HDF5 file name, ``""`` for ``file.h5:``.
    """
    text = str(source)
    match = _HDF5_SOURCE.match(text)
    return (match.group(1), match.group(2)) if match else (text, None)


def _expand_path(text: str, from_glob: bool) -> list[str]:
    file, _ = split_source(text)
    path, hdf5 = Path(file), file.lower().endswith(HDF5_SUFFIXES)
    if not path.exists():
        raise EmaeError(f"{text}: no such file or folder")
    if path.is_file():
        if hdf5 or path.suffix.lower() in (*SECTION_SUFFIXES, ".npy"):
            return [text]
        if from_glob:
            return []
        raise EmaeError(f"{text}: unsupported file type {path.suffix!r}; supported: {SUPPORTED}")
    if is_zarr(path) or path.suffix.lower() == ".zarr" or section_files(path):
        return [text]
    if from_glob:
        return []
    raise EmaeError(
        f"{text}: folder holds no zarr store and no {', '.join(SECTION_SUFFIXES)} files"
    )


def expand_inputs(patterns: Sequence[str | Path]) -> list[str]:
    """Turn files, folders and glob patterns into sources for :func:`~emae.io.readers.open_image`.

    Each file, zarr store and ``file.h5:/dataset`` is one source. A folder that holds 2D
    TIFF/PNG/JPEG files is one ``"ZYX"`` stack source (other files in it are ignored); to treat
    the files of a folder as separate images, pass a glob such as ``"folder/*.tif"``. Glob matches
    are sorted naturally; matches of unsupported types are skipped. Duplicates are dropped,
    keeping the first occurrence.

    Raises
    ------
    EmaeError
        When a path does not exist, has an unsupported type, or a glob matches no source.
    """
    sources: list[str] = []
    for pattern in patterns:
        text = str(pattern)
        if re.search(r"[*?[]", text):
            matches = sorted(glob.glob(text), key=natural_key)
            found = [s for m in matches for s in _expand_path(m, from_glob=True)]
            if not found:
                raise EmaeError(f"{text}: pattern matches no image file, zarr store or folder")
            sources.extend(found)
        else:
            sources.extend(_expand_path(text, from_glob=False))
    return list(dict.fromkeys(sources))
