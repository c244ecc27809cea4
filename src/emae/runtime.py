"""Where and how computations run: devices, numeric precision, random generators.

One place for what every entry point (training, scoring, whole-volume workers, the napari
widget) decides the same way:

- :func:`resolve_device` turns ``auto|cpu|cuda|cuda:N|mps`` into the device this process uses,
  and :func:`select_device` into a ``torch.device``;
- :func:`select_precision` the autocast dtype of ``auto|fp32|bf16`` on a device;
- :func:`as_generator` a random generator from a seed: library code never seeds global state,
  every random entry point takes a ``seed`` (an int) or a running ``numpy.random.Generator``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from emae.errors import EmaeError


def as_generator(seed: int | np.random.Generator) -> np.random.Generator:
    """A generator for ``seed``: an int seeds a new one, a generator is used as it is.

    Passing a generator lets several calls draw from one stream (e.g. a dataset generated
    piece by piece); passing the same int twice gives the same draws.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise EmaeError(f"seed must be an int or a numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed))


DEVICES = "auto, cpu, cuda, cuda:N or mps"


def check_device_name(name: str) -> None:
    """Refuse a device name other than ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    index = name.removeprefix("cuda:")
    if name not in ("auto", "cpu", "cuda", "mps") and not (
        name.startswith("cuda:") and index.isdigit()
    ):
        raise EmaeError(f"device must be {DEVICES}, got {name!r}")


def resolve_device(name: str = "auto") -> str:
    """The device this process computes on, from ``auto|cpu|cuda|cuda:N|mps``.

    ``"auto"`` picks a CUDA GPU, then Apple MPS, then the CPU, as this process sees them (a
    Dask worker resolves it on its own machine). A GPU that torch does not see is a one-line
    error.

    Returns
    -------
    str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    """
    check_device_name(name)
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    if name == "cpu":
        return name
    if name == "mps":
        if not mps:
            raise EmaeError("device 'mps' requested but torch sees no Apple GPU")
        return name
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0 or (name != "cuda" and int(name.removeprefix("cuda:")) >= count):
        raise EmaeError(f"device {name!r} requested but torch sees {count} CUDA GPU(s)")
    return name


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a model's weights are: its first parameter's or buffer's device (PCA holds buffers
    only), the CPU for a model without either."""
    tensor = next(iter(model.state_dict().values()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def select_device(name: str = "auto") -> torch.device:
    """:func:`resolve_device` as a ``torch.device``."""
    return torch.device(resolve_device(name))


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


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch's CPU operations on one thread inside the block (then restore the count).

    A float32 convolution may round differently with another number of threads; results that
    must be reproducible bit for bit (decoded images, a codec's side information) are computed
    one thread per task, and parallel over tasks.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
