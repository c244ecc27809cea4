"""What emae wrote, and what it must never touch: provenance marks and the input/output check.

Every image emae writes carries a mark naming what it is: TIFFs in their JSON description
(``{"axes": ..., "emae": {"kind": ..., "version": ...}}``, which tifffile reads back as
``shaped_metadata``), OME-Zarr images in the root attributes (``"emae": {...}``). A command
given ``--overwrite`` replaces an existing output only when it bears the mark of the same kind
(:func:`is_emae_image`), so a mistyped ``--out`` never deletes a user's acquisition, whatever
its format.

:func:`check_not_input` refuses an output that is, contains or lies inside one of the inputs
of the same command: a map written over its own source, a run folder written into the model it
is trained from, a store inside the volume being mapped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from emae.errors import EmaeError
from emae.io.sources import split_source

#: Key of the mark in TIFF descriptions and zarr attributes.
MARK = "emae"


def mark(kind: str) -> dict[str, Any]:
    """The mark stored with an output of ``kind`` (e.g. ``"anomaly map"``)."""
    from emae import __version__

    return {MARK: {"kind": kind, "version": __version__}}


def _tiff_mark(path: Path) -> Any:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            metadata = tif.shaped_metadata or ({},)
    except (tifffile.TiffFileError, OSError, ValueError, EOFError):
        return None
    return metadata[0].get(MARK)


def _zarr_mark(path: Path) -> Any:
    for name in (".zattrs", "zarr.json"):
        file = path / name
        if file.is_file():
            try:
                attrs = json.loads(file.read_text())
            except (OSError, ValueError):
                return None
            attrs = attrs.get("attributes", attrs) if name == "zarr.json" else attrs
            return attrs.get(MARK) if isinstance(attrs, dict) else None
    return None


def is_emae_image(path: str | Path, kind: str) -> bool:
    """Whether ``path`` is a TIFF or zarr image that emae wrote as ``kind``.

    Parameters
    ----------
    path
        A ``.tif``/``.tiff`` file or a zarr folder.
    kind
        The kind given to :func:`mark` when it was written.
    """
    path = Path(path)
    found = _zarr_mark(path) if path.is_dir() else _tiff_mark(path)
    return isinstance(found, dict) and found.get("kind") == kind


def _paths(inputs: Iterable[str | Path | None]) -> list[Path]:
    paths = []
    for source in inputs:
        if source is None or str(source) == "":
            continue
        file, _ = split_source(str(source))
        paths.append(Path(file).expanduser().resolve())
    return paths


def check_not_input(out: str | Path, inputs: Iterable[str | Path | None]) -> None:
    """Refuse an output path that is, contains or lies inside one of ``inputs``.

    Parameters
    ----------
    out
        The file or folder a command is about to write (or replace).
    inputs
        Everything the command reads: image sources (``file.h5:/dataset`` counts as its file),
        model folders, CSV files. ``None`` entries are ignored. Symbolic links are resolved.

    Raises
    ------
    EmaeError
        Naming the output and the input it would overwrite.
    """
    target = Path(out).expanduser().resolve()
    for source in _paths(inputs):
        if target == source:
            how = "is"
        elif source in target.parents:
            how = "lies inside"
        elif target in source.parents:
            how = "contains"
        else:
            continue
        raise EmaeError(
            f"{out}: the output {how} the input {source}; write the output somewhere else so "
            "the input stays untouched"
        )
