"""Running ``emae detect``'s chunk tasks: in this process or on a Dask cluster, CPU or GPU.

:func:`run_chunks` maps the chunks still to do with :func:`emae.detect_chunk.process_chunk`:
in this process (``scheduler="synchronous"``), on a new local cluster, or on an existing one
(``scheduler="tcp://host:8786"``). The mapper is scattered to the workers once, and at most a
few tasks per worker are in flight, so neither the scheduler nor this process holds one task
per chunk of a large volume. A failing chunk is retried, then returned with its error.

On GPUs a local cluster has one worker per GPU, each pinned to its own
(:func:`emae.detect_chunk.pin_device`); workers of an existing cluster use their default CUDA
device (dask-cuda gives each worker one GPU that way).
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from emae.detect_chunk import Chunk, Mapper, pin_device, process_chunk
from emae.errors import EmaeError


def client_for(workers: int | None, scheduler: str | None, device: str = "cpu") -> Any:
    """A Dask client: of the cluster at ``scheduler``, or of a new local cluster of ``workers``
    one-thread processes (default: one per CPU core, or one per GPU for ``device="cuda"``,
    each then pinned to its GPU)."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise EmaeError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    n = workers or gpus or max(1, os.cpu_count() or 1)
    cluster = LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    if gpus:
        for address, gpu in gpu_assignment(client.scheduler_info()["workers"], gpus).items():
            client.run(pin_device, gpu, workers=[address])
    return client


def gpu_assignment(addresses: Any, gpus: int) -> dict[str, str]:
    """``{worker address: "cuda:k"}``: the local workers spread over ``gpus`` GPUs in turn."""
    return {a: f"cuda:{i % gpus}" for i, a in enumerate(sorted(addresses))}


def resolve_device(name: str) -> str:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` from ``auto|cpu|cuda|cuda:N`` (``auto``: CUDA when
    torch sees a GPU, else the CPU); a one-line error for a GPU torch does not see."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    index = name.removeprefix("cuda:") if name.startswith("cuda:") else None
    if name != "cuda" and not (index and index.isdigit()):
        raise EmaeError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0 or (index is not None and int(index) >= count):
        raise EmaeError(f"device {name!r} requested but torch sees {count} CUDA GPU(s)")
    return name


def run_chunks(
    todo: list[Chunk],
    mapper: Mapper,
    source: str,
    scale: int,
    out: str,
    tile: int,
    overlap: int,
    workers: int | None,
    scheduler: str | None,
    retries: int,
    progress: bool,
    threads: int | None = None,
    device: str = "cpu",
) -> tuple[list[tuple[Chunk, str]], float]:
    """Process the chunks; returns those that failed, with their error, and the seconds spent
    starting the cluster and shipping the model to it (0 in this process)."""
    if not todo:
        return [], 0.0
    kwargs = {"tile": tile, "overlap": overlap, "device": device}
    bar = tqdm(total=len(todo), desc="detecting", unit="chunk", disable=not progress)
    failed = []
    if scheduler == "synchronous":
        for c in todo:
            for attempt in range(retries + 1):
                try:
                    process_chunk(c, mapper, source, scale, out, threads=threads, **kwargs)
                    break
                except Exception as exc:  # reported with the chunk's coordinates
                    if attempt == retries:
                        failed.append((c, f"{type(exc).__name__}: {exc}"))
            bar.update(1)
        bar.close()
        return failed, 0.0
    from distributed import as_completed

    began = time.perf_counter()
    with client_for(workers, scheduler, device) as client:
        n_workers = max(1, len(client.scheduler_info()["workers"]))
        if threads is None and not scheduler:
            threads = max(1, (os.cpu_count() or 1) // n_workers)
        shared = client.scatter(mapper, broadcast=True)
        startup = time.perf_counter() - began
        chunks = iter(todo)
        # A bounded window of tasks in flight: the scheduler and this process hold a few per
        # worker, not one per chunk (millions on a large volume).
        window = max(4, 4 * n_workers)

        def submit(c: Chunk) -> Any:
            future = client.submit(
                process_chunk,
                c,
                shared,
                source,
                scale,
                out,
                threads=threads,
                retries=retries,
                pure=False,
                **kwargs,
            )
            pending[future] = c
            return future

        pending: dict[Any, Chunk] = {}
        running = as_completed([submit(c) for c in itertools.islice(chunks, window)])
        for future in running:
            c = pending.pop(future)
            if future.status == "error":
                exc = future.exception()
                failed.append((c, f"{type(exc).__name__}: {exc}"))
            future.release()
            bar.update(1)
            following = next(chunks, None)
            if following is not None:
                running.add(submit(following))
    bar.close()
    return failed, startup
