"""User-facing errors.

Every problem caused by the user's input (a missing file, a corrupt TIFF, a label outside the
image, ...) is raised as an :class:`EmaeError` whose message is one line naming the offending
file or value and what was expected. The CLI prints that line and exits with status 2; it never
shows a traceback for these.
"""

from __future__ import annotations


class EmaeError(ValueError):
    """A problem with the user's input or request, explained in one line."""

    def __init__(self, message: str) -> None:
        # Collapse newlines so the message stays one line whatever the wrapped cause printed.
        super().__init__(" ".join(str(message).split()))


class NotFittedError(EmaeError, AttributeError):
    """An estimator was used before ``fit`` was called."""


def config_error(exc: Exception, source: str = "configuration") -> EmaeError:
    """Turn a pydantic ``ValidationError`` into one line naming each bad field.

    Parameters
    ----------
    exc
        The ``pydantic.ValidationError`` raised while validating ``source``.
    source
        What was being validated (a YAML path, ``"flags"``), for the message.
    """
    errors = getattr(exc, "errors", None)
    if errors is None:
        return EmaeError(f"{source}: {exc}")
    parts = []
    for err in errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "value"
        parts.append(f"{where}: {err.get('msg', 'invalid')} (got {err.get('input')!r})")
    return EmaeError(f"invalid {source}: " + "; ".join(parts))
