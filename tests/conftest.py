"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """The public benchmark data: ``$EMAE_DATA`` or ``../shared/data`` beside the repository."""
    candidates = [os.environ.get("EMAE_DATA"), REPO.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture
def shared_data() -> Path:
    """Path to the shared public data; the test is skipped where it is absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("public data not found (set EMAE_DATA or place it in ../shared/data)")
    return path


@pytest.fixture
def interrupted_from(monkeypatch) -> Callable:
    """``with interrupted_from(Dataset, first):`` items ``first`` and later of ``Dataset`` raise
    KeyboardInterrupt (a run killed midway); the class is restored on leaving the block."""

    @contextmanager
    def interrupt(cls: type, first: int) -> Iterator[None]:
        original = cls.__getitem__

        def crash(self, index):
            if index >= first:
                raise KeyboardInterrupt
            return original(self, index)

        monkeypatch.setattr(cls, "__getitem__", crash)
        try:
            yield
        finally:
            monkeypatch.setattr(cls, "__getitem__", original)

    return interrupt
