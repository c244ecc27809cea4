"""The training loop: exact resume, early stopping, divergence, safe checkpoints."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from emae.errors import EmaeError
from emae.runtime import select_precision
from emae.train.loop import LoopSettings, load_checkpoint, train_loop


class Items(Dataset):
    """Item i is a fixed random (1, 8, 8) tensor; raises past ``fail_at`` to simulate a crash."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at = n, fail_at

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.fail_at is not None and i >= self.fail_at:
            raise RuntimeError("simulated crash")
        return torch.rand((1, 8, 8), generator=torch.Generator().manual_seed(i))


def _model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.LeakyReLU(), nn.Conv2d(4, 1, 1))


def _loss(model, x, step, generator):
    noisy = x + 0.05 * torch.randn(x.shape, generator=generator)
    return nn.functional.mse_loss(model(noisy), x), {}


SETTINGS = LoopSettings(
    steps=12,
    batch_size=4,
    lr=1e-2,
    warmup_steps=2,
    val_every=3,
    checkpoint_every=4,
    precision="fp32",
    progress=False,
)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    reference = _model()
    train_loop(reference, _loss, Items(48), SETTINGS, checkpoint=tmp_path / "a.pt")

    interrupted = _model()
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_loop(
            interrupted, _loss, Items(48, fail_at=30), SETTINGS, checkpoint=tmp_path / "b.pt"
        )
    assert load_checkpoint(tmp_path / "b.pt")["step"] == 4 * (30 // 16)

    resumed = _model()
    summary = train_loop(
        resumed, _loss, Items(48), SETTINGS, checkpoint=tmp_path / "b.pt", resume=True
    )
    assert summary["steps_done"] == 12
    for (name, a), b in zip(
        reference.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7, msg=name)


def test_training_reduces_the_validation_loss(tmp_path):
    val = torch.stack([Items(8)[i] for i in range(8)])
    model = _model()

    def val_fn(m):
        return float(nn.functional.mse_loss(m(val), val))

    with torch.no_grad():
        before = val_fn(model)
    summary = train_loop(model, _loss, Items(48), SETTINGS, val_fn=val_fn)
    assert summary["best_val"] < 0.7 * before, (before, summary["history"])
    assert [h["step"] for h in summary["history"]] == [3, 6, 9, 12]


def test_early_stopping_keeps_the_best_weights():
    calls = iter([1.0, 0.5, 0.9, 0.8, 0.7])
    model = _model()
    summary = train_loop(
        model,
        _loss,
        Items(48),
        LoopSettings(**{**SETTINGS.__dict__, "val_every": 1, "patience": 3}),
        val_fn=lambda m: next(calls),
    )
    assert summary["stopped_early"] and summary["best_val"] == 0.5
    assert summary["steps_done"] == 5


def test_divergence_is_reported():
    def bad_loss(model, x, step, generator):
        return model(x).sum() * float("nan"), {}

    with pytest.raises(EmaeError, match="diverged at step 0"):
        train_loop(_model(), bad_loss, Items(48), SETTINGS)


def test_too_small_dataset_is_named():
    with pytest.raises(EmaeError, match="holds 10 items, fewer than steps x batch_size = 12 x 4"):
        train_loop(_model(), _loss, Items(10), SETTINGS)


class _Planted:
    def __reduce__(self):
        return (open, ("/tmp/emae-pickle-marker-should-not-exist", "w"))


def test_checkpoints_are_never_unpickled(tmp_path):
    marker = "/tmp/emae-pickle-marker-should-not-exist"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model": _Planted()}, protocol=2))
    with pytest.raises(EmaeError, match="not a readable emae checkpoint"):
        load_checkpoint(path)
    import os

    assert not os.path.exists(marker)


def test_precision_choices():
    assert select_precision(torch.device("cpu"), "fp32") is None
    with pytest.raises(EmaeError, match="precision must be"):
        select_precision(torch.device("cpu"), "fp8")
