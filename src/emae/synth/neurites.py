"""The geometry of synthetic neuropil: neurite profiles that persist across sections.

Every neurite is a seed of a power diagram (a Laguerre tessellation: a packing of disks of
different radii cut into cells), with the corners of the cells rounded at junctions. Seeds come
from a hard-core thinning of a Poisson process whose radius follows a smooth log-normal field,
so some regions hold many small profiles and others large ones; a few large axons keep a wide
clearance. Seeds drift slowly with ``z`` along a smooth flow, and each lives for a limited range
of sections, shrinking before it disappears. The diagram is evaluated at coordinates displaced
by a smooth multi-scale warp (:class:`Fields`), which bends the boundaries. :mod:`emae.synth.tissue`
renders membranes, organelles and noise on top of this geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

# Geometry, in pixels and sections.
SPACING = 26.0  # typical distance between neighbouring neurite seeds
_K = 5  # nearest ordinary seeds examined per pixel
_ROUND = 3.0  # softness of the corners of cells, pixels
WARP = ((30.0, 150.0), (12.0, 60.0), (5.0, 24.0))  # (amplitude, length scale), pixels
_LIFE = (15.0, 80.0)  # range of half-lifetimes of a neurite, sections
_RAMP = 6.0  # sections over which a neurite grows from nothing or shrinks away
DRIFT = 0.4  # typical lateral drift of neurites, pixels per section
CYTOPLASM = 0.6  # mean cytoplasm intensity of a neurite before membranes and noise


@dataclass(frozen=True)
class Field:
    """A smooth random field with unit variance on a coarse grid, ``values`` is ``(Z, Yc, Xc)``.

    Coarse node ``(j, i)`` sits at pixel ``(origin + j * step, origin + i * step)``.
    """

    values: np.ndarray
    step: float
    origin: float

    def grid(self, z: int, shape: tuple[int, int], stride: int = 1) -> np.ndarray:
        """The field on section ``z`` at pixels ``(stride * i, stride * j)``, float32 ``shape``."""
        ay = _interp_matrix(shape[0], self.values.shape[1], self.step / stride, self.origin)
        ax = _interp_matrix(shape[1], self.values.shape[2], self.step / stride, self.origin)
        return ay @ self.values[z] @ ax.T

    def points(self, z: int, yx: np.ndarray) -> np.ndarray:
        """The field at points ``yx`` (``(n, 2)`` pixel coordinates), float32 ``(n,)``."""
        coords = (np.asarray(yx, dtype=np.float64).T - self.origin) / self.step
        return ndi.map_coordinates(self.values[z], coords, order=1, mode="nearest")


@dataclass(frozen=True)
class Fields:
    """Smooth fields of a volume: displacement of the cell boundaries in ``y`` and ``x``
    (pixels), membrane strength and illumination (unit variance)."""

    warp_y: Field
    warp_x: Field
    membrane: Field
    light: Field

    def displacement(self, z: int, yx: np.ndarray) -> np.ndarray:
        """Warp displacement at points ``yx`` ``(n, 2)``, pixels ``(n, 2)``."""
        return np.stack([self.warp_y.points(z, yx), self.warp_x.points(z, yx)], axis=1)

    def to_pixels(self, z: int, yx: np.ndarray) -> np.ndarray:
        """Pixel coordinates that the warp maps onto unwarped points ``yx`` ``(n, 2)``."""
        out = yx - self.displacement(z, yx)
        return yx - self.displacement(z, out)


@dataclass(frozen=True)
class Neurites:
    """Neurite seeds, one entry per neurite.

    ``pos`` ``(n, 2)`` is the position at ``z = 0`` and ``vel`` ``(n, 2)`` the drift per section,
    in pixels; ``zc`` and ``half`` the centre and half-length of the lifetime, in sections;
    ``radius`` the hard-core radius and ``reach`` the power-diagram radius in pixels; ``giant``
    marks large axons; ``shade`` is the cytoplasm intensity, ``texture`` the texture amplitude
    and ``key`` a uniform number that sets the thickness of membranes between two neurites.
    """

    pos: np.ndarray
    vel: np.ndarray
    zc: np.ndarray
    half: np.ndarray
    radius: np.ndarray
    reach: np.ndarray
    giant: np.ndarray
    shade: np.ndarray
    texture: np.ndarray
    key: np.ndarray

    def at(self, z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Indices, positions ``(m, 2)`` and reaches of the neurites alive at ``z``.

        A neurite's reach falls to zero over ``_RAMP`` sections at both ends of its life, so its
        profile shrinks before it disappears.
        """
        grown = np.clip((self.half - np.abs(z - self.zc)) / _RAMP, 0, 1)
        alive = np.flatnonzero(grown > 0)
        return alive, self.pos[alive] + z * self.vel[alive], self.reach[alive] * grown[alive]


