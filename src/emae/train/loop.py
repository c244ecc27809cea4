"""One plain training loop for every emae model, in one process or several.

The loop knows nothing about autoencoders or classifiers: it is given a model, a loss function
``loss_fn(model, batch, step, generator) -> (loss, logs)``, a dataset whose item ``i`` is fixed (so
training is counted in samples seen, never in epochs over a dataset that may be terabytes), and a
:class:`LoopSettings`. It runs AdamW with a linear warm-up then cosine learning-rate decay,
gradient clipping, periodic validation with early stopping, atomic checkpoints and a progress bar.

Resuming is exact: batch ``k`` always holds dataset items ``k * B .. (k + 1) * B - 1``, the random
numbers of step ``k`` come from a generator seeded with ``(seed, k)``, and the checkpoint holds the
model, optimizer and scheduler states. A resumed run therefore ends with the same weights as an
uninterrupted one (bit for bit on CPU in fp32).

Several GPUs (or CPU processes) train one model through PyTorch's ``DistributedDataParallel``
when the loop runs inside a process group, e.g. one started by ``torchrun``::

    torchrun --nproc_per_node 4 -m emae pretrain DATA --out RUN

(the caller joins the group with :func:`emae.train.distributed.init_from_env`). With ``W``
processes,

- ``batch_size`` ``B`` stays the *global* batch: process ``r`` loads items
  ``k * B + r * B / W .. k * B + (r + 1) * B / W - 1`` of step ``k`` (``B`` must be a multiple of
  ``W``), so the processes together see exactly the single-process batch and resuming stays
  exact; a checkpoint of a run in ``W`` processes resumes in any number of processes;
- each process runs on GPU ``LOCAL_RANK`` (on the CPU with ``device="cpu"`` or without CUDA);
- DDP averages the gradients during ``backward``, so for a loss that is a mean over the batch
  the update equals the single-process one. DDP only sees parameters used inside the wrapped
  module's ``forward``, while loss functions call ``model.encode``/``decode`` too (the VAE
  loss). The loop therefore wraps *the loss computation* (model and ``loss_fn`` together) in
  DDP: ``loss_fn`` still receives the bare model and every use of a parameter is tracked. Every
  parameter must take part in the loss (DDP's ``find_unused_parameters=False``);
- the generator of step ``k`` on process ``r`` is seeded with ``(seed, k, r)``: different noise
  on every process, the same on every run (process 0 draws what a single process draws);
- BatchNorm layers become ``SyncBatchNorm`` on CUDA for the duration of the loop (batch
  statistics over the global batch); on the CPU PyTorch refuses ``SyncBatchNorm`` and each
  process uses the statistics of its own share (see :mod:`emae.train.distributed`);
- rank 0 alone validates, writes checkpoints and calls ``on_log``; the other processes wait for
  it. The validation score is broadcast, so every process takes the same early-stopping
  decision and returns the same summary (losses in the history are averaged over processes;
  ``samples_per_s`` counts the samples of all processes). Every process resumes from the same
  checkpoint file.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from emae.errors import EmaeError
from emae.runtime import select_precision
from emae.train import distributed
from emae.train.checkpoint import load_checkpoint, save_checkpoint
from emae.train.distributed import process_device
from emae.train.schedule import group_schedule, lr_schedule, step_generator

logger = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any, int, torch.Generator], tuple[Tensor, dict[str, float]]]
ValFn = Callable[[nn.Module], float]
T = TypeVar("T")


@dataclass(frozen=True)
class LoopSettings:
    """How long and how to optimize; plain values, validated by the run's pydantic config."""

    steps: int
    batch_size: int
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    val_every: int = 250
    log_every: int = 20
    patience: int = 0
    checkpoint_every: int = 500
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    precision: str = "auto"
    progress: bool = True


def _to(batch: Any, device: torch.device, channels_last: bool) -> Any:
    if isinstance(batch, Tensor):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.ndim == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(b, device, channels_last) for b in batch)
    return batch


class _LossModule(nn.Module):
    """``model`` and ``loss_fn`` as one module whose ``forward`` is the loss, so that DDP tracks
    every use of the parameters, also through methods other than ``model.forward``."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(
        self, batch: Any, step: int, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, float]]:
        return self.loss_fn(self.model, batch, step, generator)


def _mean_logs(logs: dict[str, float], device: torch.device) -> dict[str, float]:
    """The loss function's logs averaged over all processes; unchanged in one process."""
    if not logs or not distributed.is_initialized():
        return logs
    values = torch.tensor([float(v) for v in logs.values()], dtype=torch.float64, device=device)
    return dict(zip(logs, distributed.mean(values).tolist(), strict=True))


