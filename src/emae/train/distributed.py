"""Several processes training one model: the few helpers :mod:`emae.train.loop` needs for DDP.

``torchrun --nproc_per_node N ...`` starts N copies of a command and tells each its place through
the environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``).
:func:`init_from_env` turns that into a ``torch.distributed`` process group (NCCL on CUDA, gloo
on the CPU); everything else here is a no-op in a single process, so callers never branch on
whether they run distributed.

Gradients are averaged by PyTorch's ``DistributedDataParallel`` (see :mod:`emae.train.loop`);
these helpers only move the few values that are not gradients: the loss for the log, the
validation score, buffers such as BatchNorm's running statistics, and barriers around files
that rank 0 alone writes.

BatchNorm: ``nn.SyncBatchNorm`` computes batch statistics over all processes, but PyTorch
accepts it on GPU modules only (``"SyncBatchNorm layers only work with GPU modules"`` on the CPU,
checked with torch 2.13). :func:`sync_batchnorm` therefore converts on CUDA only; on the CPU each
process normalizes with the statistics of its own share of the batch, and the running
statistics are those of rank 0 (DDP broadcasts rank 0's buffers before every forward pass).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from emae.errors import EmaeError
from emae.runtime import select_device

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its
    machine (its GPU index)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def is_initialized() -> bool:
    """Whether a ``torch.distributed`` process group exists."""
    return dist.is_available() and dist.is_initialized()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise EmaeError(f"environment variable {name} must be an integer, got {value!r}") from None


def current() -> DistInfo:
    """This process's place in the running process group; ``DistInfo()`` without one."""
    if not is_initialized():
        return DistInfo()
    rank = dist.get_rank()
    return DistInfo(rank, dist.get_world_size(), _env_int("LOCAL_RANK", rank))


def init_from_env() -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment.

    With ``WORLD_SIZE > 1`` and no process group yet, calls ``init_process_group`` with the
    ``"nccl"`` backend when CUDA is available (after selecting GPU ``LOCAL_RANK``), ``"gloo"``
    otherwise. Without those variables (a plain ``python`` or ``emae`` process) nothing happens.

    Returns
    -------
    DistInfo
        ``DistInfo(rank, world_size, local_rank)``; ``DistInfo(0, 1, 0)`` in a single process.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size > 1 and not is_initialized():
        if not dist.is_available():
            raise EmaeError(
                f"WORLD_SIZE={world_size} asks for distributed training but this torch build "
                "has no torch.distributed"
            )
        local_rank = _env_int("LOCAL_RANK", 0)
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend)
        logger.info(
            "joined %s process group as rank %d of %d", backend, dist.get_rank(), world_size
        )
    return current()


def is_main() -> bool:
    """True on rank 0 and in a single process: the process that writes files and logs."""
    return current().rank == 0


def barrier() -> None:
    """Wait until every process reaches this point; a no-op in a single process."""
    if not is_initialized():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def cleanup(failed: bool = False) -> None:
    """Leave the process group at the end of a ``torchrun`` run; a no-op without one.

    On success every process first waits for the others (rank 0 writes the model folder after
    training while the rest wait here), so that the group is destroyed collectively, as
    ``torch.distributed`` requires: a process that tears its connections down while a peer
    still holds them can abort. After a failure (``failed=True``) there is no wait: ``torchrun``
    stops the other processes once this one exits with an error.
    """
    if not is_initialized():
        return
    if not failed:
        barrier()
    dist.destroy_process_group()


def mean(value: Tensor) -> Tensor:
    """The average of ``value`` over all processes (a new tensor); ``value`` in one process.

    ``value`` must live where the backend communicates: on the process's GPU for NCCL, on the
    CPU for gloo.
    """
    if not is_initialized():
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


def broadcast(value: Tensor) -> Tensor:
    """``value`` of rank 0, copied in place into ``value`` on every process, and returned."""
    if is_initialized():
        dist.broadcast(value, src=0)
    return value


def broadcast_buffers(module: nn.Module) -> None:
    """Give every process rank 0's buffers (e.g. BatchNorm running statistics), in place."""
    if is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


@contextmanager
def sync_batchnorm(module: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """BatchNorm layers of ``module`` replaced by ``nn.SyncBatchNorm`` inside the block.

    The replacements share the original layers' parameters and buffers, and the original layers
    are put back on exit (also after an exception), so ``module`` keeps its classes and its
    trained state. A root module that is itself a BatchNorm layer, or ``enabled=False``, is left
    as it is.
    """
    if not enabled or isinstance(module, nn.modules.batchnorm._BatchNorm):
        yield module
        return
    originals = {
        name: layer
        for name, layer in module.named_modules()
        if isinstance(layer, nn.modules.batchnorm._BatchNorm)
    }
    nn.SyncBatchNorm.convert_sync_batchnorm(module)  # replaces the children in place
    try:
        yield module
    finally:
        for name, layer in originals.items():
            layer.train(module.get_submodule(name).training)
            module.set_submodule(name, layer)


def process_device(name: str, info: DistInfo) -> torch.device:
    """This process's device: :func:`select_device` in one process, else GPU ``local_rank``
    (``"auto"``, ``"cuda"``) or the CPU (``"cpu"``, or ``"auto"`` without CUDA)."""
    if info.world_size == 1:
        return select_device(name)
    if name not in ("auto", "cuda", "cpu"):
        raise EmaeError(
            f"with {info.world_size} processes each one uses GPU LOCAL_RANK or the CPU: "
            f"device must be auto, cuda or cpu, got {name!r}"
        )
    if name != "cpu" and select_device(name).type == "cuda":
        return torch.device("cuda", info.local_rank)
    if torch.distributed.get_backend() == "nccl":
        raise EmaeError(
            "device 'cpu' needs the gloo backend, but the process group uses nccl; "
            "train on the GPUs (device auto or cuda) or hide them with CUDA_VISIBLE_DEVICES="
        )
    return torch.device("cpu")
