"""The embedding store: a folder of Parquet parts that pandas, pyarrow or polars read as one table.

Layout of ``EMB.parquet/`` (written by ``emae embed``)::

    _emae_embed.json      what the vectors are (model identity, pooling, patch size, dims),
                          the settings and the number of parts planned
    _emae_done.json       written last: rows and seconds (an embedding without it is unfinished)
    part-00000.parquet    one part of rows: source, z, y, x, label, [feat_*], [anomaly],
    part-00001.parquet    [detection], vector (fixed-size list of float32)
    ...

Names starting with ``_`` or ``.`` are skipped by Parquet dataset readers, so
``pandas.read_parquet("EMB.parquet")`` gives the whole table (``numpy.stack(df.vector)`` the
``(N, D)`` vectors). Each part is written atomically; a part that exists is done.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emae.errors import EmaeError
from emae.io.atomic import atomic_file, check_writable

META = "_emae_embed.json"
DONE = "_emae_done.json"
VECTOR = "vector"


def pyarrow_modules() -> tuple[Any, Any]:
    """``(pyarrow, pyarrow.parquet)``, or one line saying how to install them."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise EmaeError(
            "embeddings are Parquet files and need pyarrow: pip install 'emae[latent]'"
        ) from None
    return pa, pq


def part_path(store: Path, k: int) -> Path:
    """The file of part ``k``."""
    return store / f"part-{k:05d}.parquet"


def write_part(store: Path, k: int, rows: Mapping[str, list[Any]], vectors: np.ndarray) -> None:
    """Write part ``k``: the row columns and the ``(n, D)`` float32 vectors, atomically."""
    pa, pq = pyarrow_modules()
    columns = {name: pa.array(values) for name, values in rows.items()}
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
    columns[VECTOR] = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    with atomic_file(part_path(store, k), sweep=False) as tmp:
        pq.write_table(pa.table(columns), tmp)


def is_embedding(path: Path) -> bool:
    """Whether ``path`` is an embedding store (the only folder ``emae embed`` replaces)."""
    return (Path(path) / META).is_file()


def read_meta(path: str | Path, *, finished: bool = True) -> dict[str, Any]:
    """The description of an embedding; refuses a folder that is not one, or (``finished``) one
    whose run has not finished."""
    path = Path(path)
    if not (path / META).is_file():
        raise EmaeError(f"{path}: not an embedding of emae embed (no {META})")
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EmaeError(f"{path / META}: not readable as JSON ({exc})") from None
    if not isinstance(meta, dict) or not {"model", "dims", "n_parts"} <= set(meta):
        raise EmaeError(f"{path / META}: not the description of an embedding")
    if "vector" not in meta and meta.get("pooling") in ("levels", "latent"):
        meta["vector"] = meta["pooling"]  # written by emae before the vector option
    if finished and not (path / DONE).is_file():
        raise EmaeError(f"{path}: the embedding is unfinished; run the same emae embed again")
    return meta


def embedding_rows(path: str | Path) -> int:
    """Rows of a finished embedding, as its run recorded them (no part is opened)."""
    read_meta(path)
    try:
        return int(json.loads((Path(path) / DONE).read_text(encoding="utf-8"))["rows"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EmaeError(
            f"{Path(path) / DONE}: not a record of a finished embedding ({exc})"
        ) from None


def feature_names(path: str | Path, prefix: str = "feat_") -> list[str]:
    """The numeric feature columns (``feat_*``) of an embedding, from its first part's schema."""
    _, pq = pyarrow_modules()
    try:
        names = pq.read_schema(part_path(Path(path), 0)).names
    except (OSError, ValueError) as exc:
        raise EmaeError(
            f"{part_path(Path(path), 0)}: not a readable Parquet part ({exc})"
        ) from None
    return [n for n in names if n.startswith(prefix)]


def iter_parts(
    path: str | Path, columns: list[str] | None = None
) -> Iterator[tuple[Any, np.ndarray]]:
    """Each part as ``(pandas.DataFrame of the row columns, (n, D) float32 vectors)``, in order.

    ``columns`` limits the row columns read (all by default); memory holds one part at a time.
    """
    _, pq = pyarrow_modules()
    meta = read_meta(path)
    dims = int(meta["dims"])
    for k in range(int(meta["n_parts"])):
        file = part_path(Path(path), k)
        try:
            table = pq.read_table(file, columns=None if columns is None else [*columns, VECTOR])
        except (OSError, ValueError) as exc:
            raise EmaeError(f"{file}: not a readable Parquet part ({exc})") from None
        vectors = table.column(VECTOR).combine_chunks().flatten().to_numpy()
        frame = table.drop_columns([VECTOR]).to_pandas()
        yield frame, np.asarray(vectors, dtype=np.float32).reshape(len(frame), dims)


def read_embedding(path: str | Path, columns: list[str] | None = None) -> tuple[Any, np.ndarray]:
    """The whole embedding: ``(pandas.DataFrame, (N, D) float32 vectors)``."""
    import pandas as pd

    frames, vectors = [], []
    for frame, v in iter_parts(path, columns):
        frames.append(frame)
        vectors.append(v)
    if not frames:
        raise EmaeError(f"{path}: the embedding holds no rows")
    return pd.concat(frames, ignore_index=True), np.concatenate(vectors)


def differences(previous: Any, meta: dict[str, Any]) -> str:
    """Which settings of a stored embedding differ from this run's, e.g. ``vector: levels ->
    residual`` (a default that changed between versions shows here)."""
    if not isinstance(previous, dict):
        return "unreadable settings"
    flat_old = {**previous, **(previous.get("config") or {})}
    flat_new = {**meta, **meta.get("config", {})}
    changed = [
        f"{key}: {flat_old.get(key)} -> {flat_new.get(key)}"
        for key in sorted(set(flat_old) | set(flat_new))
        if key != "config" and flat_old.get(key) != flat_new.get(key)
    ]
    return ", ".join(changed[:3]) or "other settings"


def start_store(out: Path, meta: dict[str, Any], overwrite: bool) -> bool:
    """Create the store ``out`` for a run of settings ``meta``, or check that it holds this
    run; returns whether it resumes. Replaces only an embedding, and only with ``overwrite``."""
    if (out / META).is_file():
        try:
            previous = json.loads((out / META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if isinstance(previous, dict) and isinstance(previous.get("config"), dict):
            previous["config"].setdefault("precision", "fp32")  # runs from before the option
        if previous == meta and not overwrite:
            return True
        if not overwrite:
            raise EmaeError(f"{out} holds another embedding ({differences(previous, meta)}); "
                            "pass --overwrite to replace it")  # fmt: skip
    check_writable(
        out, overwrite=overwrite, replaceable=is_embedding, kind="an embedding of emae embed"
    )
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    with atomic_file(out / META) as tmp:
        tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return False
