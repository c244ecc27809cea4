"""User-facing errors.

Every problem caused by the user's input (a missing file, a corrupt TIFF, a label outside the
image, ...) is raised as an :class:`EmaeError` whose message is one line naming the offending
file or value and what was expected. The CLI prints that line and exits with status 1 (2 is
argparse's, for a command line it cannot parse); it never shows a traceback for these.
"""

from __future__ import annotations

from collections.abc import Collection


class EmaeError(ValueError):
    """A problem with the user's input or request, explained in one line."""

    def __init__(self, message: str) -> None:
        # Collapse newlines so the message stays one line whatever the wrapped cause printed.
        super().__init__(" ".join(str(message).split()))


class NotFittedError(EmaeError, AttributeError):
    """An estimator was used before ``fit`` was called."""


def config_error(
    exc: Exception, source: str = "configuration", flags: Collection[str] = ()
) -> EmaeError:
    """Turn a pydantic ``ValidationError`` into one line naming each bad field.

    Parameters
    ----------
    exc
        The ``pydantic.ValidationError`` raised while validating ``source``.
    source
        What was being validated (a YAML path, ``"options"``), for the message.
    flags
        Fields whose values came from command-line flags rather than ``source``: they are
        named as the flag (``--steps``), so a bad flag is not blamed on the YAML file.
    """
    errors = getattr(exc, "errors", None)
    if errors is None:
        return EmaeError(f"{source}: {exc}")
    from_file, from_flags = [], []
    for err in errors():
        loc = err.get("loc", ())
        where = ".".join(str(p) for p in loc) or "value"
        what = f"{err.get('msg', 'invalid')} (got {err.get('input')!r})"
        if loc and loc[0] in flags:
            from_flags.append(f"--{str(loc[0]).replace('_', '-')}: {what}")
        else:
            from_file.append(f"{where}: {what}")
    parts = []
    if from_flags:
        parts.append("invalid flag " + "; ".join(from_flags))
    if from_file:
        parts.append(f"invalid {source}: " + "; ".join(from_file))
    return EmaeError("; ".join(parts))
