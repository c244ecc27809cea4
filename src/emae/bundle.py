"""The trained-model folder: plain files that load without unpickling anything.

A folder written by :func:`save_bundle` holds::

    config.json          {"emae_version", "model": registry name, "model_kwargs", "run"}
    model.safetensors    the model's state dict (contiguous CPU tensors)
    normalization.json   the PercentileNormalizer the model was trained with
    scoring.json         how anomaly maps are computed: score name and parameters (optional)
    scoring.safetensors  arrays of fitted scoring statistics (optional)
    threshold.json       the decision threshold and how it was chosen (optional)

Everything is JSON or safetensors, read with ``json`` and ``safetensors``; :func:`load_bundle`
never calls ``torch.load`` or ``pickle``, so a folder from an untrusted source cannot run code.
A ``model.pt`` or other pickle beside the files is ignored, and one renamed to
``model.safetensors`` is refused as corrupt. :func:`update_bundle` replaces the scoring and
threshold files of an existing folder (after fitting statistics or choosing a threshold).
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

import emae
from emae.errors import EmaeError
from emae.io.atomic import atomic_dir, atomic_file
from emae.models import build_model
from emae.normalization import PercentileNormalizer
from emae.thresholds import Threshold

logger = logging.getLogger(__name__)

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
NORMALIZATION = "normalization.json"
SCORING = "scoring.json"
SCORING_ARRAYS = "scoring.safetensors"
THRESHOLD = "threshold.json"
#: Files that look like pickled checkpoints; named in errors, never opened.
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


@dataclass(frozen=True)
class Bundle:
    """A trained model as loaded from its folder.

    Attributes
    ----------
    model
        The registry model with its weights, in eval mode, on the CPU.
    model_name, model_kwargs
        Registry name and constructor arguments (JSON values: tuples come back as lists).
    normalizer
        Maps raw intensities to the model's input range.
    config
        The run configuration as saved (plain JSON).
    scoring
        Score name and parameters (``{}`` when none were saved).
    arrays
        Named arrays of fitted scoring statistics (``{}`` when none were saved).
    threshold
        :meth:`emae.thresholds.Threshold.to_dict` of the decision threshold, or ``None``.
    emae_version
        Version of emae that wrote the folder.
    """

    model: nn.Module
    model_name: str
    model_kwargs: dict[str, Any]
    normalizer: PercentileNormalizer
    config: dict[str, Any]
    scoring: dict[str, Any]
    arrays: dict[str, np.ndarray]
    threshold: dict[str, Any] | None
    emae_version: str


def is_bundle(path: Path) -> bool:
    """Whether ``path`` is an emae model folder (the only kind of folder a save replaces)."""
    return (Path(path) / CONFIG).is_file()


#: What ``overwrite=True`` may replace: model folders, never other data.
BUNDLE_ONLY: dict[str, Any] = {"replaceable": is_bundle, "kind": "an emae model folder"}


def _json_value(value: Any, what: str) -> Any:
    """``value`` after a JSON round trip (tuples become lists), or an error naming ``what``."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise EmaeError(
            f"{what} must be plain JSON (dicts, lists, str, finite numbers): {exc}"
        ) from None


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EmaeError(f"{path}: not readable as JSON ({exc})") from None


def _threshold_dict(threshold: Threshold | Mapping[str, Any], where: str) -> dict[str, Any]:
    """The validated JSON form of a threshold given as a record or a dict."""
    if not isinstance(threshold, Threshold):
        if not isinstance(threshold, Mapping):
            raise EmaeError(f"{where}: threshold must be a Threshold or a dict, got {threshold!r}")
        try:
            threshold = Threshold.from_dict(threshold)
        except (EmaeError, TypeError) as exc:
            raise EmaeError(f"{where}: {exc}") from None
    return threshold.to_dict()


