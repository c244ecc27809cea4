"""The plan of a run's chunks, section by section, and what a done-state leaves of it.

A run of 2 TB has about two million chunks; the process that drives it holds none of them:
:class:`SectionPlan` makes a section's chunks when they are asked for, and :class:`Todo` counts
and yields the chunks that a :class:`~emae.volume.done.DoneState` has not finished, a section
at a time.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from emae.volume.chunks import Chunk

if TYPE_CHECKING:
    from emae.volume.done import DoneState


def plan_chunks(shape: tuple[int, int, int], chunk: int) -> list[Chunk]:
    """Chunks of ``chunk x chunk`` pixels per section of a ``(Z, H, W)`` volume."""
    z, h, w = shape
    return [
        Chunk(k, y, x, min(y + chunk, h), min(x + chunk, w))
        for k in range(z)
        for y in range(0, h, chunk)
        for x in range(0, w, chunk)
    ]


class SectionPlan(Mapping[int, list[Chunk]]):
    """:func:`plan_chunks` grouped by section, ``{z: chunks of section z, row-major}``, each
    section's chunks made when asked for: the process that drives a run of millions of chunks
    holds none of them (a 2 TB volume plans about two million)."""

    def __init__(self, shape: tuple[int, int, int], chunk: int) -> None:
        self.shape: tuple[int, int, int] = (int(shape[0]), int(shape[1]), int(shape[2]))
        self.chunk = int(chunk)

    def __getitem__(self, z: int) -> list[Chunk]:
        n, h, w = self.shape
        if isinstance(z, bool) or not isinstance(z, (int, np.integer)) or not 0 <= z < n:
            raise KeyError(z)
        z = int(z)
        c = self.chunk
        return [
            Chunk(z, y, x, min(y + c, h), min(x + c, w))
            for y in range(0, h, c)
            for x in range(0, w, c)
        ]

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.shape[0]))

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def n_chunks(self) -> int:
        """Chunks of all sections."""
        n, h, w = self.shape
        return n * -(-h // self.chunk) * -(-w // self.chunk)


def plan_sections(shape: tuple[int, int, int], chunk: int) -> SectionPlan:
    """The chunks of each section, ``{z: chunks of section z, row-major}`` (:class:`SectionPlan`:
    made when asked for)."""
    return SectionPlan(shape, chunk)


class Todo:
    """The chunks of ``sections`` that a done-state has not finished, in order.

    Iterable any number of times, each time making the chunks section by section, so that the
    process that drives a run of millions of chunks does not hold them; ``len`` and
    :meth:`left` count them the same way (once).
    """

    def __init__(self, sections: Mapping[int, Sequence[Any]], state: DoneState) -> None:
        self.sections, self.state = sections, state

    def __iter__(self) -> Iterator[Any]:
        for z in self.sections:
            if z in self.state.finished:
                continue
            done = self.state.chunks.get(z, ())
            yield from (c for c in self.sections[z] if c.name not in done)

    @functools.cached_property
    def _left(self) -> dict[int, int]:
        left = {}
        for z in self.sections:
            if z in self.state.finished:
                continue
            done = self.state.chunks.get(z)
            chunks = self.sections[z]
            n = sum(1 for c in chunks if c.name not in done) if done else len(chunks)
            if n:
                left[z] = n
        return left

    def left(self) -> collections.Counter:
        """Chunks left per section: ``Counter({z: n})`` (sections with none left absent)."""
        return collections.Counter(self._left)

    def __len__(self) -> int:
        return sum(self._left.values())