def train_loop(
    model: nn.Module,
    loss_fn: LossFn,
    dataset: Dataset,
    settings: LoopSettings,
    *,
    val_fn: ValFn | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    on_log: Callable[[int, dict[str, float], nn.Module], None] | None = None,
    param_groups: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place and return the run's history.

    Inside a process group of ``W > 1`` processes (``torchrun``) every process calls this with
    the same arguments; see the module docstring for how the work is shared.

    Parameters
    ----------
    model
        Any ``nn.Module``; moved to the selected device.
    loss_fn
        ``loss_fn(model, batch, step, generator) -> (scalar loss, {name: float})``; ``batch`` is
        what the ``DataLoader`` yields, already on the device; ``generator`` is the step's own.
        The loss should be a mean over the batch (what DDP's gradient average assumes).
    dataset
        Map-style dataset with at least ``steps * batch_size`` fixed items.
    settings
        Optimization settings; ``batch_size`` is the global batch of all processes.
    val_fn
        ``val_fn(model) -> float`` (lower is better), called in eval mode every
        ``val_every`` steps and at the end, on rank 0 only; the best weights are restored at
        the end and training stops after ``patience`` validations without improvement (0:
        never).
    checkpoint
        File for atomic checkpoints every ``checkpoint_every`` steps and at the end (written by
        rank 0).
    resume
        Continue from ``checkpoint``.
    param_groups
        Parameter groups with their own learning rate: ``[{"params": [...], "lr_scale": 0.1,
        "start_step": 200}, ...]``: a group's rate is ``lr_scale`` times the schedule from
        ``start_step`` on, and 0 before (e.g. a pretrained encoder fine-tuned more gently and
        later than a new head). Default: every parameter of ``model``, one group.
    on_log
        Called every ``val_every`` steps with ``(step, logs, model)`` (e.g.
        :class:`emae.train.tensorboard.TensorBoardLogger`), on rank 0 only, with the model in train
        mode.

    Returns
    -------
    dict
        ``{"history": [...], "curve": [...], "steps_done": int, "best_val": float | None,
        "stopped_early": bool, "seconds": float, "samples_per_s": float, "device": str,
        "precision": str, "processes": int}``, the same on every process. ``history`` holds
        the logs of every validation; ``curve`` the training loss averaged over every
        ``log_every`` steps (the learning curve a report draws).
    """
    info = distributed.current()
    main = info.rank == 0
    device = process_device(settings.device, info)
    amp_dtype = select_precision(device, settings.precision)
    channels_last = device.type == "cpu"  # faster convolutions on CPU in fp32 and bf16 alike
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if len(dataset) < settings.steps * settings.batch_size:  # type: ignore[arg-type]
        raise EmaeError(
            f"the dataset holds {len(dataset)} items, fewer than steps x batch_size = "  # type: ignore[arg-type]
            f"{settings.steps} x {settings.batch_size}"
        )
    if settings.batch_size % info.world_size:
        raise EmaeError(
            f"batch_size must be a multiple of the number of processes, got "
            f"batch_size={settings.batch_size} for {info.world_size} processes"
        )
    groups = param_groups or [{"params": list(model.parameters())}]
    optimizer = torch.optim.AdamW(
        [{"params": list(g["params"])} for g in groups],
        lr=settings.lr,
        weight_decay=settings.weight_decay,
    )
    schedule = lr_schedule(settings)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        [group_schedule(schedule, g.get("lr_scale", 1.0), g.get("start_step", 0)) for g in groups],
    )
    state: dict[str, Any] = {
        "step": 0,
        "best_val": None,
        "bad_evals": 0,
        "history": [],
        "curve": [],
        "window": [0.0, 0],
        "best_model": None,
        "stopped_early": False,
    }
    if resume:
        if checkpoint is None:
            raise EmaeError("resume requested but no checkpoint path was given")
        saved = load_checkpoint(checkpoint)
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise EmaeError(
                f"{checkpoint}: does not fit this model and optimizer ({first}); pass "
                "--overwrite to start again"
            ) from None
        state.update({k: saved[k] for k in state if k in saved})
        if main:
            logger.info(
                "resuming at step %d of %d from %s", state["step"], settings.steps, checkpoint
            )

    def save() -> None:
        if checkpoint is None:
            return
        if main:
            save_checkpoint(
                Path(checkpoint),
                {
                    **state,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                },
            )
        distributed.barrier()

    def validate(step: int, logs: dict[str, float]) -> None:
        if val_fn is None:
            return
        val = torch.tensor(float("nan"), dtype=torch.float64, device=device)
        if main:
            model.eval()
            with (
                torch.no_grad(),
                torch.autocast(device.type, amp_dtype, enabled=amp_dtype is not None),
            ):
                val.fill_(float(val_fn(model)))
            model.train()
        val = float(distributed.broadcast(val))  # rank 0's score: one decision everywhere
        logs["val_loss"] = val
        if state["best_val"] is None or val < state["best_val"]:
            state["best_val"], state["bad_evals"] = val, 0
            state["best_model"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            state["bad_evals"] += 1
        if settings.patience and state["bad_evals"] >= settings.patience:
            state["stopped_early"] = True
            if main:
                logger.info(
                    "early stop at step %d: no improvement in %d validations",
                    step,
                    settings.patience,
                )

    start = state["step"]
    size, share = settings.batch_size, settings.batch_size // info.world_size
    batches = (  # this process's share of step k: one range of item indices per step
        range(k * size + info.rank * share, k * size + (info.rank + 1) * share)
        for k in range(start, settings.steps)
    )
    loader = DataLoader(
        dataset,
        batch_sampler=batches,  # type: ignore[arg-type]
        num_workers=settings.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    began = time.perf_counter()
    step = start
    with (
        distributed.sync_batchnorm(model, enabled=info.world_size > 1 and device.type == "cuda"),
        tqdm(
            total=settings.steps,
            initial=start,
            disable=not (settings.progress and main),
            desc="training",
            unit="step",
            dynamic_ncols=True,
        ) as bar,
    ):
        compute: nn.Module = _LossModule(model, loss_fn)
        if info.world_size > 1:  # averages the gradients during backward
            compute = DistributedDataParallel(
                compute, device_ids=[device.index] if device.type == "cuda" else None
            )
        model.train()
        for step, batch in enumerate(loader, start=start):
            if state["stopped_early"]:
                break
            batch = _to(batch, device, channels_last)
            generator = step_generator(settings.seed, step, info.rank)
            with torch.autocast(device.type, amp_dtype, enabled=amp_dtype is not None):
                loss, logs = compute(batch, step, generator)
            mean_loss = float(distributed.mean(loss.detach().float()))  # over all processes
            if not math.isfinite(mean_loss):
                raise EmaeError(
                    f"training diverged at step {step}: loss is {mean_loss}; "
                    "lower the learning rate or check the input normalization"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            scheduler.step()
            state["step"] = step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{mean_loss:.4g}", refresh=False)
            if step == start + 4 and main:
                per_step = (time.perf_counter() - began) / 5
                logger.info(
                    "estimated %.1f min for the remaining %d steps on %s",
                    per_step * (settings.steps - step) / 60,
                    settings.steps - step,
                    device,
                )
            done = state["step"]
            state["window"] = [state["window"][0] + mean_loss, state["window"][1] + 1]
            if done % settings.log_every == 0 or done == settings.steps:
                total, count = state["window"]
                state["curve"].append({"step": done, "loss": total / count})
                state["window"] = [0.0, 0]
            if done % settings.val_every == 0 or done == settings.steps:
                logs = {
                    "step": done,
                    "loss": mean_loss,
                    "lr": scheduler.get_last_lr()[0],
                    **_mean_logs(logs, device),
                }
                distributed.broadcast_buffers(model)  # e.g. BatchNorm statistics of rank 0
                validate(done, logs)
                state["history"].append(logs)
                if on_log is not None and main:
                    on_log(done, logs, model)
            if done % settings.checkpoint_every == 0 or done == settings.steps:
                save()
    if state["stopped_early"]:
        save()
    seconds = time.perf_counter() - began
    seconds = float(
        distributed.broadcast(torch.tensor(seconds, dtype=torch.float64, device=device))
    )
    if state["best_model"] is not None:
        model.load_state_dict(state["best_model"])
    samples = (state["step"] - start) * settings.batch_size
    return {
        "history": state["history"],
        "curve": state["curve"],
        "steps_done": state["step"],
        "steps_this_run": state["step"] - start,
        "best_val": state["best_val"],
        "stopped_early": state["stopped_early"],
        "seconds": seconds,
        "samples_per_s": samples / seconds if seconds > 0 else float("nan"),
        "device": str(device) if info.world_size == 1 else device.type,
        "precision": "bf16" if amp_dtype is not None else "fp32",
        "processes": info.world_size,
    }
