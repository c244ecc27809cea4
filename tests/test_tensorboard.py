"""TensorBoard panels: scalars and input | reconstruction | error images, read back from disk."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from emae.errors import EmaeError
from emae.models import build_model
from emae.train import tensorboard as tb
from emae.train.loop import LoopSettings, train_loop

EventAccumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator"
).EventAccumulator

PATCHES = torch.rand((3, 1, 8, 8), generator=torch.Generator().manual_seed(0))


class Half(nn.Module):
    """Reconstructs every image at half its intensity."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


def _events(log_dir) -> EventAccumulator:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return events


def test_panels_show_input_reconstruction_and_scaled_error():
    model = Half().train()
    panels = tb.reconstruction_panels(model, PATCHES)
    assert panels.shape == (3, 8, 24) and panels.dtype == np.float32
    x = PATCHES[:, 0].numpy()
    np.testing.assert_allclose(panels[:, :, :8], x)
    np.testing.assert_allclose(panels[:, :, 8:16], x / 2, rtol=1e-6)
    np.testing.assert_allclose(panels[:, :, 16:], x / x.max(axis=(1, 2), keepdims=True), rtol=1e-5)
    assert model.training and model.scale.grad is None


def test_scalars_and_one_panel_per_patch_are_written(tmp_path):
    model = build_model("vae", channels=(8,), latent_channels=4, norm="none")
    logs = {"step": 5, "loss": 0.25, "lr": 1e-3, "kl": 0.5, "val_loss": 0.3}
    with tb.TensorBoardLogger(tmp_path, panels=PATCHES, max_panels=2) as logger:
        logger(5, logs, model)
    events = _events(tmp_path)
    assert sorted(events.Tags()["scalars"]) == ["lr", "train/kl", "train/loss", "val/loss"]
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(5, 0.25)]
    assert events.Tags()["images"] == ["reconstruction/0", "reconstruction/1"]
    (image,) = events.Images("reconstruction/0")
    assert (image.step, image.height, image.width) == (5, 8, 3 * 8)


def test_train_loop_logs_every_validation(tmp_path):
    data = torch.rand((48, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    settings = LoopSettings(steps=6, batch_size=4, val_every=3, precision="fp32", progress=False)

    def loss(model, x, step, generator):
        return nn.functional.mse_loss(model(x), x), {}

    model = build_model("conv-ae", channels=(8,), latent_channels=4, norm="batch")
    with tb.TensorBoardLogger(tmp_path, panels=data[:1]) as logger:
        train_loop(model, loss, data, settings, val_fn=lambda m: 1.0, on_log=logger)
    events = _events(tmp_path)
    assert [e.step for e in events.Scalars("val/loss")] == [3, 6]
    assert [e.step for e in events.Images("reconstruction/0")] == [3, 6]


def test_only_rank_0_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(tb.distributed, "is_main", lambda: False)
    with tb.TensorBoardLogger(tmp_path / "logs", panels=PATCHES) as logger:
        logger(1, {"loss": 1.0}, Half())
    assert not (tmp_path / "logs").exists()


def test_bad_panels_and_a_missing_tensorboard_are_named(tmp_path, monkeypatch):
    with pytest.raises(EmaeError, match=r"panels must be a non-empty \(N, 1, H, W\).*\(3, 8, 8\)"):
        tb.TensorBoardLogger(tmp_path, panels=PATCHES[:, 0])
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(EmaeError, match=r'pip install "emae\[tensorboard\]"'):
        tb.TensorBoardLogger(tmp_path)
