"""What an ``emae detect`` run has finished, in a few files per section.

A run of a terabyte volume has millions of chunks; one file per chunk in one folder is slow to
list and to create on a network file system. The done-state lives in ``OUT.zarr/emae_done/``::

    z{z}/z{z}_y{y0}_x{x0}.npz   a chunk's record (its QC numbers and component pieces), written by
                                the chunk's task after its region of the map
    z{z}.npz                    the section's manifest, written once all its chunks are done: their
                                QC numbers, the section's merged detections and which detection
                                each chunk's regions belong to; the section's folder is then removed
    z{z}.labels.json            the section's detections are painted into ``labels/`` (from id
                                ``first_id``)

A finished run keeps two small files per section (a 1,192-section volume of 19,072 chunks:
2,384 files), and a resumed run lists the top folder once and the folders of the sections in
progress only. Every file is written atomically and read without unpickling; an unreadable one
is a one-line error that names it and says what to do.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emae.errors import EmaeError
from emae.io.atomic import atomic_file
from emae.volume.components import ChunkComponents

if TYPE_CHECKING:
    from emae.volume.plan import Todo

DONE = "emae_done"
#: The end of the name of a section's mark that it is painted into the label images.
LABELS_MARK = ".labels.json"
#: Position keys every chunk's QC numbers hold (integers).
POSITION = ("z", "y0", "x0", "height", "width")
#: Arrays of component piece ``i`` in a chunk record, besides ``stats_i``.
_PIECE = ("first_row", "last_row", "first_col", "last_col", "class")
_BROKEN = (OSError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile, zlib.error)


def section_folder(out: str | Path, z: int) -> Path:
    """The folder of section ``z``'s chunk records while the section is in progress."""
    return Path(out) / DONE / f"z{z}"


def manifest_path(out: str | Path, z: int) -> Path:
    """Section ``z``'s manifest: written once all its chunks are done."""
    return Path(out) / DONE / f"z{z}.npz"


def painted_path(out: str | Path, z: int) -> Path:
    """Section ``z``'s mark that its detections are painted into ``labels/``."""
    return Path(out) / DONE / f"z{z}{LABELS_MARK}"


def chunk_record_path(out: str | Path, name: str, z: int) -> Path:
    """The record of chunk ``name`` (``z{z}_y{y0}_x{x0}``) of section ``z``."""
    return section_folder(out, z) / f"{name}.npz"


def _save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # No sweep: it would list a folder of many records at every write.
    with atomic_file(path, overwrite=True, sweep=False) as tmp:
        with tmp.open("wb") as f:
            np.savez(f, **arrays)


def _unreadable(path: Path, exc: BaseException, what: str) -> EmaeError:
    reason = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
    if "pickle" in reason:  # numpy's advice to unpickle it is not ours to give
        reason = "not an .npz archive of arrays"
    return EmaeError(
        f"{path}: unreadable done marker ({reason or type(exc).__name__}); delete it and "
        f"rerun emae detect to map {what} again"
    )