def _interp_matrix(n_out: int, n_coarse: int, step: float, origin: float) -> np.ndarray:
    """Linear interpolation weights from a coarse axis to pixels, float32 ``(n_out, n_coarse)``."""
    pos = np.clip(np.arange(n_out) / step - origin / step, 0, n_coarse - 1.000001)
    lo = np.floor(pos).astype(np.intp)
    frac = (pos - lo).astype(np.float32)
    weights = np.zeros((n_out, n_coarse), dtype=np.float32)
    weights[np.arange(n_out), lo] = 1 - frac
    weights[np.arange(n_out), lo + 1] = frac
    return weights


def smooth_field(
    rng: np.random.Generator, nz: int, extent: float, pad: float,
    octaves: tuple[tuple[float, float], ...], scale_z: float,
) -> Field:  # fmt: skip
    """Sum of smooth random fields over ``[-pad, extent + pad]^2`` and ``nz`` sections.

    Each octave ``(amplitude, scale)`` has standard deviation ``amplitude`` and correlation
    length ``scale`` pixels in ``y, x``. In ``z``, knots ``scale_z`` sections apart (one knot
    per section when ``scale_z`` is 0) are linearly interpolated.
    """
    step = min(scale for _, scale in octaves) / 2
    n = int(np.ceil((extent + 2 * pad) / step)) + 2
    spacing = max(scale_z, 1.0)
    knots = int(np.ceil((nz - 1) / spacing)) + 2
    sigma_z = 1.0 if scale_z > 0 else 0.0
    total = np.zeros((knots, n, n), dtype=np.float32)
    for amp, scale in octaves:
        sigma = scale / step
        m = int(np.ceil(3 * sigma))
        white = rng.standard_normal((knots + 6, n + 2 * m, n + 2 * m), dtype=np.float32)
        smooth = ndi.gaussian_filter(white, (sigma_z, sigma, sigma), mode="wrap", truncate=3.0)
        var = np.prod([1 / (2 * np.sqrt(np.pi) * s) for s in (sigma_z, sigma, sigma) if s > 0])
        total += smooth[3:-3, m : m + n, m : m + n] * np.float32(amp / np.sqrt(var))
    pos = np.arange(nz) / spacing
    lo = np.minimum(pos.astype(np.intp), knots - 2)
    frac = (pos - lo)[:, None, None].astype(np.float32)
    return Field((1 - frac) * total[lo] + frac * total[lo + 1], step, -pad)


