"""The plan of a run's chunks, made section by section, and what a done-state leaves to do."""

from __future__ import annotations

import numpy as np
import pytest

from emae.volume.chunks import Chunk
from emae.volume.done import DoneState
from emae.volume.plan import plan_chunks, plan_sections


@pytest.mark.parametrize(
    ("shape", "chunk"), [((3, 100, 70), 32), ((1, 64, 64), 64), ((2, 5, 9), 4)]
)
def test_sections_hold_the_chunks_of_the_grid_row_major(shape, chunk):
    sections = plan_sections(shape, chunk)
    grouped: dict[int, list[Chunk]] = {}
    for c in plan_chunks(shape, chunk):
        grouped.setdefault(c.z, []).append(c)
    assert list(sections) == list(grouped) and len(sections) == shape[0]
    assert {z: sections[z] for z in sections} == grouped
    assert sections.n_chunks == sum(len(cs) for cs in grouped.values())
    for bad in (-1, shape[0], "0", True):
        with pytest.raises(KeyError):
            sections[bad]


def test_a_two_terabyte_plan_is_made_when_asked_for():
    sections = plan_sections((119_209, 4096, 4096), 1024)  # 2 TB of uint8
    assert len(sections) == 119_209 and sections.n_chunks == 119_209 * 16
    assert sections[119_208][-1] == Chunk(119_208, 3072, 3072, 4096, 4096)
    assert sections[np.int64(7)] == sections[7] and type(sections[np.int64(7)][0].z) is int


def test_todo_leaves_out_finished_sections_and_done_chunks_in_order():
    sections = plan_sections((4, 64, 96), 32)  # 2 x 3 chunks per section
    done = {sections[2][0].name, sections[2][4].name}
    state = DoneState(finished={1}, chunks={2: done})
    expected = [
        c for z in sections for c in sections[z] if z != 1 and not (z == 2 and c.name in done)
    ]
    todo = state.todo(sections)
    assert list(todo) == expected and list(todo) == expected  # iterable again
    assert len(todo) == len(expected) == 6 + 4 + 6
    assert todo.left() == {0: 6, 2: 4, 3: 6}
    assert not DoneState(finished={0, 1, 2, 3}, chunks={}).todo(sections)
