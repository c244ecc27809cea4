"""Checksums of a model folder's weight files, written on save and checked on load.

``config.json`` holds the sha256 of every ``.safetensors`` file of a folder, autoencoder or
classifier, under :data:`CHECKSUMS`: weights replaced by other numbers after emae wrote them are
refused, not silently used. Folders written before emae kept checksums load with a warning.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emae.errors import EmaeError
from emae.folders.files import CONFIG, WEIGHTS

logger = logging.getLogger(__name__)

#: Key of ``config.json`` holding ``{file name: sha256 hex}`` of the folder's ``.safetensors``.
CHECKSUMS = "checksums"


def sha256(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_checksums(folder: Path) -> dict[str, str]:
    """``{name: sha256}`` of every ``.safetensors`` file in ``folder`` (a folder being written)."""
    return {p.name: sha256(p) for p in sorted(folder.glob("*.safetensors"))}


@functools.cache
def _warn_unchecked(folder: str) -> None:
    """Warn once per folder (per process) that its weights cannot be checked."""
    logger.warning(
        "%s: written by an emae without checksums; its weights are loaded unchecked "
        "(save it again to add them)",
        folder,
    )


def check_checksums(path: Path, header: Mapping[str, Any]) -> None:
    """Refuse a model folder whose ``.safetensors`` files differ from the checksums it lists.

    Every ``.safetensors`` file in ``path`` must be listed in ``header[CHECKSUMS]`` with its
    sha256, and every listed file must exist, except the weights (their loader names a missing
    weights file with any pickles beside it). A header without checksums (a folder written
    before emae kept them) is loaded unchecked, with a warning once per folder.
    """
    sums = header.get(CHECKSUMS)
    if sums is None:
        _warn_unchecked(str(path))
        return
    if not isinstance(sums, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and Path(k).name == k for k, v in sums.items()
    ):
        raise EmaeError(f"{path / CONFIG}: {CHECKSUMS} must map file names to sha256 strings")
    present = {p.name for p in path.glob("*.safetensors") if p.is_file()}
    unlisted = sorted(present - set(sums))
    if unlisted:
        raise EmaeError(
            f"{path}: {unlisted[0]} has no checksum in {CONFIG}; the folder was modified after "
            f"emae wrote it"
        )
    for name, expected in sorted(sums.items()):
        if name not in present:
            if name == WEIGHTS:
                continue
            raise EmaeError(f"{path}: {name} is missing ({CONFIG} lists its checksum)")
        if sha256(path / name) != expected:
            raise EmaeError(
                f"{path}: {name} does not match the checksum in {CONFIG}; the folder was "
                f"modified after emae wrote it"
            )
