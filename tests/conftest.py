"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType

import pytest

from emae.commands.pretrain import pretrain
from emae.io import write_tiff
from emae.synth.tissue import make_volume, to_uint8
from emae.train.config import PretrainConfig

REPO = Path(__file__).resolve().parents[1]

# Pretraining settings small enough for a test: two steps on 32x32 patches, a two-level conv-ae
# with a 4-channel latent, fp32 on the CPU. Read-only; tests take them through the
# ``tiny_settings`` fixture and override what differs: ``{**tiny_settings, "steps": 4}``.
TINY_PRETRAIN: Mapping[str, object] = MappingProxyType(
    dict(
        steps=2,
        batch_size=4,
        patch_size=32,
        channels=(8, 16),
        latent_channels=4,
        val_patches=8,
        val_every=2,
        checkpoint_every=2,
        precision="fp32",
        warmup_steps=1,
        score_patches=16,
    )
)

# Keyword arguments of each score's statistics that keep a fit fast in a test: the
# discriminative head trains for a few steps only (tests/test_discriminative.py checks that
# it learns). Tests import it: ``from conftest import FAST_SCORE_PARAMS``.
FAST_SCORE_PARAMS: Mapping[str, Mapping[str, object]] = MappingProxyType(
    {"discriminative": MappingProxyType({"steps": 2, "batch_size": 4})}
)


def fast_statistics(score: str) -> object | None:
    """An unfitted statistics object of ``score`` with :data:`FAST_SCORE_PARAMS`, or None for
    the scores that fit none."""
    from emae.anomaly.scores import STATISTICS

    cls = STATISTICS.get(score)
    return None if cls is None else cls(**FAST_SCORE_PARAMS.get(score, {}))


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


@pytest.fixture(scope="session")
def tiny_settings() -> Mapping[str, object]:
    """``TINY_PRETRAIN``, the shared tiny pretraining settings (a read-only mapping)."""
    return TINY_PRETRAIN


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """One tiny conv-ae model folder, trained once per session with ``TINY_PRETRAIN`` plus
    ``score="pixel", norm="none"`` on a clean (2, 90, 70) uint8 synthetic stack (seed 4).

    Shared by every test that asks for it: copy it (``shutil.copytree(tiny_model, dest)``)
    before writing anything into it, and never write into this folder itself."""
    root = tmp_path_factory.mktemp("tiny_model")
    write_tiff(root / "clean.tif", to_uint8(make_volume((2, 90, 70), seed=4)), axes="ZYX")
    config = PretrainConfig(**TINY_PRETRAIN, score="pixel", norm="none")
    pretrain([root / "clean.tif"], root / "model", config, progress=False)
    return root / "model"


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