def write_chunk_record(
    out: str | Path, name: str, qc: dict[str, Any], pieces: list[ChunkComponents]
) -> Path:
    """Write a chunk's record: its QC numbers (``qc``, with :data:`POSITION`) and pieces."""
    arrays: dict[str, np.ndarray] = {"qc": np.array(json.dumps(qc))}
    for i, p in enumerate(pieces):
        arrays.update(
            {
                f"stats_{i}": p.stats,
                f"first_row_{i}": p.first_row,
                f"last_row_{i}": p.last_row,
                f"first_col_{i}": p.first_col,
                f"last_col_{i}": p.last_col,
                f"class_{i}": np.array(p.class_index),
            }
        )
    path = chunk_record_path(out, name, int(qc["z"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(path, arrays)
    return path


def _parse_record(f: Any) -> tuple[dict[str, Any], list[ChunkComponents]]:
    """The contents of an open record; KeyError, ValueError or TypeError when it is none."""
    qc = json.loads(str(f["qc"]))
    if not isinstance(qc, dict) or not all(isinstance(qc.get(k), int) for k in POSITION):
        raise ValueError(f"its QC record lacks the chunk position {list(POSITION)}")
    if not all(isinstance(v, (int, float)) for v in qc.values()):
        raise ValueError("its QC numbers are not all numbers")
    n = sum(1 for k in f.files if k.startswith("stats_"))
    pieces = []
    for i in range(n):
        stats = np.asarray(f[f"stats_{i}"])
        if stats.ndim != 2 or stats.shape[1] != 9:
            raise ValueError(f"stats_{i} has shape {stats.shape}, expected (n, 9)")
        first_row, last_row, first_col, last_col, class_index = (f[f"{k}_{i}"] for k in _PIECE)
        z, y0, x0 = qc["z"], qc["y0"], qc["x0"]
        pieces.append(
            ChunkComponents(
                z, y0, x0, stats, first_row, last_row, first_col, last_col, int(class_index)
            )
        )
    return qc, pieces


def read_chunk_record(path: str | Path) -> tuple[dict[str, Any], list[ChunkComponents]]:
    """The QC numbers and component pieces of a done chunk (never unpickles).

    Raises
    ------
    EmaeError
        One line naming the record when it is truncated, foreign or missing, and saying to
        delete it and rerun ``emae detect``, which then maps that chunk again.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            qc, pieces = _parse_record(f)
        chunk = f"z{qc['z']}_y{qc['y0']}_x{qc['x0']}"
        if path.stem != chunk:
            raise ValueError(f"it holds chunk {chunk}")
    except _BROKEN as exc:
        raise _unreadable(path, exc, "that chunk") from None
    return qc, pieces


@dataclass
class Manifest:
    """What a finished section holds.

    Attributes
    ----------
    tiles
        The QC numbers of its chunks, row-major (dicts with :data:`POSITION` and the numbers).
    detections
        ``(n, len(TABLE))`` float64 rows of its merged detections, in the column order of
        :data:`emae.volume.sections.TABLE`, ``id`` numbered ``1..n`` within the section.
    pieces
        ``(k, 3)`` int64: ``y0``, ``x0`` and class index of each component piece.
    components
        The detection index (``0..n-1``) of each piece's local labels ``1..m``, one array per
        piece.
    """

    tiles: list[dict[str, Any]]
    detections: np.ndarray
    pieces: np.ndarray
    components: list[np.ndarray]


def write_manifest(out: str | Path, z: int, manifest: Manifest) -> Path:
    """Write section ``z``'s manifest atomically."""
    sizes = np.array([len(c) for c in manifest.components], dtype=np.int64)
    flat = np.concatenate([*manifest.components, np.zeros(0, np.int64)]).astype(np.int64)
    path = manifest_path(out, z)
    _save(
        path,
        {
            "tiles": np.array(json.dumps(manifest.tiles)),
            "detections": manifest.detections.astype(np.float64),
            "pieces": manifest.pieces.astype(np.int64).reshape(-1, 3),
            "sizes": sizes,
            "components": flat,
        },
    )
    return path


def read_manifest(out: str | Path, z: int, *, pieces: bool = True) -> Manifest:
    """Section ``z``'s manifest (``pieces=False`` leaves the pieces empty: the reports need
    only the tiles and the detections); a one-line :class:`EmaeError` when unreadable."""
    path = manifest_path(out, z)
    try:
        with np.load(path, allow_pickle=False) as f:
            tiles = json.loads(str(f["tiles"]))
            if not isinstance(tiles, list) or not all(isinstance(t, dict) for t in tiles):
                raise ValueError("its tiles are not a list of QC records")
            if any(t.get("z") != z for t in tiles):
                raise ValueError(f"it holds tiles of another section than z={z}")
            detections = np.asarray(f["detections"])
            where = np.zeros((0, 3), np.int64)
            components: list[np.ndarray] = []
            if pieces:
                where = np.asarray(f["pieces"])
                sizes = np.asarray(f["sizes"])
                components = np.split(np.asarray(f["components"]), np.cumsum(sizes)[:-1])
                if len(sizes) == 0:
                    components = []
    except _BROKEN as exc:
        raise _unreadable(path, exc, "that section") from None
    return Manifest(tiles, detections, where, components)


def read_painted(out: str | Path, z: int) -> int | None:
    """The first id section ``z`` was painted from, or None when it is not painted."""
    try:
        return int(json.loads(painted_path(out, z).read_text())["first_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_next_id(out: str | Path, z: int) -> int | None:
    """The first id after painted section ``z``'s detections (its first id plus their
    number), or None when it is not painted or its mark does not say (marks of earlier emae)."""
    try:
        mark = json.loads(painted_path(out, z).read_text())
        return int(mark["first_id"]) + int(mark["count"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def unmark_from(out: str | Path, z: int) -> int:
    """Remove the painted marks of section ``z`` and every later section (one listing);
    returns how many were removed."""
    removed = 0
    for entry in os.scandir(Path(out) / DONE):
        name = entry.name
        if name.startswith("z") and name.endswith(LABELS_MARK):
            k = name[1 : -len(LABELS_MARK)]
            if k.isdigit() and int(k) >= z:
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
    return removed


def write_painted(out: str | Path, z: int, first_id: int, count: int) -> None:
    """Mark section ``z`` as painted from id ``first_id``, with its ``count`` detections."""
    with atomic_file(painted_path(out, z), overwrite=True, sweep=False) as tmp:
        tmp.write_text(json.dumps({"first_id": first_id, "count": count}))


@dataclass
class DoneState:
    """What a run has finished: sections with a manifest, the done chunks of the others, and
    the sections painted into the label images."""

    finished: set[int]
    chunks: dict[int, set[str]]
    painted: set[int] = dataclasses.field(default_factory=set)

    def chunk_done(self, z: int, name: str) -> bool:
        """Whether chunk ``name`` of section ``z`` is done."""
        return z in self.finished or name in self.chunks.get(z, set())

    def todo(self, sections: Mapping[int, Sequence[Any]]) -> Todo:
        """The chunks of ``sections`` (``{z: chunks}``, each with ``z`` and ``name``) not done,
        in order (:class:`~emae.volume.plan.Todo`: made as they are iterated)."""
        from emae.volume.plan import Todo  # plan -> chunks -> done: imported here

        return Todo(sections, self)


def scan(out: str | Path, sections: Iterable[int] | None = None) -> DoneState:
    """The done-state of ``out``: one listing of ``emae_done`` and one per section in progress
    (of ``sections`` when given)."""
    root = Path(out) / DONE
    finished, painted, folders = set(), set(), []
    wanted = None if sections is None else set(sections)
    if root.is_dir():
        for entry in os.scandir(root):
            name = entry.name
            if not name.startswith("z"):
                continue
            if entry.is_dir() and name[1:].isdigit():
                folders.append(int(name[1:]))
            elif name.endswith(".npz") and name[1:-4].isdigit():
                finished.add(int(name[1:-4]))
            elif name.endswith(LABELS_MARK) and name[1 : -len(LABELS_MARK)].isdigit():
                painted.add(int(name[1 : -len(LABELS_MARK)]))
    chunks = {}
    for z in folders:
        if z in finished or (wanted is not None and z not in wanted):
            continue
        listed = os.scandir(section_folder(out, z))
        chunks[z] = {e.name[:-4] for e in listed if e.name.endswith(".npz")}
    return DoneState(finished, chunks, painted)


def move_legacy_records(out: str | Path) -> int:
    """Move chunk records written before the section folders existed (one folder of
    ``emae_done/z{z}_y{y0}_x{x0}.npz``, the same records) into their sections' folders, so
    that a run started by an earlier emae resumes without mapping them again; returns how many
    were moved."""
    root = Path(out) / DONE
    moved = 0
    if not root.is_dir():
        return 0
    for entry in os.scandir(root):
        name = entry.name
        if not (entry.is_file() and name.startswith("z") and name.endswith(".npz")):
            continue
        z, _, rest = name[1:-4].partition("_")
        if z.isdigit() and rest.startswith("y"):
            target = chunk_record_path(out, name[:-4], int(z))
            target.parent.mkdir(exist_ok=True)
            os.replace(entry.path, target)
            moved += 1
    return moved


def chunks_done(out: str | Path, shape: tuple[int, int, int], chunk: int) -> tuple[int, int]:
    """``(done, planned)`` chunks of a detect store of volume ``shape`` and ``chunk`` size."""
    z, h, w = shape
    per_section = -(-h // chunk) * -(-w // chunk)
    state = scan(out)
    done = per_section * len({s for s in state.finished if 0 <= s < z})
    done += sum(len(names) for s, names in state.chunks.items() if 0 <= s < z)
    return done, z * per_section
