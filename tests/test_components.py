"""Chunk-wise connected components equal whole-section labeling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from emae.components import chunk_components, merge_components


def _chunked(values, mask, chunk):
    pieces = []
    for y0 in range(0, mask.shape[0], chunk[0]):
        for x0 in range(0, mask.shape[1], chunk[1]):
            sl = (slice(y0, y0 + chunk[0]), slice(x0, x0 + chunk[1]))
            pieces.append(chunk_components(values[sl], mask[sl], 0, y0, x0))
    return merge_components(pieces)


@pytest.mark.parametrize("chunk", [(7, 9), (16, 16), (5, 40), (64, 64)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunked_components_equal_whole_section_components(chunk, seed):
    rng = np.random.default_rng(seed)
    values = ndi.gaussian_filter(rng.random((48, 61)), 1.5)
    mask = values > np.quantile(values, 0.8)
    labels, n = ndi.label(mask, np.ones((3, 3), bool))
    found = _chunked(values, mask, chunk)
    assert len(found) == n
    expected = []
    for k, box in enumerate(ndi.find_objects(labels), start=1):
        yy, xx = np.nonzero(labels == k)
        expected.append(
            (
                len(yy),
                box[0].start,
                box[1].start,
                box[0].stop - 1,
                box[1].stop - 1,
                round(yy.mean(), 6),
                round(xx.mean(), 6),
                values[labels == k].max(),
            )
        )
    got = [
        (
            c["area"],
            c["y_min"],
            c["x_min"],
            c["y_max"],
            c["x_max"],
            round(c["centroid_y"], 6),
            round(c["centroid_x"], 6),
            c["peak"],
        )
        for c in found
    ]
    np.testing.assert_allclose(np.array(sorted(got)), np.array(sorted(expected)), rtol=1e-9)


def test_diagonal_touch_across_a_chunk_corner_merges():
    mask = np.zeros((8, 8), bool)
    mask[3, 3] = mask[4, 4] = True  # touch diagonally across the corner of 4x4 chunks
    found = _chunked(mask.astype(float), mask, (4, 4))
    assert len(found) == 1 and found[0]["area"] == 2
    anti = np.zeros((8, 8), bool)
    anti[3, 4] = anti[4, 3] = True  # the other diagonal
    assert len(_chunked(anti.astype(float), anti, (4, 4))) == 1


def test_different_classes_never_merge():
    mask = np.ones((4, 8), bool)
    left = chunk_components(np.ones((4, 4)), mask[:, :4], 0, 0, 0, class_index=1)
    right = chunk_components(np.ones((4, 4)), mask[:, 4:], 0, 0, 4, class_index=2)
    assert len(merge_components([left, right])) == 2
