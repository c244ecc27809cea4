"""The ``OUT.training/`` folder of a command that trains: one resume protocol for all of them.

While ``pretrain`` or ``finetune`` trains, its state (the run's identity, checkpoints, the
normalization) lives in ``OUT.training/`` beside the output; ``OUT`` appears only when training
has finished. The identity (configuration and inputs, as JSON) decides whether
``--resume`` may continue the folder: the same command with the same options and inputs
continues exactly where the last checkpoint left off; anything else is refused in one line
that names what differs. Without ``--resume`` an interrupted run is kept unless ``--overwrite``
says to start again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from emae.errors import EmaeError
from emae.io.atomic import atomic_file

IDENTITY = "run.json"
T = TypeVar("T")


def training_dir(out: str | Path) -> Path:
    """``runs/ae`` -> ``runs/ae.training``."""
    out = Path(out)
    return out.with_name(out.name + ".training")


def read_run_state(path: str | Path, parse: Callable[[Any], T] = lambda value: value) -> T:
    """A JSON state file of an interrupted run (configuration, normalization), parsed.

    Parameters
    ----------
    path
        The file, e.g. ``RUN.training/normalization.json``.
    parse
        Turns the JSON value into what the caller needs (e.g.
        ``PercentileNormalizer.from_dict``); its ``EmaeError``, ``KeyError``, ``TypeError`` or
        ``ValueError`` means the file does not hold what it should.

    Raises
    ------
    EmaeError
        One line naming the file when it is missing, not JSON, or refused by ``parse``, with
        how to start the run again.
    """
    path = Path(path)
    restart = f"the interrupted run in {path.parent} cannot resume; pass --overwrite to start again"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EmaeError(f"{path}: missing; {restart}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EmaeError(f"{path}: not readable as JSON ({exc}); {restart}") from None
    try:
        return parse(value)
    except (EmaeError, KeyError, TypeError, ValueError) as exc:
        reason = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise EmaeError(f"{path}: unexpected content ({reason}); {restart}") from None


def _identity(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def _differences(saved: Mapping[str, Any], identity: Mapping[str, Any]) -> str:
    """What differs: the options of ``config`` by name, else the inputs ("" when nothing)."""
    a, b = saved.get("config"), identity.get("config")
    if isinstance(a, Mapping) and isinstance(b, Mapping) and a != b:
        return f"options: {sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))}"
    others = [k for k in sorted(set(saved) | set(identity)) if saved.get(k) != identity.get(k)]
    return f"inputs: {', '.join(others)}" if others else ""


def check_resumable(
    work: Path, identity: Mapping[str, Any], out: str | Path, name: str = IDENTITY
) -> None:
    """Refuse to resume unless ``work`` holds an interrupted run of this ``identity``.

    Raises
    ------
    EmaeError
        When there is nothing to resume, its identity file is unreadable, or the options or
        inputs differ (named).
    """
    if not (work / name).is_file():
        raise EmaeError(f"cannot resume {out}: {work} holds no interrupted run")
    saved = read_run_state(work / name, _identity)
    differ = _differences(saved, identity)
    if differ:
        raise EmaeError(
            f"cannot resume {out}: the configuration or inputs differ from the interrupted run "
            f"in {work} ({differ}); run without --resume and with --overwrite to start again"
        )


def check_fresh(work: Path, overwrite: bool) -> None:
    """Refuse to start over an interrupted run unless ``overwrite``."""
    if work.exists() and not overwrite:
        raise EmaeError(
            f"{work} holds an interrupted run; pass --resume to continue it or "
            "--overwrite to start again"
        )


def begin(work: Path, identity: Mapping[str, Any], name: str = IDENTITY) -> None:
    """Start a fresh ``work`` folder (replacing an interrupted run) holding ``identity``.

    Call it only once the inputs were read successfully, so a refused run leaves the old
    folder alone. The identity is written atomically.
    """
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    with atomic_file(work / name) as tmp:
        tmp.write_text(json.dumps(dict(identity), indent=2))
