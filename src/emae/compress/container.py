"""The container of ``emae compress``: a zarr group of chunk bitstreams.

Layout of ``OUT.zarr``::

    zarr.json                   a zarr v3 group; its attributes hold the emae mark
                                ({"emae": {"kind": "compressed image", ...}}) and, under
                                "emae_codec", what decoding needs (:func:`container_meta`)
    bitstreams/<z>/y<y0>_x<x0>  one file per chunk of ``chunk x chunk`` pixels of section z:
                                the bytes of :mod:`emae.compress.bitstream`
    done/, sections/            the done-state of the chunk tasks (:mod:`emae.volume.done`);
                                each section's manifest lists its chunks' sizes in bytes

Every chunk is coded on its own, so any region decodes from the chunks it touches alone.
Bitstream files are written atomically, each before its chunk is marked done.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from emae.errors import EmaeError
from emae.io.atomic import atomic_file
from emae.io.provenance import MARK, mark
from emae.volume.chunks import Chunk

KIND = "compressed image"
META = "emae_codec"
FORMAT = 1


def create_container(path: Path, meta: dict[str, Any]) -> None:
    """Create the group of a new container at ``path`` (an empty or absent folder)."""
    import zarr

    zarr.open_group(str(path), mode="w", zarr_format=3, attributes={**mark(KIND), META: meta})
    (path / "bitstreams").mkdir()


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``emae_codec`` attributes of a container; an :class:`EmaeError` if it is none."""
    file = Path(path) / "zarr.json"
    try:
        attrs = json.loads(file.read_text()).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        raise EmaeError(f"{path}: not an emae compressed image (no readable zarr.json)") from None
    found = attrs.get(MARK, {}) if isinstance(attrs, dict) else {}
    if not isinstance(found, dict) or found.get("kind") != KIND or META not in attrs:
        raise EmaeError(f"{path}: not an emae compressed image (written by emae compress)")
    meta = attrs[META]
    if meta.get("format") != FORMAT:
        raise EmaeError(
            f"{path}: container format {meta.get('format')!r}; this emae reads {FORMAT}"
        )
    return meta


def chunk_file(path: str | Path, c: Chunk) -> Path:
    """Where the bitstream of chunk ``c`` lies."""
    return Path(path) / "bitstreams" / str(c.z) / f"y{c.y0}_x{c.x0}"


def write_chunk(path: str | Path, c: Chunk, data: bytes) -> None:
    """Write the bitstream of chunk ``c`` atomically."""
    file = chunk_file(path, c)
    file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(file, overwrite=True, sweep=False) as tmp:
        tmp.write_bytes(data)


def read_chunk(path: str | Path, c: Chunk) -> bytes:
    """The bitstream of chunk ``c``; an :class:`EmaeError` when it is missing."""
    try:
        return chunk_file(path, c).read_bytes()
    except FileNotFoundError:
        raise EmaeError(
            f"{path}: chunk {c.name} is missing (the compression did not finish)"
        ) from None


def parse_region(text: str | None, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """``"z0:z1,y0:y1,x0:x1"`` (``"y0:y1,x0:x1"`` for an image) -> slices within ``shape``.

    An empty bound means the edge (``":,100:200,:"``).

    Raises
    ------
    EmaeError
        For a malformed region, or one that is empty or outside the volume.
    """
    if text is None:
        return tuple(slice(0, s) for s in shape)
    parts = text.split(",")
    if len(parts) != len(shape):
        axes = "z0:z1,y0:y1,x0:x1" if len(shape) == 3 else "y0:y1,x0:x1"
        raise EmaeError(f"--region {text!r}: give {axes} for a volume of shape {tuple(shape)}")
    slices = []
    for part, size in zip(parts, shape, strict=True):
        found = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", part)
        if not found:
            raise EmaeError(f"--region {text!r}: {part!r} is not start:stop")
        start = int(found[1]) if found[1] else 0
        stop = int(found[2]) if found[2] else size
        if not 0 <= start < stop <= size:
            raise EmaeError(
                f"--region {text!r}: {start}:{stop} is empty or outside the volume of shape "
                f"{tuple(shape)}"
            )
        slices.append(slice(start, stop))
    return tuple(slices)
