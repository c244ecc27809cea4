"""Run options from YAML files: one reader, so every command reports file problems alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emae.errors import EmaeError


def read_options(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML options file (empty file: no options).

    Raises
    ------
    EmaeError
        One line naming the file when it is missing, not YAML, or not a mapping.
    """
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise EmaeError(f"{path}: configuration file not found") from None
    except yaml.YAMLError as exc:
        raise EmaeError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise EmaeError(f"{path}: expected a mapping of option: value at the top level")
    return data
