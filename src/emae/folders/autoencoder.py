"""The trained-model folder: plain files that load without unpickling anything.

A folder written by :func:`save_bundle` holds::

    config.json          {"emae_version", "model": registry name, "model_kwargs", "run",
                          "checksums": sha256 of every .safetensors file}
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

``config.json`` holds the sha256 of every ``.safetensors`` file of the folder, checked on load
(:mod:`emae.folders.integrity`); the files and readers shared with the classifier folder are in
:mod:`emae.folders.files`.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import safetensors.torch
from torch import nn

import emae
from emae.anomaly.thresholds import Threshold
from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError
from emae.folders.files import (
    BUNDLE_ONLY,
    CONFIG,
    FORMAT,
    NORMALIZATION,
    WEIGHTS,
    check_folder,
    check_kind,
    check_state,
    check_version,
    json_value,
    load_weights,
    read_json,
    read_tensors,
    write_json,
)
from emae.folders.integrity import CHECKSUMS, check_checksums, folder_checksums
from emae.io.atomic import atomic_dir, write_errors
from emae.models import build_model

logger = logging.getLogger(__name__)

SCORING = "scoring.json"
SCORING_ARRAYS = "scoring.safetensors"
THRESHOLD = "threshold.json"


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
        :meth:`emae.anomaly.thresholds.Threshold.to_dict` of the decision threshold, or ``None``.
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


def _optional_files(
    scoring: Any, arrays: Any, threshold: Any, where: Path
) -> dict[str, Callable[[Path], None]]:
    """Validate the optional parts first, then return a writer per file name."""
    writers: dict[str, Callable[[Path], None]] = {}
    if scoring is not None:
        if not isinstance(scoring, Mapping):
            raise EmaeError(f"scoring must be a dict of score name and parameters, got {scoring!r}")
        value = json_value(dict(scoring), "scoring")
        writers[SCORING] = lambda tmp: write_json(tmp, value)
    if arrays is not None:
        if not isinstance(arrays, Mapping):
            raise EmaeError(f"arrays must be a dict of named arrays, got {type(arrays).__name__}")
        checked = _arrays(arrays)
        writers[SCORING_ARRAYS] = lambda tmp: safetensors.numpy.save_file(checked, str(tmp))
    if threshold is not None:
        record = _threshold_dict(threshold, str(where))
        writers[THRESHOLD] = lambda tmp: write_json(tmp, record)
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
        A :class:`~emae.anomaly.thresholds.Threshold` or its dict (``threshold.json``), when chosen.
    overwrite
        Replace an existing model folder (other non-empty folders are never replaced).

    Returns
    -------
    Path
        The folder.
    """
    path = Path(path)
    kwargs = json_value(dict(model_kwargs), "model_kwargs")
    header = {
        "emae_version": emae.__version__,
        "kind": "autoencoder",
        "format": FORMAT,
        "model": model_name,
        "model_kwargs": kwargs,
        "run": json_value(dict(config), "config"),
    }
    if not isinstance(normalizer, PercentileNormalizer):
        raise EmaeError(f"normalizer must be a PercentileNormalizer, got {normalizer!r}")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    check_state(build_model(model_name, **kwargs).state_dict(), state, f"model {model_name!r}")
    optional = _optional_files(scoring, arrays, threshold, path)
    with write_errors(path), atomic_dir(path, overwrite=overwrite, **BUNDLE_ONLY) as tmp:
        safetensors.torch.save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        write_json(tmp / NORMALIZATION, normalizer.to_dict())
        for name, write in optional.items():
            write(tmp / name)
        write_json(tmp / CONFIG, {**header, CHECKSUMS: folder_checksums(tmp)})
    logger.info("saved model %r to %s", model_name, path)
    return path