def sample_neurites(rng: np.random.Generator, nz: int, extent: float, pad: float) -> Neurites:
    """Neurites over ``[-pad, extent + pad]^2`` by hard-core thinning of a Poisson process.

    Seeds whose lifetimes overlap must be farther apart than the mean of their radii; the
    radius follows a smooth log-normal field with per-seed scatter, so some regions hold many
    small profiles. The reach of a seed (0.4 of its radius) is small enough that no cell is
    squeezed into a sliver by a larger neighbour.
    """
    side = extent + 2 * pad
    z_lo, z_hi = -_LIFE[1], nz - 1 + _LIFE[1]
    alive_frac = np.mean(_LIFE) * 2 / (z_hi - z_lo)
    n = rng.poisson(side**2 * 1.5 / (0.6 * SPACING) ** 2 / alive_frac)
    pos = rng.uniform(-pad, extent + pad, (n, 2))
    log_r = smooth_field(rng, 1, extent, pad, ((0.3, 80.0),), 0).points(0, pos)
    radius = SPACING * np.clip(np.exp(log_r + 0.6 * rng.standard_normal(n)), 0.3, 2.8)
    keep = rng.random(n) < (0.5 * SPACING / radius) ** 2
    pos, radius = pos[keep], radius[keep]
    zc = rng.uniform(z_lo, z_hi, len(pos))
    half = rng.uniform(*_LIFE, len(pos))
    n_giant = rng.poisson(side**2 / 300.0**2)
    g_pos = rng.uniform(-pad, extent + pad, (n_giant, 2))
    g_radius = SPACING * rng.uniform(2.0, 3.2, n_giant)
    # Hard core: drop seeds near giants, then Matern-II thinning among the rest.
    if n_giant:
        d, j = cKDTree(g_pos).query(pos)
        ok = d > 0.9 * g_radius[j]
        pos, radius, zc, half = pos[ok], radius[ok], zc[ok], half[ok]
    pairs = cKDTree(pos).query_pairs(radius.max(), output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    close = np.linalg.norm(pos[i] - pos[j], axis=1) < 0.5 * (radius[i] + radius[j])
    overlap = np.abs(zc[i] - zc[j]) < half[i] + half[j]
    i, j = i[close & overlap], j[close & overlap]
    mark = rng.random(len(pos)) / radius  # large neurites win, so sizes stay varied
    drop = np.zeros(len(pos), dtype=bool)
    drop[np.where(mark[i] > mark[j], i, j)] = True
    pos, radius, zc, half = pos[~drop], radius[~drop], zc[~drop], half[~drop]
    pos = np.concatenate([pos, g_pos])
    reach = np.concatenate([0.4 * radius, 0.65 * g_radius])
    flow = [smooth_field(rng, 1, extent, pad, ((1.0, 250.0),), 0).points(0, pos) for _ in "yx"]
    vel = DRIFT * np.stack(flow, axis=1) + rng.normal(0, 0.25 * DRIFT, pos.shape)
    vel = np.clip(vel, -2 * DRIFT, 2 * DRIFT)
    n = len(pos)
    dark = rng.random(n) < 0.1
    return Neurites(
        pos=pos - (nz - 1) / 2 * vel,
        vel=vel,
        zc=np.concatenate([zc, np.full(n_giant, (nz - 1) / 2)]),
        half=np.concatenate([half, np.full(n_giant, nz + 2 * _LIFE[1])]),
        radius=np.concatenate([radius, g_radius]),
        reach=reach,
        giant=np.arange(n) >= n - n_giant,
        shade=CYTOPLASM + 0.045 * rng.standard_normal(n) - 0.1 * dark,
        texture=rng.uniform(0.6, 1.4, n) * np.where(dark, 1.3, 1.0),
        key=rng.random(n),
    )


def _power_diagram(
    points: np.ndarray, seeds: np.ndarray, reach: np.ndarray, giant: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance to the nearest cell boundary and the two best cells for ``points`` ``(n, 2)``.

    A point belongs to the seed minimising the power ``e = |p - s|^2 - reach^2`` (a Laguerre
    tessellation: a dense packing of disks of radius ``reach`` cut into convex cells). Candidates
    are the nearest ordinary seeds and the two nearest giants. The distance to the boundary with
    cell ``j`` is ``(e_j - e_1) / (2 |s_j - s_1|)``; a smooth minimum over the second and third
    cells rounds the corners of cells at junctions.
    """
    dist, idx = [], []
    for group, k in ((np.flatnonzero(~giant), _K), (np.flatnonzero(giant), 2)):
        k = min(k, len(group))
        if k:
            d, i = cKDTree(seeds[group]).query(points, k=k, workers=-1)
            dist.append(d.reshape(len(points), k).astype(np.float32))
            idx.append(group[i.reshape(len(points), k)])
    dist, idx = np.hstack(dist), np.hstack(idx)
    power = dist**2 - reach.astype(np.float32)[idx] ** 2
    rows = np.arange(len(points))[:, None]
    order = np.argpartition(power, 2, axis=1)[:, :3]
    power, idx = power[rows, order], idx[rows, order]
    order = np.argsort(power, axis=1)
    power, idx = power[rows, order], idx[rows, order]
    sep = [np.linalg.norm(seeds[idx[:, j]] - seeds[idx[:, 0]], axis=1) for j in (1, 2)]
    gaps = [(power[:, j] - power[:, 0]) / np.maximum(2 * sep[j - 1], 1e-3) for j in (1, 2)]
    boundary = np.maximum(-_ROUND * np.logaddexp(-gaps[0] / _ROUND, -gaps[1] / _ROUND), 0)
    return boundary.astype(np.float32), idx[:, 0], idx[:, 1]


def upsample2(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling by 2 of ``(H // 2 + 1, W // 2 + 1)`` values to ``shape``."""
    ny, nx = values.shape
    out = np.empty((2 * ny - 1, 2 * nx - 1), dtype=values.dtype)
    out[::2, ::2] = values
    out[1::2, ::2] = (values[:-1] + values[1:]) / 2
    out[:, 1::2] = (out[:, :-2:2] + out[:, 2::2]) / 2
    return out[: shape[0], : shape[1]]


def geometry(
    z: int, shape: tuple[int, int], cells: Neurites, fields: Fields
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boundary distance (float32) and the two nearest neurites of section ``z``, each ``(H, W)``.

    The warped diagram is evaluated at every second pixel and upsampled (linearly for the
    distance, from the nearest evaluated pixel for the neurites).
    """
    alive, seeds, reach = cells.at(z)
    half = (shape[0] // 2 + 1, shape[1] // 2 + 1)
    ys, xs = np.mgrid[0 : 2 * half[0] : 2, 0 : 2 * half[1] : 2].astype(np.float32)
    ys += fields.warp_y.grid(z, half, stride=2)
    xs += fields.warp_x.grid(z, half, stride=2)
    points = np.stack([ys.ravel(), xs.ravel()], axis=1).astype(np.float64)
    dist, cell, other = _power_diagram(points, seeds, reach, cells.giant[alive])
    dist = upsample2(dist.reshape(half), shape)
    cell, other = (
        np.repeat(np.repeat(alive[c].reshape(half), 2, 0), 2, 1)[: shape[0], : shape[1]]
        for c in (cell, other)
    )
    return dist, cell, other
