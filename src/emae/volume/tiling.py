"""Tiled inference: plan overlapping tiles, run a per-tile function, blend without seams.

Pure geometry plus one loop. :func:`plan_tiles` covers an ``H x W`` section with tiles of at most
``tile x tile`` pixels overlapping by ``overlap`` (the last row and column of tiles end at the
border, so no tile pads); :func:`blend_weights` gives each tile a weight that ramps up linearly
over the overlap on every side shared with a neighbour and is flat elsewhere; :func:`predict_tiled`
sums ``weight * fn(tile)`` and divides by the summed weights, so every pixel's value is a convex
combination of the tiles that cover it (the weights sum to one) and tile borders, where
convolutions see padding, count least.

The same per-tile function serves in-memory scoring (``emae score``) and whole-volume detection
(``emae detect``), so both give the same map.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from emae.errors import EmaeError

#: ``fn(tiles (B, h, w) in the section's dtype) -> maps (B, C, h, w) float32``: one tile batch
#: to C maps. Tiles keep the raw dtype so that the model's dtype check sees the input's.
TileFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Tile:
    """One tile: rows ``y0:y1`` and columns ``x0:x1`` of the section."""

    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, columns)`` slices into the section."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def _starts(size: int, tile: int, step: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, step))
    return [*starts, size - tile]


def plan_tiles(shape: tuple[int, int], tile: int, overlap: int) -> list[Tile]:
    """Tiles covering a section of ``shape = (H, W)``, row by row.

    Parameters
    ----------
    shape
        ``(H, W)`` of the section, both >= 1.
    tile
        Side of the tiles; a section smaller than that along an axis gets one tile spanning it.
    overlap
        Pixels shared by neighbouring tiles (at least; the last tile of a row or column may
        overlap more so that it ends at the border), ``0 <= overlap < tile``.
    """
    h, w = (int(s) for s in shape)
    if h < 1 or w < 1:
        raise EmaeError(f"cannot tile an empty section of shape {shape}")
    if tile < 1 or not 0 <= overlap < tile:
        raise EmaeError(f"need tile >= 1 and 0 <= overlap < tile, got {tile=}, {overlap=}")
    step = tile - overlap
    return [
        Tile(y, x, min(y + tile, h), min(x + tile, w))
        for y in _starts(h, tile, step)
        for x in _starts(w, tile, step)
    ]


def _ramp(n: int, lead: int, trail: int) -> np.ndarray:
    """1D weights: rising over ``lead`` pixels, flat, falling over ``trail`` pixels (> 0)."""
    r = np.ones(n, dtype=np.float64)
    if lead:
        r[:lead] = np.minimum(r[:lead], (np.arange(lead) + 1) / (lead + 1))
    if trail:
        r[n - trail :] = np.minimum(r[n - trail :], (np.arange(trail)[::-1] + 1) / (trail + 1))
    return r


def blend_weights(tiles: list[Tile], shape: tuple[int, int], overlap: int) -> list[np.ndarray]:
    """One ``(h, w)`` float64 weight per tile: a linear ramp over ``overlap`` pixels on each
    side that touches another tile, 1 elsewhere (also along the section's border)."""
    h, w = shape
    out = []
    for t in tiles:
        ry = _ramp(t.y1 - t.y0, overlap if t.y0 > 0 else 0, overlap if t.y1 < h else 0)
        rx = _ramp(t.x1 - t.x0, overlap if t.x0 > 0 else 0, overlap if t.x1 < w else 0)
        out.append(np.outer(ry, rx))
    return out


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _checked(maps: np.ndarray, tiles: tuple[int, ...]) -> np.ndarray:
    """A tile function's ``(B, C, h, w)`` result for tiles of shape ``(B, h, w)``."""
    maps = np.asarray(maps)
    if maps.ndim != 4 or maps.shape[0] != tiles[0] or maps.shape[2:] != tiles[1:]:
        raise EmaeError(
            f"the tile function returned shape {maps.shape} for tiles {tiles}; "
            f"expected (B, C, h, w)"
        )
    return maps


def predict_tiled(
    section: np.ndarray,
    fn: TileFn,
    *,
    tile: int,
    overlap: int,
    batch_size: int = 8,
) -> np.ndarray:
    """Apply ``fn`` to overlapping tiles of ``section`` and blend the results.

    Parameters
    ----------
    section
        ``(H, W)`` image (any real dtype; passed to ``fn`` as tiles of that dtype).
    fn
        Maps a batch of equally sized tiles ``(B, h, w)`` to maps ``(B, C, h, w)``.
    tile, overlap
        See :func:`plan_tiles`.
    batch_size
        Tiles per call of ``fn`` (tiles of different sizes go in separate calls).

    Returns
    -------
    numpy.ndarray
        ``(C, H, W)`` float32.
    """
    section = np.asarray(section)
    if section.ndim != 2:
        raise EmaeError(f"predict_tiled takes one (H, W) section, got shape {section.shape}")
    shape = section.shape
    tiles = plan_tiles(shape, tile, overlap)
    if len(tiles) == 1:  # nothing to blend (its weight is 1 everywhere): the tile's maps
        return _checked(fn(section[None]), section[None].shape).astype(np.float32)[0]
    weights = blend_weights(tiles, shape, overlap)
    total = np.zeros(shape, dtype=np.float64)
    out: np.ndarray | None = None
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, t in enumerate(tiles):
        by_shape.setdefault(t.shape, []).append(i)
    for indices in by_shape.values():
        for batch in _batches(indices, batch_size):
            x = np.stack([section[tiles[i].slices] for i in batch])
            maps = _checked(fn(x), x.shape).astype(np.float64)  # (B, C, h, w)
            if out is None:
                out = np.zeros((maps.shape[1], *shape), dtype=np.float64)
            for k, i in enumerate(batch):
                rows, cols = tiles[i].slices
                out[:, rows, cols] += maps[k] * weights[i]
                total[rows, cols] += weights[i]
    assert out is not None
    return (out / total).astype(np.float32)