def _load_model(path: Path, name: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        model = build_model(name, **kwargs)
    except EmaeError as exc:
        raise EmaeError(f"{path / CONFIG}: {exc}") from None
    return load_weights(path, model)


def load_bundle(path: str | Path) -> Bundle:
    """Load a model folder written by :func:`save_bundle`.

    Only JSON and safetensors files are read; nothing is unpickled.

    Raises
    ------
    EmaeError
        When the folder or ``config.json`` is missing, a file is corrupt, a ``.safetensors``
        file does not match its checksum in ``config.json``, the model name is unknown, or the
        weights lack, add or reshape a tensor (the message names it).

    Warns
    -----
    UserWarning
        When the folder was written by a newer emae release series (``major``, or ``0.minor``
        before 1.0) or its version is unreadable.
    """
    path = Path(path)
    check_folder(path)
    header = read_json(path / CONFIG)
    keys = {"emae_version", "model", "model_kwargs", "run"}
    if not isinstance(header, dict) or keys - set(header):
        found = sorted(header) if isinstance(header, dict) else type(header).__name__
        raise EmaeError(f"{path / CONFIG}: expected keys {sorted(keys)}, found {found}")
    if not isinstance(header["model_kwargs"], dict):
        raise EmaeError(
            f"{path / CONFIG}: model_kwargs must be an object, got {header['model_kwargs']!r}"
        )
    check_kind(header, "autoencoder", path)
    check_version(header["emae_version"], path)
    check_checksums(path, header)
    model = _load_model(path, header["model"], header["model_kwargs"])
    if not (path / NORMALIZATION).is_file():
        raise EmaeError(f"{path}: {NORMALIZATION} is missing")
    try:
        normalizer = PercentileNormalizer.from_dict(read_json(path / NORMALIZATION))
    except (EmaeError, TypeError) as exc:
        raise EmaeError(f"{path / NORMALIZATION}: {exc}") from None
    scoring = read_json(path / SCORING) if (path / SCORING).is_file() else {}
    if not isinstance(scoring, dict):
        raise EmaeError(f"{path / SCORING}: expected a JSON object, got {scoring!r}")
    arrays = {}
    if (path / SCORING_ARRAYS).is_file():
        arrays = read_tensors(path / SCORING_ARRAYS, safetensors.numpy.load_file)
    threshold = None
    if (path / THRESHOLD).is_file():
        threshold = _threshold_dict(read_json(path / THRESHOLD), str(path / THRESHOLD))
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

    The folder is rewritten as a whole, atomically (:func:`emae.io.atomic.atomic_dir`): the
    given files are new, ``config.json`` gets their checksums, and every other file, the
    weights included, is carried over unchanged (hard-linked where the file system allows).

    Parameters
    ----------
    path
        A folder written by :func:`save_bundle`.
    scoring, arrays, threshold
        As in :func:`save_bundle`; at least one must be given.

    Raises
    ------
    EmaeError
        When nothing is given, a part is invalid, or a file of the folder no longer matches its
        checksum (an update never vouches for files modified after emae wrote them).
    """
    path = Path(path)
    check_folder(path)
    if scoring is None and arrays is None and threshold is None:
        raise EmaeError(f"{path}: nothing to update; give scoring, arrays or threshold")
    writers = _optional_files(scoring, arrays, threshold, path)
    header = read_json(path / CONFIG)
    if not isinstance(header, dict):
        raise EmaeError(f"{path / CONFIG}: expected a JSON object, got {type(header).__name__}")
    check_checksums(path, header)
    with write_errors(path), atomic_dir(path, overwrite=True, **BUNDLE_ONLY) as tmp:
        for entry in path.iterdir():
            if entry.name not in writers and entry.name != CONFIG:
                _carry(entry, tmp / entry.name)
        for name, write in writers.items():
            write(tmp / name)
        if CHECKSUMS in header:  # a folder from before checksums stays unchecked
            header = {**header, CHECKSUMS: folder_checksums(tmp)}
        write_json(tmp / CONFIG, header)
    logger.info("updated %s in %s", ", ".join(writers), path)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)


def _carry(src: Path, dst: Path) -> None:
    """Carry a file, folder or link of the old folder into the new one, unchanged."""
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(src), str(dst))
