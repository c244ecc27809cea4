"""One task of ``emae compress``: code one chunk of the input into the container.

The chunk's region is read without a halo (every chunk decodes on its own), coded by a
:class:`~emae.compress.ChunkCoder`, written as one bitstream file
(:func:`emae.compress.container.write_chunk`) and then recorded as done, with its size in bytes,
through detect's done-state (:mod:`emae.volume.done`); sections, resuming and the Dask runner
are detect's own (:mod:`emae.volume.run`).
"""

from __future__ import annotations

from typing import Any

from emae.compress.coder import ChunkCoder
from emae.compress.container import write_chunk
from emae.volume.chunks import Chunk, ChunkJob, chunk_device, read_region
from emae.volume.done import write_chunk_record


def compress_chunk(c: Chunk, coder: ChunkCoder, job: ChunkJob) -> dict[str, Any]:
    """Code chunk ``c`` of ``job.source`` into the container ``job.out``; its QC numbers:
    the chunk's position and size, and ``bytes``, the length of its bitstream."""
    import torch

    if job.threads:
        torch.set_num_threads(job.threads)
    device = chunk_device(job.device, job.gpus)
    if device.startswith("cuda:"):
        torch.cuda.set_device(int(device.removeprefix("cuda:")))
    region, _, _ = read_region(job.source, job.scale, c, 0)
    data = coder.on(device).encode(region)
    write_chunk(job.out, c, data)
    qc = {
        "z": c.z,
        "y0": c.y0,
        "x0": c.x0,
        "height": c.y1 - c.y0,
        "width": c.x1 - c.x0,
        "bytes": len(data),
    }
    write_chunk_record(job.out, c.name, qc, [])
    return qc
