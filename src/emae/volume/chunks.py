"""One task of ``emae detect``: map one output chunk, write it, record it as done.

:class:`Mapper` turns raw tiles into the output channels: the anomaly map of an autoencoder
(:class:`~emae.anomaly.detector.AutoencoderDetector`) and/or the per-class probability maps of a
classifier (:class:`~emae.folders.classifier.FittedClassifier`). :func:`process_chunk` reads the
chunk's region of the input plus a halo, maps it with :func:`emae.volume.tiling.predict_tiled`,
writes its region of the map store (:mod:`emae.io.map_store`: the anomaly map in float32,
``probabilities`` in uint8, 0-255), finds the connected
regions in it (anomaly above the pixel threshold; each artifact class where it is the most
probable class with probability >= 0.5) and writes the chunk's record, its QC numbers and
component pieces (:mod:`emae.volume.done`).

Chunks are mapped on the device :func:`chunk_device` picks in the process that maps them (the
CPU, or a GPU: the tiles' forward passes and anomaly scores run there, the reading, writing and
detections on the CPU): the device asked for, resolved on the worker itself, or on a local
cluster of GPU workers, GPU ``k % gpus`` for worker ``k`` (worker names survive restarts, so a
restarted worker keeps its GPU).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from emae.anomaly.detector import AutoencoderDetector
from emae.folders.classifier import FittedClassifier
from emae.io import open_image
from emae.io.map_store import ANOMALY_DTYPE, image_paths
from emae.runtime import resolve_device
from emae.volume.components import ChunkComponents, chunk_components
from emae.volume.done import write_chunk_record
from emae.volume.tiling import predict_tiled

#: Class index of the anomaly in component records; classifier class k has index k + 1.
ANOMALY = 0


@dataclass(frozen=True, slots=True)
class Chunk:
    """Output chunk ``z, y0:y1, x0:x1`` of the section grid (slots: small, as a run of 2 TB
    makes about two million of them, a section at a time)."""

    z: int
    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def name(self) -> str:
        return f"z{self.z}_y{self.y0}_x{self.x0}"


@dataclass
class Mapper:
    """Raw tiles ``(B, h, w)`` -> channels ``(B, C, h, w)``: anomaly first, then class maps.

    ``precision`` is that of the classifier's forward passes (``fp32``, ``bf16`` or ``auto``;
    the detector carries its own).
    """

    detector: AutoencoderDetector | None = None
    classifier: FittedClassifier | None = None
    clean_class: str = "clean"
    precision: str = "fp32"

    @property
    def classes(self) -> tuple[str, ...]:
        return () if self.classifier is None else self.classifier.classes

    def on(self, device: str) -> Mapper:
        """This mapper with its forward passes on ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"``).

        A new mapper: the detector is a shallow copy with its ``device`` set (the model and
        statistics are shared), the classifier's module is moved to ``device``.
        """
        detector = None
        if self.detector is not None:
            detector = copy.copy(self.detector)
            detector.device = device
        classifier = self.classifier
        if classifier is not None:
            classifier = dataclasses.replace(classifier, model=classifier.model.to(device))
        return Mapper(detector, classifier, self.clean_class, self.precision)

    def class_names(self) -> list[str]:
        """Component class names by class index (see :data:`ANOMALY`)."""
        return ["anomaly", *self.classes]

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        parts = []
        if self.detector is not None:
            parts.append(self.detector.anomaly_map(tiles)[:, None])
        if self.classifier is not None:
            parts.append(self.classifier.probability_maps(tiles, self.precision))
        return np.concatenate(parts, axis=1)


def chunk_device(device: str, gpus: int = 0) -> str:
    """The device this process maps its chunks on.

    With ``gpus > 0`` (a local cluster of workers spread over that many GPUs) worker ``k``
    uses ``cuda:{k % gpus}``; otherwise ``device`` (``auto|cpu|cuda|cuda:N``) as resolved by
    :func:`resolve_device` here, on the worker.
    """
    if not gpus:
        return resolve_device(device)
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):  # not in a Dask worker
        name = 0
    return f"cuda:{(name if isinstance(name, int) else 0) % gpus}"


def read_region(source: str, scale: int, c: Chunk, halo: int) -> tuple[np.ndarray, int, int]:
    image = open_image(source, scale=scale)
    h, w = image.yx_shape
    ry0, rx0 = max(c.y0 - halo, 0), max(c.x0 - halo, 0)
    ry1, rx1 = min(c.y1 + halo, h), min(c.x1 + halo, w)
    yx = (slice(ry0, ry1), slice(rx0, rx1))
    region = np.asarray(image.data[(c.z, *yx) if image.ndim == 3 else yx])
    return image.check_finite(region, c.z, ry0, rx0), ry0, rx0


def write_region(array_path: str, c: Chunk, values: np.ndarray, channels: bool) -> None:
    array = zarr.open_array(array_path, mode="r+")
    yx = (slice(c.y0, c.y1), slice(c.x0, c.x1))
    spatial = array.ndim - (1 if channels else 0)
    where = (c.z, *yx) if spatial == 3 else yx
    array[(slice(None), *where) if channels else where] = values


@dataclass(frozen=True)
class ChunkJob:
    """What every chunk task of one run shares: one frozen description, sent with each task.

    Attributes
    ----------
    source, scale
        The input (any :func:`emae.io.open_image` source) and its pyramid level.
    out
        The map store being written.
    tile, overlap
        Tiles within a chunk and their overlap (also the halo read around a chunk), pixels.
    threads
        Torch threads of the process mapping the chunk (None: leave as it is).
    device, gpus
        Where the forward passes run (:func:`chunk_device`).
    """

    source: str
    scale: int
    out: str
    tile: int
    overlap: int
    threads: int | None = None
    device: str = "cpu"
    gpus: int = 0


def process_chunk(c: Chunk, mapper: Mapper, job: ChunkJob) -> dict[str, Any]:
    """Map one output chunk of ``job``, write it and its record; returns its QC numbers."""
    import torch

    if job.threads:
        torch.set_num_threads(job.threads)
    source, scale, out, tile, overlap = job.source, job.scale, job.out, job.tile, job.overlap
    device = chunk_device(job.device, job.gpus)
    if device.startswith("cuda:"):
        torch.cuda.set_device(int(device.removeprefix("cuda:")))
    mapper = mapper.on(device)
    region, ry0, rx0 = read_region(source, scale, c, overlap)
    maps = predict_tiled(region, mapper, tile=tile, overlap=overlap)
    core = maps[:, c.y0 - ry0 : c.y1 - ry0, c.x0 - rx0 : c.x1 - rx0]
    qc: dict[str, Any] = {
        "z": c.z,
        "y0": c.y0,
        "x0": c.x0,
        "height": c.y1 - c.y0,
        "width": c.x1 - c.x0,
    }
    pieces: list[ChunkComponents] = []
    paths = image_paths(
        out, anomaly=mapper.detector is not None, probabilities=mapper.classifier is not None
    )
    if mapper.detector is not None:
        stored = core[0].astype(ANOMALY_DTYPE)
        write_region(f"{paths['anomaly']}/0", c, stored, channels=False)
        values = stored.astype(np.float32)  # decide on what was written
        anomalous = values > mapper.detector.pixel_threshold_.value
        pieces.append(chunk_components(values, anomalous, c.z, c.y0, c.x0, ANOMALY))
        qc["mean_anomaly"] = float(values.mean(dtype=np.float64))
        qc["anomalous_fraction"] = float(anomalous.mean())
        core = core[1:]
    if mapper.classifier is not None:
        stored = np.rint(np.clip(core, 0, 1) * 255).astype(np.uint8)
        write_region(f"{paths['probabilities']}/0", c, stored, channels=True)
        best = stored.argmax(axis=0)
        for k, name in enumerate(mapper.classes):
            found = (best == k) & (stored[k] >= 128)
            qc[f"fraction_{name}"] = float(found.mean())
            if name != mapper.clean_class:
                values = stored[k].astype(np.float32) / 255
                pieces.append(chunk_components(values, found, c.z, c.y0, c.x0, k + 1))
    write_chunk_record(out, c.name, qc, pieces)
    return qc