def _arrays(arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Named numeric arrays, contiguous, as safetensors stores them."""
    out = {}
    for name, value in arrays.items():
        a = np.asarray(value)
        if not isinstance(name, str) or a.dtype.kind not in "biuf":
            raise EmaeError(
                f"scoring arrays must map names to numeric arrays, got {name!r}: dtype {a.dtype}"
            )
        out[name] = a if a.flags.c_contiguous else a.copy(order="C")  # keeps 0-d arrays
    return out


def _check_state(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, Any], where: str
) -> None:
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


def _optional_files(
    scoring: Any, arrays: Any, threshold: Any, where: Path
) -> dict[str, Callable[[Path], None]]:
    """Validate the optional parts first, then return a writer per file name."""
    writers: dict[str, Callable[[Path], None]] = {}
    if scoring is not None:
        if not isinstance(scoring, Mapping):
            raise EmaeError(f"scoring must be a dict of score name and parameters, got {scoring!r}")
        value = _json_value(dict(scoring), "scoring")
        writers[SCORING] = lambda tmp: _write_json(tmp, value)
    if arrays is not None:
        if not isinstance(arrays, Mapping):
            raise EmaeError(f"arrays must be a dict of named arrays, got {type(arrays).__name__}")
        checked = _arrays(arrays)
        writers[SCORING_ARRAYS] = lambda tmp: safetensors.numpy.save_file(checked, str(tmp))
    if threshold is not None:
        record = _threshold_dict(threshold, str(where))
        writers[THRESHOLD] = lambda tmp: _write_json(tmp, record)
    return writers


def save_bundle(
    path: str | Path,
    *,
    model: nn.Module,
    model_name: str,
    model_kwargs: Mapping[str, Any],
    normalizer: PercentileNormalizer,
    config: Mapping[str, Any],
    scoring: Mapping[str, Any] | None = None,
    arrays: Mapping[str, Any] | None = None,
    threshold: Threshold | Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a trained model as a folder of plain files, atomically.

    Parameters
    ----------
    path
        Destination folder; its parent must exist. The folder appears whole or not at all.
    model
        The trained module; its state dict must match ``build_model(model_name, **model_kwargs)``.
    model_name, model_kwargs
        Registry name and JSON-serializable constructor arguments of ``model``.
    normalizer
        The intensity normalization the model was trained with.
    config
        The run configuration, plain JSON (saved under ``"run"`` in ``config.json``).
    scoring, arrays
        Score name and parameters (``scoring.json``) and named numeric arrays of fitted
        statistics (``scoring.safetensors``); each file is written only when given.
    threshold
        A :class:`~emae.thresholds.Threshold` or its dict (``threshold.json``), when chosen.
    overwrite
        Replace an existing model folder (other non-empty folders are never replaced).

    Returns
    -------
    Path
        The folder.
    """
    path = Path(path)
    kwargs = _json_value(dict(model_kwargs), "model_kwargs")
    header = {
        "emae_version": emae.__version__,
        "model": model_name,
        "model_kwargs": kwargs,
        "run": _json_value(dict(config), "config"),
    }
    if not isinstance(normalizer, PercentileNormalizer):
        raise EmaeError(f"normalizer must be a PercentileNormalizer, got {normalizer!r}")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    _check_state(build_model(model_name, **kwargs).state_dict(), state, f"model {model_name!r}")
    optional = _optional_files(scoring, arrays, threshold, path)
    with atomic_dir(path, overwrite=overwrite, **BUNDLE_ONLY) as tmp:
        _write_json(tmp / CONFIG, header)
        safetensors.torch.save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        _write_json(tmp / NORMALIZATION, normalizer.to_dict())
        for name, write in optional.items():
            write(tmp / name)
    logger.info("saved model %r to %s", model_name, path)
    return path


def _check_folder(path: Path) -> None:
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


def _check_version(saved: Any, where: Path) -> None:
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


def _read_tensors(path: Path, load: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """Tensors of a safetensors file through ``load``; a clear error for anything else."""
    try:
        return load(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise EmaeError(
            f"{path}: not a valid safetensors file ({exc}); emae loads weights only "
            f"from safetensors and never unpickles files"
        ) from None


def _load_model(path: Path, name: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        model = build_model(name, **kwargs)
    except EmaeError as exc:
        raise EmaeError(f"{path / CONFIG}: {exc}") from None
    weights = path / WEIGHTS
    if not weights.is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        extra = f"; {', '.join(pickles)} not loaded (emae never unpickles files)" if pickles else ""
        raise EmaeError(f"{path}: weights file {WEIGHTS} is missing{extra}")
    state = _read_tensors(weights, safetensors.torch.load_file)
    _check_state(model.state_dict(), state, str(weights))
    model.load_state_dict(state)
    return model.eval()


def load_bundle(path: str | Path) -> Bundle:
    """Load a model folder written by :func:`save_bundle`.

    Only JSON and safetensors files are read; nothing is unpickled.

    Raises
    ------
    EmaeError
        When the folder or ``config.json`` is missing, a file is corrupt, the model name is
        unknown, or the weights lack, add or reshape a tensor (the message names it).

    Warns
    -----
    UserWarning
        When the folder was written by a newer emae release series (``major``, or ``0.minor``
        before 1.0) or its version is unreadable.
    """
    path = Path(path)
    _check_folder(path)
    header = _read_json(path / CONFIG)
    keys = {"emae_version", "model", "model_kwargs", "run"}
    if not isinstance(header, dict) or keys - set(header):
        found = sorted(header) if isinstance(header, dict) else type(header).__name__
        raise EmaeError(f"{path / CONFIG}: expected keys {sorted(keys)}, found {found}")
    if not isinstance(header["model_kwargs"], dict):
        raise EmaeError(
            f"{path / CONFIG}: model_kwargs must be an object, got {header['model_kwargs']!r}"
        )
    _check_version(header["emae_version"], path)
    model = _load_model(path, header["model"], header["model_kwargs"])
    if not (path / NORMALIZATION).is_file():
        raise EmaeError(f"{path}: {NORMALIZATION} is missing")
    try:
        normalizer = PercentileNormalizer.from_dict(_read_json(path / NORMALIZATION))
    except (EmaeError, TypeError) as exc:
        raise EmaeError(f"{path / NORMALIZATION}: {exc}") from None
    scoring = _read_json(path / SCORING) if (path / SCORING).is_file() else {}
    if not isinstance(scoring, dict):
        raise EmaeError(f"{path / SCORING}: expected a JSON object, got {scoring!r}")
    arrays = {}
    if (path / SCORING_ARRAYS).is_file():
        arrays = _read_tensors(path / SCORING_ARRAYS, safetensors.numpy.load_file)
    threshold = None
    if (path / THRESHOLD).is_file():
        threshold = _threshold_dict(_read_json(path / THRESHOLD), str(path / THRESHOLD))
    return Bundle(
        model=model,
        model_name=header["model"],
        model_kwargs=header["model_kwargs"],
        normalizer=normalizer,
        config=header["run"],
        scoring=scoring,
        arrays=arrays,
        threshold=threshold,
        emae_version=str(header["emae_version"]),
    )


def update_bundle(
    path: str | Path,
    *,
    scoring: Mapping[str, Any] | None = None,
    arrays: Mapping[str, Any] | None = None,
    threshold: Threshold | Mapping[str, Any] | None = None,
) -> None:
    """Replace the scoring and threshold files of an existing model folder.

    Each given file is rewritten atomically (:func:`emae.io.atomic.atomic_file`); the others,
    the weights included, are left untouched.

    Parameters
    ----------
    path
        A folder written by :func:`save_bundle`.
    scoring, arrays, threshold
        As in :func:`save_bundle`; at least one must be given.
    """
    path = Path(path)
    _check_folder(path)
    if scoring is None and arrays is None and threshold is None:
        raise EmaeError(f"{path}: nothing to update; give scoring, arrays or threshold")
    writers = _optional_files(scoring, arrays, threshold, path)
    names = list(writers)
    for name, write in writers.items():
        with atomic_file(path / name, overwrite=True) as tmp:
            write(tmp)
    logger.info("updated %s in %s", ", ".join(names), path)
