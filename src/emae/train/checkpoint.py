"""Checkpoints of the training loop: written atomically, read without unpickling code.

A checkpoint holds the model, optimizer and scheduler states, the step, the history and the
best model so far, so an interrupted run continues exactly (:func:`emae.train.loop.train_loop`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from emae.errors import EmaeError
from emae.io.atomic import atomic_file, write_errors


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write the checkpoint atomically; a full disk is one line, and the old one stays."""
    with write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, overwrite=True) as tmp:
            torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`train_loop`; never unpickles arbitrary objects."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise EmaeError(f"{path}: no checkpoint to resume from") from None
    except Exception as exc:  # a corrupt or foreign file; never execute its contents
        raise EmaeError(
            f"{path}: not a readable emae checkpoint ({exc.__class__.__name__})"
        ) from None
    if not isinstance(saved, dict) or {"model", "optimizer", "scheduler"} - set(saved):
        raise EmaeError(f"{path}: not an emae checkpoint (no model, optimizer and scheduler)")
    return saved
