"""The plain files every kind of model folder shares, and how they are read and written.

Both the autoencoder folder (:mod:`emae.folders.autoencoder`) and the classifier folder
(:mod:`emae.folders.classifier`) hold a ``config.json`` header, the model's weights in
``model.safetensors`` and the intensity normalization in ``normalization.json``. This module
holds those file names, the JSON and safetensors readers (which never unpickle anything), the
check of the ``emae_version`` in a header, and the tensor-by-tensor loading of the weights.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

import emae
from emae.errors import EmaeError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
NORMALIZATION = "normalization.json"
#: Files that look like pickled checkpoints; named in errors, never opened.
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


def is_bundle(path: Path) -> bool:
    """Whether ``path`` is an emae model folder (the only kind of folder a save replaces)."""
    return (Path(path) / CONFIG).is_file()


#: What ``overwrite=True`` may replace: model folders, never other data.
BUNDLE_ONLY: dict[str, Any] = {"replaceable": is_bundle, "kind": "an emae model folder"}


def json_value(value: Any, what: str) -> Any:
    """``value`` after a JSON round trip (tuples become lists), or an error naming ``what``."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise EmaeError(
            f"{what} must be plain JSON (dicts, lists, str, finite numbers): {exc}"
        ) from None


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON (no NaN or infinity) to ``path``."""
    path.write_text(json.dumps(value, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    """The JSON value in ``path``, or an error naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EmaeError(f"{path}: not readable as JSON ({exc})") from None


def check_folder(path: Path) -> None:
    """Refuse a ``path`` that is not a folder holding a ``config.json``."""
    if not path.is_dir():
        raise EmaeError(f"{path}: model folder not found")
    if not (path / CONFIG).is_file():
        raise EmaeError(f"{path}: not an emae model folder (no {CONFIG})")


def _release(version: str) -> tuple[int, ...] | None:
    """The compatibility series of a version: ``(major,)``, or ``(0, minor)`` before 1.0."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        return None
    major, minor = int(match[1]), int(match[2])
    return (major,) if major else (0, minor)


#: The layout version of model folders this emae writes and reads (``"format"`` in config.json).
FORMAT = 1


def check_kind(header: Mapping[str, Any], kind: str, where: Path) -> None:
    """Refuse a folder of another kind (``"autoencoder"``, ``"classifier"``) or a newer format.

    Folders written before the ``kind`` and ``format`` keys were recorded are autoencoders
    (classifiers always had ``kind``) of format 1.
    """
    found = header.get("kind", "autoencoder")
    if found != kind:
        what = {"classifier": "emae finetune", "autoencoder": "emae pretrain"}.get(kind, "emae")
        raise EmaeError(f"{where}: a {found} folder, not an {kind} one; make one with {what}")
    version = header.get("format", 1)
    if not isinstance(version, int) or version > FORMAT:
        raise EmaeError(
            f"{where}: model folder format {version!r}, newer than this emae reads "
            f"({FORMAT}); upgrade emae"
        )


def check_version(saved: Any, where: Path) -> None:
    """Warn when the folder was written by a newer release series than this emae."""
    ours = _release(emae.__version__)
    theirs = _release(saved) if isinstance(saved, str) else None
    if theirs is None:
        warnings.warn(f"{where}: unrecognized emae_version {saved!r}; loading anyway", stacklevel=3)
    elif ours is not None and theirs > ours:
        warnings.warn(
            f"{where}: written by emae {saved}, newer than this emae {emae.__version__}; "
            f"upgrade emae if loading fails or results look wrong",
            stacklevel=3,
        )


def read_tensors(path: Path, load: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """Tensors of a safetensors file through ``load``; a clear error for anything else."""
    try:
        return load(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise EmaeError(
            f"{path}: not a valid safetensors file ({exc}); emae loads weights only "
            f"from safetensors and never unpickles files"
        ) from None


def check_state(expected: Mapping[str, torch.Tensor], found: Mapping[str, Any], where: str) -> None:
    """Same tensor names and shapes as the freshly built model, or an error naming the first."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise EmaeError(
            f"{where}: weights do not match the model: missing tensors "
            f"{missing[:5]}, unexpected tensors {unexpected[:5]}"
        )
    for name, tensor in expected.items():
        if tuple(found[name].shape) != tuple(tensor.shape):
            raise EmaeError(
                f"{where}: tensor {name!r} has shape {tuple(found[name].shape)}, the "
                f"model expects {tuple(tensor.shape)}"
            )


def load_weights(path: Path, model: nn.Module) -> nn.Module:
    """Load ``path/model.safetensors`` into ``model``, checked tensor by tensor; eval mode."""
    weights = path / WEIGHTS
    if not weights.is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        extra = f"; {', '.join(pickles)} not loaded (emae never unpickles files)" if pickles else ""
        raise EmaeError(f"{path}: weights file {WEIGHTS} is missing{extra}")
    state = read_tensors(weights, safetensors.torch.load_file)
    check_state(model.state_dict(), state, str(weights))
    model.load_state_dict(state)
    return model.eval()
