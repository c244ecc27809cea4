"""One plain training loop for every emae model.

The loop knows nothing about autoencoders or classifiers: it is given a model, a loss function
``loss_fn(model, batch, step, generator) -> (loss, logs)``, a dataset whose item ``i`` is fixed (so
training is counted in samples seen, never in epochs over a dataset that may be terabytes), and a
:class:`LoopSettings`. It runs AdamW with a linear warm-up then cosine learning-rate decay,
gradient clipping, periodic validation with early stopping, atomic checkpoints and a progress bar.

Resuming is exact: batch ``k`` always holds dataset items ``k * B .. (k + 1) * B - 1``, the random
numbers of step ``k`` come from a generator seeded with ``(seed, k)``, and the checkpoint holds the
model, optimizer and scheduler states. A resumed run therefore ends with the same weights as an
uninterrupted one (bit for bit on CPU in fp32).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from emae.errors import EmaeError
from emae.io.atomic import atomic_file

logger = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any, int, torch.Generator], tuple[Tensor, dict[str, float]]]
ValFn = Callable[[nn.Module], float]


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
    patience: int = 0
    checkpoint_every: int = 500
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    precision: str = "auto"
    progress: bool = True


def select_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; other names are checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EmaeError("device 'cuda' requested but torch sees no CUDA GPU")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise EmaeError(f"device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    return torch.device(name)


def select_precision(device: torch.device, name: str = "auto") -> torch.dtype | None:
    """The autocast dtype: ``None`` for fp32, else ``torch.bfloat16``.

    ``"auto"`` uses bf16 on GPUs that support it and on CPUs with native bf16 instructions
    (AVX512-BF16 or AMX), where it is usually faster than fp32; fp32 elsewhere.
    """
    if name == "fp32":
        return None
    if name not in ("auto", "bf16"):
        raise EmaeError(f"precision must be auto, fp32 or bf16, got {name!r}")
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    elif device.type == "cpu":
        supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    else:
        supported = False
    if name == "bf16" and not supported:
        raise EmaeError(f"precision 'bf16' requested but {device} has no native bf16 support")
    return torch.bfloat16 if supported else None


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of step ``step``: independent of how the run was interrupted."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def _schedule(settings: LoopSettings) -> Callable[[int], float]:
    warmup = min(settings.warmup_steps, max(settings.steps - 1, 0))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(settings.steps - warmup, 1)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, overwrite=True) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`train_loop`; never unpickles arbitrary objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise EmaeError(f"{path}: no checkpoint to resume from") from None
    except Exception as exc:  # a corrupt or foreign file; never execute its contents
        raise EmaeError(
            f"{path}: not a readable emae checkpoint ({exc.__class__.__name__})"
        ) from None


def _to(batch: Any, device: torch.device, channels_last: bool) -> Any:
    if isinstance(batch, Tensor):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.ndim == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(b, device, channels_last) for b in batch)
    return batch


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
) -> dict[str, Any]:
    """Train ``model`` in place and return the run's history.

    Parameters
    ----------
    model
        Any ``nn.Module``; moved to the selected device.
    loss_fn
        ``loss_fn(model, batch, step, generator) -> (scalar loss, {name: float})``; ``batch`` is
        what the ``DataLoader`` yields, already on the device; ``generator`` is the step's own.
    dataset
        Map-style dataset with at least ``steps * batch_size`` fixed items.
    settings
        Optimization settings.
    val_fn
        ``val_fn(model) -> float`` (lower is better), called in eval mode every
        ``val_every`` steps and at the end; the best weights are restored at the end and
        training stops after ``patience`` validations without improvement (0: never).
    checkpoint
        File for atomic checkpoints every ``checkpoint_every`` steps and at the end.
    resume
        Continue from ``checkpoint``.
    on_log
        Called every ``val_every`` steps with ``(step, logs, model)`` (e.g. TensorBoard).

    Returns
    -------
    dict
        ``{"history": [...], "steps_done": int, "best_val": float | None, "stopped_early": bool,
        "seconds": float, "samples_per_s": float, "device": str, "precision": str}``.
    """
    device = select_device(settings.device)
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
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(settings))
    state: dict[str, Any] = {
        "step": 0,
        "best_val": None,
        "bad_evals": 0,
        "history": [],
        "best_model": None,
        "stopped_early": False,
    }
    if resume:
        if checkpoint is None:
            raise EmaeError("resume requested but no checkpoint path was given")
        saved = load_checkpoint(checkpoint)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state.update({k: saved[k] for k in state if k in saved})
        logger.info("resuming at step %d of %d from %s", state["step"], settings.steps, checkpoint)

    def save() -> None:
        if checkpoint is not None:
            _save_checkpoint(
                Path(checkpoint),
                {
                    **state,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                },
            )

    def validate(step: int, logs: dict[str, float]) -> None:
        if val_fn is None:
            return
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, amp_dtype, enabled=amp_dtype is not None):
            val = float(val_fn(model))
        model.train()
        logs["val_loss"] = val
        if state["best_val"] is None or val < state["best_val"]:
            state["best_val"], state["bad_evals"] = val, 0
            state["best_model"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            state["bad_evals"] += 1
        if settings.patience and state["bad_evals"] >= settings.patience:
            state["stopped_early"] = True
            logger.info(
                "early stop at step %d: no improvement in %d validations", step, settings.patience
            )

    start = state["step"]
    indices = range(start * settings.batch_size, settings.steps * settings.batch_size)
    loader = DataLoader(
        dataset,
        batch_size=settings.batch_size,
        sampler=indices,
        num_workers=settings.num_workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    model.train()
    began = time.perf_counter()
    bar = tqdm(
        total=settings.steps,
        initial=start,
        disable=not settings.progress,
        desc="training",
        unit="step",
        dynamic_ncols=True,
    )
    step = start
    try:
        for step, batch in enumerate(loader, start=start):
            if state["stopped_early"]:
                break
            batch = _to(batch, device, channels_last)
            with torch.autocast(device.type, amp_dtype, enabled=amp_dtype is not None):
                loss, logs = loss_fn(model, batch, step, step_generator(settings.seed, step))
            if not torch.isfinite(loss):
                raise EmaeError(
                    f"training diverged at step {step}: loss is {loss.item()}; "
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
            bar.set_postfix(loss=f"{loss.item():.4g}", refresh=False)
            if step == start + 4:
                per_step = (time.perf_counter() - began) / 5
                logger.info(
                    "estimated %.1f min for the remaining %d steps on %s",
                    per_step * (settings.steps - step) / 60,
                    settings.steps - step,
                    device,
                )
            done = state["step"]
            if done % settings.val_every == 0 or done == settings.steps:
                logs = {
                    "step": done,
                    "loss": float(loss.item()),
                    "lr": scheduler.get_last_lr()[0],
                    **logs,
                }
                validate(done, logs)
                state["history"].append(logs)
                if on_log is not None:
                    on_log(done, logs, model)
            if done % settings.checkpoint_every == 0 or done == settings.steps:
                save()
    finally:
        bar.close()
    if state["stopped_early"]:
        save()
    seconds = time.perf_counter() - began
    if state["best_model"] is not None:
        model.load_state_dict(state["best_model"])
    samples = (state["step"] - start) * settings.batch_size
    return {
        "history": state["history"],
        "steps_done": state["step"],
        "best_val": state["best_val"],
        "stopped_early": state["stopped_early"],
        "seconds": seconds,
        "samples_per_s": samples / seconds if seconds > 0 else float("nan"),
        "device": str(device),
        "precision": "bf16" if amp_dtype is not None else "fp32",
    }
