"""Running ``emae detect``'s tasks: in this process or on a Dask cluster, CPU or GPU.

:class:`Runner` runs the tasks of a run (the chunks, :func:`emae.volume.chunks.process_chunk`;
the sections, :mod:`emae.volume.sections`) in this process (``scheduler="synchronous"``), on a
new local cluster, or on an existing one (``scheduler="tcp://host:8786"``). The mapper is
scattered to the workers once, and at most a few tasks per worker are in flight, so neither the
scheduler nor this process holds one task per chunk of a large volume. A task can enable others
(a section's task once its last chunk is done), which then run before the rest. A failing task
is retried, then returned with its error.

On GPUs (``device="cuda"``) a local cluster has one worker per GPU by default, worker ``k`` on
GPU ``k % gpus`` (:func:`emae.volume.chunks.chunk_device`); ``cuda:N`` starts one worker on GPU
N. Workers of an existing cluster resolve the device themselves, so a client without a GPU can
drive GPU workers (``cuda`` is then each worker's default GPU: give each one GPU, as dask-cuda
does).
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

from emae.errors import EmaeError
from emae.runtime import check_device_name, resolve_device
from emae.volume.chunks import Chunk, process_chunk


def client_for(workers: int | None, scheduler: str | None, device: str = "cpu") -> Any:
    """A Dask client, and the GPUs its workers are spread over (0: each worker resolves
    ``device`` itself): of the cluster at ``scheduler``, or of a new local cluster of
    ``workers`` one-thread processes (default: one per CPU core; one per GPU for
    ``device="cuda"``; one for ``"cuda:N"``)."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="10s"), 0
        except (OSError, TimeoutError) as exc:
            raise EmaeError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    default = 1 if device.startswith("cuda:") else gpus or max(1, os.cpu_count() or 1)
    # Dask starts workers with MALLOC_TRIM_THRESHOLD_ set, which also fixes glibc's mmap
    # threshold: every large tensor of a forward pass is then mapped and page-faulted afresh,
    # and a chunk took 1.3x as long as in one process (docs/benchmarks.md). Our workers run
    # with glibc's defaults; their memory stays bounded by one chunk's working set.
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = LocalCluster(
            n_workers=workers or default,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
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


#: A task: its key (for progress and errors), the function and its arguments.
Task = tuple[Any, Callable[..., Any], tuple[Any, ...]]
#: Called in this process with a finished task's key and result; returns the tasks it enables.
Follow = Callable[[Any, Any], list[Task]]


def chunk_tasks(
    todo: Iterable[Chunk],
    mapper: Any,
    job: Any,
    fn: Callable[..., Any] | None = None,
) -> Iterator[Task]:
    """The tasks mapping the chunks ``todo``: ``fn(chunk, mapper, job)``, by default (None)
    :func:`~emae.volume.chunks.process_chunk`."""
    fn = fn or process_chunk
    for c in todo:
        yield c, fn, (c, mapper, job)


class Runner:
    """Runs ``emae detect``'s tasks in this process or on a Dask cluster, CPU or GPU.

    A context manager: entering starts the cluster (``scheduler=None``: a local one of
    ``workers`` processes) or connects to ``scheduler``; ``"synchronous"`` runs every task
    here. Tasks run with :meth:`run`, several times over one cluster (the chunks, then the
    sections).

    Attributes
    ----------
    startup_seconds
        Starting the cluster and shipping what :meth:`share` shipped (0 in this process).
    threads
        Torch threads per task: ``threads`` or, on a local cluster, the CPU cores shared
        among its workers.
    gpus
        GPUs a local cluster spreads its workers over (0: each worker resolves its device).
    """

    def __init__(
        self,
        *,
        workers: int | None,
        scheduler: str | None,
        device: str,
        threads: int | None,
        retries: int,
        progress: bool,
    ) -> None:
        self.workers, self.scheduler, self.device = workers, scheduler, device
        self.threads, self.retries, self.progress = threads, retries, progress
        self.gpus, self.startup_seconds = 0, 0.0
        self._stack = contextlib.ExitStack()
        self.client: Any = None

    def __enter__(self) -> Runner:
        if self.scheduler == "synchronous":
            return self
        began = time.perf_counter()
        client, self.gpus = client_for(self.workers, self.scheduler, self.device)
        local = None if self.scheduler else client.cluster  # closed with the client
        # The client closes first, releasing the scattered data: workers that shut down while
        # a client still holds it make the scheduler log an ERROR ("caused the cluster to lose
        # scattered data") after a successful run.
        self._stack.enter_context(local or contextlib.nullcontext())
        self._stack.enter_context(client)
        self.client = client
        n_workers = max(1, len(client.nthreads()))
        if self.threads is None and not self.scheduler:
            self.threads = max(1, (os.cpu_count() or 1) // n_workers)
        self.window = max(4, 4 * n_workers)
        self.startup_seconds = time.perf_counter() - began
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def share(self, value: Any) -> Any:
        """``value`` shipped to every worker once (here: itself); counted in the start-up."""
        if self.client is None:
            return value
        began = time.perf_counter()
        shared = self.client.scatter(value, broadcast=True)
        self.startup_seconds += time.perf_counter() - began
        return shared

    def run(
        self, tasks: Iterable[Task], *, desc: str, total: int, follow: Follow | None = None
    ) -> list[tuple[Any, str]]:
        """Run ``tasks`` and the tasks ``follow`` returns after each success (run first);
        returns the keys of those that failed after the retries, with their error."""
        bar = tqdm(total=total, desc=desc, unit="task", disable=not self.progress)
        failed: list[tuple[Any, str]] = []
        queue = _Queue(tasks)
        if self.client is None:
            while (task := queue.next()) is not None:
                key, fn, args = task
                for attempt in range(self.retries + 1):
                    try:
                        result = fn(*args)
                    except Exception as exc:  # reported with the task's key
                        if attempt == self.retries:
                            failed.append((key, f"{type(exc).__name__}: {exc}"))
                        continue
                    queue.follow(follow, key, result, bar)
                    break
                bar.update(1)
            bar.close()
            return failed
        from distributed import as_completed

        pending: dict[Any, Any] = {}

        def submit(task: Task) -> Any:
            key, fn, args = task
            future = self.client.submit(fn, *args, retries=self.retries, pure=False)
            pending[future] = key
            return future

        # A bounded window of tasks in flight: the scheduler and this process hold a few per
        # worker, not one per chunk (millions on a large volume).
        first = [queue.next() for _ in range(self.window)]
        running = as_completed([submit(t) for t in first if t is not None])
        for future in running:
            key = pending.pop(future)
            if future.status == "error":
                exc = future.exception()
                failed.append((key, f"{type(exc).__name__}: {exc}"))
            else:
                queue.follow(follow, key, future.result(), bar)
            future.release()
            bar.update(1)
            following = queue.next()
            if following is not None:
                running.add(submit(following))
            while len(pending) < self.window and (extra := queue.next()) is not None:
                running.add(submit(extra))
        bar.close()
        return failed


class _Queue:
    """Tasks to run: those that others enabled first, then the given ones in order."""

    def __init__(self, tasks: Iterable[Task]) -> None:
        self.tasks, self.enabled = iter(tasks), collections.deque()

    def next(self) -> Task | None:
        return self.enabled.popleft() if self.enabled else next(self.tasks, None)

    def follow(self, follow: Follow | None, key: Any, result: Any, bar: Any) -> None:
        if follow is not None:
            more = follow(key, result)
            self.enabled.extend(more)
            if more:
                bar.total += len(more)
                bar.refresh()
