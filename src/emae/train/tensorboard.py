"""TensorBoard panels: the training curves, and what the model reconstructs as it learns.

:class:`TensorBoardLogger` is an ``on_log`` callback of :func:`emae.train.loop.train_loop`. Every
numeric log becomes a scalar (``train/loss``, ``train/kl``, ``val/loss``, ``lr``) and, given a
fixed batch of validation patches, each patch becomes one image per log step::

    input | reconstruction | error        (H, 3 W), gray levels in [0, 1]

with input and reconstruction clipped to [0, 1] (the range of normalized EM) and the error
``|input - reconstruction|`` divided by its maximum in that patch, so the panel shows *where* the
model fails even when the error is small. Reconstructions come from
:func:`emae.anomaly.maps.reconstruct`, the function scoring uses.

TensorBoard is optional (``pip install "emae[tensorboard]"``); view the logs with
``tensorboard --logdir LOG_DIR``. In a ``torchrun`` run only rank 0 writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from emae.anomaly.maps import reconstruct
from emae.errors import EmaeError
from emae.runtime import model_device
from emae.train import distributed


def scalar_tag(name: str) -> str:
    """The TensorBoard tag of a log entry: ``"val_loss" -> "val/loss"``, ``"lr" -> "lr"``,
    anything else ``"x" -> "train/x"``."""
    if name == "lr":
        return name
    if name.startswith("val_"):
        return "val/" + name.removeprefix("val_")
    return "train/" + name


def reconstruction_panels(model: nn.Module, patches: Tensor) -> np.ndarray:
    """One ``input | reconstruction | error`` image per patch.

    Parameters
    ----------
    model
        Autoencoder mapping ``(B, 1, H, W)`` to ``(B, 1, H, W)``; evaluated in eval mode without
        autograd, on its own device; its train/eval mode is restored.
    patches
        ``(N, 1, H, W)`` normalized patches.

    Returns
    -------
    numpy.ndarray
        ``(N, H, 3 W)`` float32 in [0, 1]: input and reconstruction clipped to [0, 1], the
        absolute error scaled by its maximum in each patch (0 where the reconstruction is
        exact).
    """
    images = patches[:, 0].detach().float().cpu().numpy()  # (N, H, W)
    recon = reconstruct(model, images, batch_size=len(images))  # (N, H, W)
    error = np.abs(images - recon)
    error /= np.maximum(error.max(axis=(1, 2), keepdims=True), np.finfo(np.float32).tiny)
    return np.concatenate([np.clip(images, 0, 1), np.clip(recon, 0, 1), error], axis=2)


def classification_figure(
    patches: Tensor, targets: Sequence[int], classes: Sequence[str]
) -> Callable[[nn.Module], Any]:
    """A ``figure_fn`` showing each patch titled ``pred <class> p=<prob> / true <class>``.

    ``patches`` are ``(N, 1, H, W)`` normalized inputs of a classifier mapping them to
    ``(N, K)`` logits; it is evaluated in eval mode without autograd, its mode restored.
    """
    from emae.report.plots import plot_panels

    patches = torch.as_tensor(patches).detach().cpu().float()

    def figure(model: nn.Module) -> Any:
        was_training = model.training
        model.eval()
        try:
            device = model_device(model)
            with torch.inference_mode():
                probs = torch.softmax(model(patches.to(device)).float(), dim=1).cpu().numpy()
        finally:
            model.train(was_training)
        titles = [
            f"pred {classes[int(p.argmax())]} {p.max():.2f}\ntrue {classes[int(t)]}"
            for p, t in zip(probs, targets, strict=True)
        ]
        return plot_panels(patches[:, 0].numpy(), titles, columns=min(len(titles), 8))

    return figure


def _summary_writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise EmaeError(
            "TensorBoard logging needs the optional dependency tensorboard: "
            'pip install "emae[tensorboard]"'
        ) from None
    return SummaryWriter(log_dir=str(log_dir))


class TensorBoardLogger:
    """Write training logs and reconstruction panels for TensorBoard.

    Parameters
    ----------
    log_dir
        Folder of the event files (created).
    panels
        ``(N, 1, H, W)`` normalized validation patches shown at every log step (the first
        ``max_panels``), or ``None`` for scalars only.
    max_panels
        At most this many patches are shown.
    figure_fn
        ``figure_fn(model) -> matplotlib Figure`` drawn at every log step as ``panels/figure``
        (e.g. :func:`classification_figure`: inputs titled with prediction and target).

    Notes
    -----
    Pass it as ``on_log`` to :func:`emae.train.loop.train_loop`; close it afterwards, or use it as
    a context manager. On ranks other than 0 of a process group it writes nothing, so every
    process may build one.
    """

    def __init__(
        self,
        log_dir: str | Path,
        panels: Tensor | None = None,
        max_panels: int = 4,
        figure_fn: Callable[[nn.Module], Any] | None = None,
    ) -> None:
        if isinstance(max_panels, bool) or not isinstance(max_panels, int) or max_panels < 1:
            raise EmaeError(f"max_panels must be a positive int, got {max_panels!r}")
        if panels is not None:
            panels = torch.as_tensor(panels)
            if panels.ndim != 4 or panels.shape[1] != 1 or 0 in panels.shape:
                raise EmaeError(
                    f"panels must be a non-empty (N, 1, H, W) batch of patches, "
                    f"got shape {tuple(panels.shape)}"
                )
            panels = panels[:max_panels].detach().cpu()
        self.log_dir = Path(log_dir)
        self.panels = panels
        self.max_panels = max_panels
        self.figure_fn = figure_fn
        self._writer = _summary_writer(self.log_dir) if distributed.is_main() else None

    def __call__(self, step: int, logs: dict[str, float], model: nn.Module) -> None:
        """Log ``logs`` (numbers only, ``"step"`` excepted) and the panels at ``step``."""
        if self._writer is None:
            return
        for name, value in logs.items():
            if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(scalar_tag(name), float(value), step)
        if self.panels is not None:
            for i, panel in enumerate(reconstruction_panels(model, self.panels)):
                self._writer.add_image(f"reconstruction/{i}", panel, step, dataformats="HW")
        if self.figure_fn is not None:
            self._writer.add_figure("panels/figure", self.figure_fn(model), step, close=False)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file; further calls write nothing."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
