"""Running ``emae detect``'s chunk tasks: in this process or on a Dask cluster, CPU or GPU.

:func:`run_chunks` maps the chunks still to do with :func:`emae.volume.chunks.process_chunk`:
in this process (``scheduler="synchronous"``), on a new local cluster, or on an existing one
(``scheduler="tcp://host:8786"``). The mapper is scattered to the workers once, and at most a
few tasks per worker are in flight, so neither the scheduler nor this process holds one task
per chunk of a large volume. A failing chunk is retried, then returned with its error.

On GPUs (``device="cuda"``) a local cluster has one worker per GPU by default, worker ``k`` on
GPU ``k % gpus`` (:func:`emae.volume.chunks.chunk_device`); ``cuda:N`` starts one worker on GPU
N. Workers of an existing cluster resolve the device themselves, so a client without a GPU can
drive GPU workers (``cuda`` is then each worker's default GPU: give each one GPU, as dask-cuda
does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from emae.errors import EmaeError
from emae.runtime import check_device_name, resolve_device
from emae.volume.chunks import Chunk, ChunkJob, Mapper, process_chunk


def client_for(workers: int | None, scheduler: str | None, device: str = "cpu") -> Any:
    """A Dask client, and the GPUs its workers are spread over (0: each worker resolves
    ``device`` itself): of the cluster at ``scheduler``, or of a new local cluster of
    ``workers`` one-thread processes (default: one per CPU core; one per GPU for
    ``device="cuda"``; one for ``"cuda:N"``)."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="10s"), 0
        except (OSError, TimeoutError) as exc:
            raise EmaeError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    default = 1 if device.startswith("cuda:") else gpus or max(1, os.cpu_count() or 1)
    cluster = LocalCluster(
        n_workers=workers or default, threads_per_worker=1, processes=True, dashboard_address=None
    )
    return Client(cluster), gpus


def device_for_run(device: str, scheduler: str | None) -> str:
    """The device name the tasks get: resolved here for a local cluster or this process (so
    that a missing GPU is refused before anything is written), only checked for an existing
    cluster, whose workers resolve it themselves."""
    if scheduler and scheduler != "synchronous":
        check_device_name(device)
        return device
    return resolve_device(device)


def run_chunks(
    todo: list[Chunk],
    mapper: Mapper,
    job: ChunkJob,
    *,
    workers: int | None,
    scheduler: str | None,
    retries: int,
    progress: bool,
) -> tuple[list[tuple[Chunk, str]], float]:
    """Process the chunks of ``job`` on ``scheduler`` (``"synchronous"``: in this process; an
    address; None: a local cluster of ``workers``); returns those that failed, with their
    error, and the seconds spent starting the cluster and shipping the model to it."""
    if not todo:
        return [], 0.0
    bar = tqdm(total=len(todo), desc="detecting", unit="chunk", disable=not progress)
    failed = []
    if scheduler == "synchronous":
        for c in todo:
            for attempt in range(retries + 1):
                try:
                    process_chunk(c, mapper, job)
                    break
                except Exception as exc:  # reported with the chunk's coordinates
                    if attempt == retries:
                        failed.append((c, f"{type(exc).__name__}: {exc}"))
            bar.update(1)
        bar.close()
        return failed, 0.0
    from distributed import as_completed

    began = time.perf_counter()
    client, gpus = client_for(workers, scheduler, job.device)
    local = None if scheduler else client.cluster  # closed with the client, not left to GC
    # The client closes first, releasing the scattered mapper: workers that shut down while a
    # client still holds it make the scheduler log an ERROR ("caused the cluster to lose
    # scattered data") after a successful run.
    with local or contextlib.nullcontext(), client:
        n_workers = max(1, len(client.nthreads()))
        threads = job.threads
        if threads is None and not scheduler:
            threads = max(1, (os.cpu_count() or 1) // n_workers)
        job = dataclasses.replace(job, threads=threads, gpus=gpus)
        shared = client.scatter(mapper, broadcast=True)
        startup = time.perf_counter() - began
        chunks = iter(todo)
        # A bounded window of tasks in flight: the scheduler and this process hold a few per
        # worker, not one per chunk (millions on a large volume).
        window = max(4, 4 * n_workers)

        def submit(c: Chunk) -> Any:
            future = client.submit(process_chunk, c, shared, job, retries=retries, pure=False)
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
