"""Connected components of a thresholded map, found chunk by chunk in bounded memory.

Each chunk ``(y0:y1, x0:x1)`` of a section is labeled on its own (8-connected); per label it
reports area, peak, the sums for the centroid and the bounding box, and its labels along the
chunk's last row and column. :func:`merge_components` then joins labels that touch across
chunk borders (union-find over the border pixel pairs, 8-connected across the border too) and
sums their statistics. Memory is one chunk at a time plus one record per component piece, so a
section of any size is handled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass
class ChunkComponents:
    """The component pieces of one chunk of section ``z`` whose top-left pixel is ``(y0, x0)``.

    ``stats`` holds one row per local label ``1..n``: area, sum of y, sum of x, min y, min x,
    max y, max x (section pixel coordinates), peak value, and the class index of the piece.
    ``first_row``/``last_row`` and ``first_col``/``last_col`` are the local labels along the
    chunk's borders (0 = background). Pieces join only pieces of the same ``class_index``.
    After :func:`merge_components`, ``component[i]`` is the index (in its returned list) of
    the component that local label ``i + 1`` belongs to.
    """

    z: int
    y0: int
    x0: int
    stats: np.ndarray
    first_row: np.ndarray
    last_row: np.ndarray
    first_col: np.ndarray
    last_col: np.ndarray
    class_index: int = 0
    ids: list[int] = field(default_factory=list)
    component: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def label_regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The 8-connected regions of a ``(h, w)`` bool mask: int labels ``1..n`` (0 elsewhere), n.

    The one labelling of detections: :func:`chunk_components` when a chunk is mapped, and the
    label images painted from the stored map afterwards (:mod:`emae.volume.labels`).
    """
    return ndi.label(mask, _EIGHT)


def chunk_components(
    values: np.ndarray, mask: np.ndarray, z: int, y0: int, x0: int, class_index: int = 0
) -> ChunkComponents:
    """Label ``mask`` ``(h, w)`` bool; statistics use ``values`` ``(h, w)`` for the peak."""
    labels, n = label_regions(mask)
    stats = np.zeros((n, 9), dtype=np.float64)
    if n:
        yy, xx = np.nonzero(labels)
        lab = labels[yy, xx]
        stats[:, 0] = np.bincount(lab, minlength=n + 1)[1:]
        stats[:, 1] = np.bincount(lab, weights=yy + y0, minlength=n + 1)[1:]
        stats[:, 2] = np.bincount(lab, weights=xx + x0, minlength=n + 1)[1:]
        boxes = ndi.find_objects(labels)
        stats[:, 3] = [b[0].start + y0 for b in boxes]
        stats[:, 4] = [b[1].start + x0 for b in boxes]
        stats[:, 5] = [b[0].stop - 1 + y0 for b in boxes]
        stats[:, 6] = [b[1].stop - 1 + x0 for b in boxes]
        peak = np.full(n + 1, -np.inf)
        np.maximum.at(peak, lab, values[yy, xx].astype(np.float64))  # no sort, unlike ndi.maximum
        stats[:, 7] = peak[1:]
        stats[:, 8] = class_index
    return ChunkComponents(
        z,
        y0,
        x0,
        stats,
        labels[0].copy(),
        labels[-1].copy(),
        labels[:, 0].copy(),
        labels[:, -1].copy(),
        class_index,
    )


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _touching(a: np.ndarray, b: np.ndarray) -> set[tuple[int, int]]:
    """Label pairs of two facing border lines that touch (8-connected: offsets -1, 0, +1)."""
    pairs = set()
    for shift in (-1, 0, 1):
        if shift < 0:
            x, y = a[-shift:], b[:shift]
        elif shift > 0:
            x, y = a[:-shift], b[shift:]
        else:
            x, y = a, b
        both = (x > 0) & (y > 0)
        pairs.update(zip(x[both].tolist(), y[both].tolist(), strict=True))
    return pairs


def merge_components(pieces: list[ChunkComponents]) -> list[dict[str, float]]:
    """Join pieces across chunk borders; one dict per component.

    Keys: ``z``, ``class_index``, ``area``, ``centroid_y``, ``centroid_x``, ``y_min``,
    ``x_min``, ``y_max``, ``x_max``, ``peak``. Pieces of different classes never merge. Sets
    each piece's ``component`` (see :class:`ChunkComponents`).
    """
    offset = 0
    for p in pieces:
        p.ids = list(range(offset, offset + len(p.stats)))
        offset += len(p.stats)
    uf = _UnionFind(offset)
    where = {(p.class_index, p.z, p.y0, p.x0): p for p in pieces}
    ending = {(p.class_index, p.z, p.y0, p.x0 + len(p.first_row)): p for p in pieces}
    for p in pieces:
        h, w = len(p.first_col), len(p.first_row)
        k = p.class_index
        below = where.get((k, p.z, p.y0 + h, p.x0))
        right = where.get((k, p.z, p.y0, p.x0 + w))
        for other, mine, theirs in (
            (below, p.last_row, None if below is None else below.first_row),
            (right, p.last_col, None if right is None else right.first_col),
        ):
            if other is None or len(theirs) != len(mine):
                continue
            for a, b in _touching(mine, theirs):
                if p.stats[a - 1, 8] == other.stats[b - 1, 8]:
                    uf.union(p.ids[a - 1], other.ids[b - 1])
        # Diagonal neighbours below meet this chunk at one corner pixel each.
        corners = (
            (where.get((k, p.z, p.y0 + h, p.x0 + w)), p.last_row[-1], 0),  # below right
            (ending.get((k, p.z, p.y0 + h, p.x0)), p.last_row[0], -1),  # below left
        )
        for other, a, corner in corners:
            if other is None or not a or not other.first_row[corner]:
                continue
            b = other.first_row[corner]
            if p.stats[a - 1, 8] == other.stats[b - 1, 8]:
                uf.union(p.ids[a - 1], other.ids[b - 1])
    merged: dict[int, np.ndarray] = {}
    zs: dict[int, int] = {}
    for p in pieces:
        for i, row in enumerate(p.stats):
            root = uf.find(p.ids[i])
            if root not in merged:
                merged[root], zs[root] = row.copy(), p.z
                continue
            m = merged[root]
            m[0:3] += row[0:3]
            m[3:5] = np.minimum(m[3:5], row[3:5])
            m[5:7] = np.maximum(m[5:7], row[5:7])
            m[7] = max(m[7], row[7])
    out = []
    for root, m in merged.items():
        out.append(
            {
                "root": root,
                "z": zs[root],
                "class_index": int(m[8]),
                "area": int(m[0]),
                "centroid_y": m[1] / m[0],
                "centroid_x": m[2] / m[0],
                "y_min": int(m[3]),
                "x_min": int(m[4]),
                "y_max": int(m[5]),
                "x_max": int(m[6]),
                "peak": float(m[7]),
            }
        )
    out.sort(key=lambda c: (c["z"], c["y_min"], c["x_min"]))
    index = {c.pop("root"): i for i, c in enumerate(out)}
    for p in pieces:
        p.component = np.array([index[uf.find(i)] for i in p.ids], dtype=np.int64)
    return out
