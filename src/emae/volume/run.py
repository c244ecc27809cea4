"""The course of one ``emae detect`` run over its tasks: chunks, sections, labels, reports.

:func:`map_volume` runs, on one :class:`~emae.volume.tasks.Runner`, the chunks still to do; as
soon as a section's last chunk is done, that section's task
(:func:`~emae.volume.sections.finish_section`), which returns its number of detections; and as
soon as the sections before a section are all finished, its first detection id is known (ids
``1..n`` in section order) and its label task (:func:`~emae.volume.sections.label_section`)
runs. Chunks are submitted section by section, so sections are finished and painted while
later chunks are mapped: after the last chunk only the last sections are left.
:func:`write_outputs` then writes the reports and the label metadata from the sections'
manifests, one section at a time. Only these last files are written by the process that runs
the command; everything before runs on the workers.
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from emae.errors import EmaeError
from emae.volume.chunks import Chunk, ChunkJob, Mapper
from emae.volume.done import DoneState, read_manifest, read_next_id
from emae.volume.labels import MAX_PROPERTIES, label_names, write_label_properties
from emae.volume.qc import write_reports
from emae.volume.sections import SectionJob, finish_section, label_section
from emae.volume.tasks import Runner, Task, chunk_tasks


def map_volume(
    sections: Mapping[int, Sequence[Chunk]],
    state: DoneState,
    mapper: Mapper,
    job: ChunkJob,
    section_job: SectionJob,
    runner: Runner,
    chunk_fn: Callable[..., Any] | None = None,
) -> dict[str, float]:
    """Map the chunks of ``sections`` not done in ``state``, finish and paint every section.

    Parameters
    ----------
    sections
        The chunks of each section, row-major, by z.
    state
        What earlier runs finished (:func:`emae.volume.done.scan`).
    mapper, job
        The chunks' mapper and job; the job's ``threads`` and ``gpus`` are the runner's.
    section_job
        What the section tasks share; without ``labels``, no label tasks follow.
    runner
        An entered :class:`~emae.volume.tasks.Runner`.
    chunk_fn
        The chunks' task, ``chunk_fn(chunk, mapper, job) -> QC numbers``: None for
        :func:`~emae.volume.chunks.process_chunk` (detection), or
        :func:`~emae.volume.restore.restore_chunk` (restoration).

    Returns
    -------
    dict
        :func:`time.perf_counter` times: ``began``, ``chunks`` (the last chunk done) and
        ``sections`` (every section finished and painted).

    Raises
    ------
    EmaeError
        Naming the chunks, or the sections, that failed after the runner's retries; finished
        chunks and sections are kept.
    """
    todo = state.todo(sections)
    left = todo.left()
    chunks_left = len(todo)
    order = iter(sections)
    numbering = {"next": next(order, None), "first_id": 1}
    counts: dict[int, int] = {}
    if section_job.labels:
        numbering.update(_numbered(numbering["next"], order, state, section_job.out))
        # Detections of the other sections finished by earlier runs (those in progress when
        # a run stopped, a few); the others' come from their tasks.
        counts = {
            z: len(read_manifest(section_job.out, z, pieces=False).detections)
            for z in state.finished
            if numbering["next"] is not None and z >= numbering["next"]
        }
    times = {"began": time.perf_counter()}

    def finish(z: int) -> Task:
        return ("finish", z), finish_section, (z, [c.name for c in sections[z]], section_job)

    def paint_numbered() -> list[Task]:
        """Label tasks of the sections whose first id is now known: all before them finished."""
        tasks = []
        while (z := numbering["next"]) is not None and z in counts:
            tasks.append((("labels", z), label_section, (z, numbering["first_id"], section_job)))
            numbering["first_id"] += counts[z]
            numbering["next"] = next(order, None)
        return tasks

    def follow(key: Any, result: Any) -> list[Task]:
        nonlocal chunks_left
        if isinstance(key, Chunk):
            left[key.z] -= 1
            chunks_left -= 1
            if not chunks_left:
                times["chunks"] = time.perf_counter()
            return [finish(key.z)] if left[key.z] == 0 else []
        if key[0] == "finish":
            counts[key[1]] = int(result)
            return paint_numbered() if section_job.labels else []
        return []

    unfinished = [z for z in sections if z not in state.finished and not left[z]]
    first = [*(paint_numbered() if section_job.labels else []), *map(finish, unfinished)]
    work = chunk_tasks(todo, runner.share(mapper) if chunks_left else mapper, job, chunk_fn)
    tasks = itertools.chain(first, work)
    total = chunks_left + len(first)
    failed = runner.run(tasks, desc="detecting", total=total, follow=follow)
    times.setdefault("chunks", time.perf_counter())
    chunk_failures = [(k, e) for k, e in failed if isinstance(k, Chunk)]
    if chunk_failures:
        n = sum(len(cs) for cs in sections.values())
        where = ", ".join(f"{c.name} ({err})" for c, err in chunk_failures[:5])
        raise EmaeError(
            f"{len(chunk_failures)} of {n} chunks failed after {runner.retries} retries: "
            f"{where}; the {n - len(chunk_failures)} finished chunks are kept; rerun to retry"
        )
    if failed:
        where = ", ".join(f"z{key[1]} ({err})" for key, err in failed[:5])
        raise EmaeError(
            f"{len(failed)} section tasks of {len(sections)} sections failed: {where}; the "
            "mapped chunks are kept; rerun to retry"
        )
    times["sections"] = time.perf_counter()
    return times


def _numbered(
    first: int | None, order: Iterator[int], state: DoneState, out: str
) -> dict[str, Any]:
    """Where numbering goes on: after the sections that earlier runs finished and painted, all
    of them in order from the first section (``first``; ``order`` yields those after it and is
    advanced past them; a section whose manifest is gone is mapped, finished and painted
    again, so it ends them). The mark of the last one holds its first id and its number of
    detections, so one small file is read, not a manifest per section (hundreds of thousands
    on a large volume). Marks can be trusted so: a mark stands for a whole painting (the label
    task removes a mark of other ids before it paints), and a section finished again removes
    its own mark and every later one (its count may change, and their ids with it). Returns
    ``next`` and ``first_id`` ({} when the first is not painted)."""
    done, z = [], first
    while z is not None and z in state.painted and z in state.finished:  # not a stale mark
        done.append(z)
        z = next(order, None)
    if not done:
        return {}
    first_id = read_next_id(out, done[-1])
    if first_id is None:  # marks of an earlier emae: count the detections of each section
        first_id = 1 + sum(len(read_manifest(out, k, pieces=False).detections) for k in done)
    return {"next": z, "first_id": first_id}


def write_outputs(out: Path, sections: Sequence[int], mapper: Mapper) -> dict[str, Any]:
    """The reports beside ``out`` (:func:`emae.volume.qc.write_reports`) and the properties of
    the first detections in the label images' metadata, from the sections' manifests."""
    properties: list[dict[str, Any]] = []
    listed: collections.Counter[bool] = collections.Counter()  # by "is an anomaly"
    kinds = [kind for kind, made in ((True, mapper.detector), (False, mapper.classes)) if made]

    def keep(detection: dict[str, Any]) -> bool:  # the first ones of each label image
        anomaly = detection["class"] == "anomaly"
        if listed[anomaly] < MAX_PROPERTIES:
            listed[anomaly] += 1
            properties.append(detection)
        return any(listed[kind] < MAX_PROPERTIES for kind in kinds)

    manifests = ((z, read_manifest(out, z, pieces=False)) for z in sections)  # one at a time
    reports = write_reports(
        out,
        ((z, m.tiles, m.detections) for z, m in manifests),
        mapper.class_names(),
        on_detection=keep,
    )
    names = label_names(mapper.detector is not None, mapper.classes)
    reports["labels"] = [str(p) for p in write_label_properties(out, names, properties)]
    return reports
