"""The folder of a fitted latent map (``emae map``): plain JSON and safetensors, never pickle.

Layout::

    MAP/
      config.json        {"kind": "latent-map", "format", "emae_version", "params": the
                          LatentMap's parameters, "embedding": what the vectors are (model
                          identity, pooling, patch size, dims), "checksums"}
      map.safetensors    the learned arrays (:meth:`LatentMap.to_arrays`)
      ...                the tables and figures of :mod:`emae.commands.latent_map`

The map is applied to new data from these arrays alone (:mod:`emae.latent.map`), so loading it
reads JSON and safetensors and unpickles nothing. A file changed after it was written fails its
checksum and is refused in one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.numpy

import emae
from emae.errors import EmaeError
from emae.folders.files import (
    CONFIG,
    FORMAT,
    check_kind,
    check_version,
    json_value,
    read_json,
    read_tensors,
    write_json,
)
from emae.folders.integrity import CHECKSUMS, check_checksums, folder_checksums
from emae.io.atomic import atomic_dir, write_errors
from emae.latent.map import LatentMap

KIND = "latent-map"
ARRAYS = "map.safetensors"


def is_latent_map(path: Path) -> bool:
    """Whether ``path`` is a latent-map folder (the only folder ``emae map`` replaces)."""
    try:
        return read_json(Path(path) / CONFIG).get("kind") == KIND
    except (EmaeError, AttributeError):
        return False


@dataclass(frozen=True)
class MapFolder:
    """A loaded map: the fitted estimator and what its vectors are (``embedding`` of
    :func:`save_latent_map`)."""

    map: LatentMap
    embedding: dict[str, Any]
    path: Path


def save_latent_map(
    path: str | Path,
    fitted: LatentMap,
    embedding: Mapping[str, Any],
    *,
    extra: Callable[[Path], None] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a fitted map as a folder, atomically.

    Parameters
    ----------
    path
        Destination folder; it appears whole or not at all.
    fitted
        A fitted :class:`LatentMap`.
    embedding
        Plain JSON describing the vectors (model identity, pooling, patch size, dims).
    extra
        ``extra(folder)`` writes further files (tables, figures) into the folder being built.
    overwrite
        Replace an existing latent-map folder (nothing else is ever replaced).
    """
    path = Path(path)
    header = {
        "emae_version": emae.__version__,
        "kind": KIND,
        "format": FORMAT,
        "params": json_value(fitted.get_params(), "map parameters"),
        "embedding": json_value(dict(embedding), "embedding"),
    }
    arrays = fitted.to_arrays()
    replace = {"replaceable": is_latent_map, "kind": "an emae latent-map folder"}
    with write_errors(path), atomic_dir(path, overwrite=overwrite, **replace) as tmp:
        safetensors.numpy.save_file(arrays, str(tmp / ARRAYS))
        if extra is not None:
            extra(tmp)
        write_json(tmp / CONFIG, {**header, CHECKSUMS: folder_checksums(tmp)})
    return path


def load_latent_map(path: str | Path) -> MapFolder:
    """Load a folder of :func:`save_latent_map`; one clear line for anything wrong with it."""
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise EmaeError(f"{path}: not a latent-map folder (no {CONFIG}); make one with emae map")
    header = read_json(path / CONFIG)
    if not isinstance(header, dict):
        raise EmaeError(f"{path / CONFIG}: expected a JSON object")
    check_kind(header, KIND, path)
    check_version(header.get("emae_version"), path)
    if CHECKSUMS not in header or ARRAYS not in header[CHECKSUMS]:
        raise EmaeError(f"{path / CONFIG}: no checksum of {ARRAYS}; the folder is incomplete")
    check_checksums(path, header)
    if not (path / ARRAYS).is_file():
        raise EmaeError(f"{path}: {ARRAYS} is missing")
    arrays = read_tensors(path / ARRAYS, safetensors.numpy.load_file)
    params, embedding = header.get("params"), header.get("embedding")
    if not isinstance(params, dict) or not isinstance(embedding, dict):
        raise EmaeError(f"{path / CONFIG}: 'params' and 'embedding' must be JSON objects")
    try:
        fitted = LatentMap.from_arrays(params, arrays)
    except TypeError as exc:
        raise EmaeError(f"{path / CONFIG}: unexpected map parameters ({exc})") from None
    except EmaeError as exc:
        raise EmaeError(f"{path}: {exc}") from None
    return MapFolder(fitted, embedding, path)
