"""Synthetic serial-section TEM of neuropil.

The images imitate transmission EM of insect neuropil at about 4 nm per pixel (the ISBI 2012
data): cell profiles of many sizes separated by dark membranes of varying thickness,
mitochondria with cristae, synaptic vesicles, dark synaptic densities and specks, grainy
cytoplasm, blur and shot noise. Intensity statistics are calibrated against the ISBI 2012
training images (mean about 0.5, standard deviation about 0.17).

Geometry. Every neurite is a seed of a power diagram (a Laguerre tessellation: a packing of
disks of different radii cut into cells), with the corners of the cells rounded at junctions.
Seeds come from a hard-core thinning of a Poisson process whose radius follows a smooth
log-normal field, so some regions hold many small profiles and others large ones; a few large
axons keep a wide clearance. Seeds drift slowly with ``z`` along a smooth flow, and each lives
for a limited range of sections, shrinking before it disappears, so consecutive sections show
the same cells with slowly changing cross sections while distant sections differ. The diagram
is evaluated at coordinates displaced by a smooth multi-scale warp, which bends the boundaries
and stretches some profiles.

Speed. The diagram is evaluated (``cKDTree``) at every second pixel and upsampled; smooth
random fields are drawn on coarse grids and upsampled with separable interpolation matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from emae.errors import EmaeError

# Geometry, in pixels and sections.
_SPACING = 26.0  # typical distance between neighbouring neurite seeds
_K = 5  # nearest ordinary seeds examined per pixel
_ROUND = 3.0  # softness of the corners of cells, pixels
_WARP = ((30.0, 150.0), (12.0, 60.0), (5.0, 24.0))  # (amplitude, length scale), pixels
_LIFE = (15.0, 80.0)  # range of half-lifetimes of a neurite, sections
_RAMP = 6.0  # sections over which a neurite grows from nothing or shrinks away
_DRIFT = 0.4  # typical lateral drift of neurites, pixels per section

# Intensities, calibrated against the ISBI 2012 training images.
_CYTOPLASM = 0.6  # mean cytoplasm intensity before membranes and noise
_MEMBRANE = 0.5  # darkening at the centre of a membrane
_HALO = 0.18  # darkening of the wider halo around membranes
_MOTTLE = 0.07  # amplitude of the cytoplasm mottle
_DOTS = 0.35  # darkening of small dark dots in the cytoplasm
_BLUR = 1.0  # point-spread sigma, pixels
_NOISE = 0.06  # shot-noise sigma at intensity 0.5, before the final slight blur
_TEXTURE_RHO = 0.7  # correlation of the fine texture between consecutive sections


@dataclass(frozen=True)
class _Field:
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
class _Fields:
    """Smooth fields of a volume: displacement of the cell boundaries in ``y`` and ``x``
    (pixels), membrane strength and illumination (unit variance)."""

    warp_y: _Field
    warp_x: _Field
    membrane: _Field
    light: _Field

    def displacement(self, z: int, yx: np.ndarray) -> np.ndarray:
        """Warp displacement at points ``yx`` ``(n, 2)``, pixels ``(n, 2)``."""
        return np.stack([self.warp_y.points(z, yx), self.warp_x.points(z, yx)], axis=1)

    def to_pixels(self, z: int, yx: np.ndarray) -> np.ndarray:
        """Pixel coordinates that the warp maps onto unwarped points ``yx`` ``(n, 2)``."""
        out = yx - self.displacement(z, yx)
        return yx - self.displacement(z, out)


@dataclass(frozen=True)
class _Neurites:
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


def _generator(seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise EmaeError(f"seed must be an int or a numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed))


def _interp_matrix(n_out: int, n_coarse: int, step: float, origin: float) -> np.ndarray:
    """Linear interpolation weights from a coarse axis to pixels, float32 ``(n_out, n_coarse)``."""
    pos = np.clip(np.arange(n_out) / step - origin / step, 0, n_coarse - 1.000001)
    lo = np.floor(pos).astype(np.intp)
    frac = (pos - lo).astype(np.float32)
    weights = np.zeros((n_out, n_coarse), dtype=np.float32)
    weights[np.arange(n_out), lo] = 1 - frac
    weights[np.arange(n_out), lo + 1] = frac
    return weights


def _smooth_field(
    rng: np.random.Generator, nz: int, extent: float, pad: float,
    octaves: tuple[tuple[float, float], ...], scale_z: float,
) -> _Field:  # fmt: skip
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
    return _Field((1 - frac) * total[lo] + frac * total[lo + 1], step, -pad)


def _sample_neurites(rng: np.random.Generator, nz: int, extent: float, pad: float) -> _Neurites:
    """Neurites over ``[-pad, extent + pad]^2`` by hard-core thinning of a Poisson process.

    Seeds whose lifetimes overlap must be farther apart than the mean of their radii; the
    radius follows a smooth log-normal field with per-seed scatter, so some regions hold many
    small profiles. The reach of a seed (0.4 of its radius) is small enough that no cell is
    squeezed into a sliver by a larger neighbour.
    """
    side = extent + 2 * pad
    z_lo, z_hi = -_LIFE[1], nz - 1 + _LIFE[1]
    alive_frac = np.mean(_LIFE) * 2 / (z_hi - z_lo)
    n = rng.poisson(side**2 * 1.5 / (0.6 * _SPACING) ** 2 / alive_frac)
    pos = rng.uniform(-pad, extent + pad, (n, 2))
    log_r = _smooth_field(rng, 1, extent, pad, ((0.3, 80.0),), 0).points(0, pos)
    radius = _SPACING * np.clip(np.exp(log_r + 0.6 * rng.standard_normal(n)), 0.3, 2.8)
    keep = rng.random(n) < (0.5 * _SPACING / radius) ** 2
    pos, radius = pos[keep], radius[keep]
    zc = rng.uniform(z_lo, z_hi, len(pos))
    half = rng.uniform(*_LIFE, len(pos))
    n_giant = rng.poisson(side**2 / 300.0**2)
    g_pos = rng.uniform(-pad, extent + pad, (n_giant, 2))
    g_radius = _SPACING * rng.uniform(2.0, 3.2, n_giant)
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
    flow = [_smooth_field(rng, 1, extent, pad, ((1.0, 250.0),), 0).points(0, pos) for _ in "yx"]
    vel = _DRIFT * np.stack(flow, axis=1) + rng.normal(0, 0.25 * _DRIFT, pos.shape)
    vel = np.clip(vel, -2 * _DRIFT, 2 * _DRIFT)
    n = len(pos)
    dark = rng.random(n) < 0.1
    return _Neurites(
        pos=pos - (nz - 1) / 2 * vel,
        vel=vel,
        zc=np.concatenate([zc, np.full(n_giant, (nz - 1) / 2)]),
        half=np.concatenate([half, np.full(n_giant, nz + 2 * _LIFE[1])]),
        radius=np.concatenate([radius, g_radius]),
        reach=reach,
        giant=np.arange(n) >= n - n_giant,
        shade=_CYTOPLASM + 0.045 * rng.standard_normal(n) - 0.1 * dark,
        texture=rng.uniform(0.6, 1.4, n) * np.where(dark, 1.3, 1.0),
        key=rng.random(n),
    )


@dataclass(frozen=True)
class _Organelles:
    """Organelles that persist across sections, each attached to an owning neurite.

    Mitochondria: ``mito`` rows are ``owner, dy, dx, angle, a, b, zc, half, period, phase``
    (offset from the neurite seed and semi-axes in pixels, lifetime in sections, cristae period
    in pixels). Vesicle clusters: ``clusters`` rows are ``owner, dy, dx, radius, zc, half``.
    Synaptic densities: ``densities`` rows are ``y, x, zc, half, sigma, strength``.
    """

    mito: np.ndarray
    clusters: np.ndarray
    densities: np.ndarray


def _sample_organelles(
    rng: np.random.Generator, cells: _Neurites, nz: int, h: int, w: int
) -> _Organelles:
    """Mitochondria in about a third of the larger neurites, vesicle clusters in about a tenth
    of the neurites, and synaptic densities scattered over the ``(nz, h, w)`` volume."""
    n = len(cells.pos)
    owners = np.flatnonzero((cells.radius > 1.1 * _SPACING) & (rng.random(n) < 0.3))
    b = np.minimum(rng.uniform(11, 22, len(owners)), 0.6 * cells.radius[owners])
    a = np.minimum(b * rng.uniform(1.1, 2.0, len(owners)), 1.0 * cells.radius[owners])
    off = 0.12 * cells.radius[owners, None] * rng.standard_normal((len(owners), 2))
    m = len(owners)
    mito = np.column_stack([
        owners, off, rng.uniform(0, np.pi, m), a, b, rng.uniform(-8, nz + 7, m),
        rng.uniform(3, 10, m), rng.uniform(4.5, 7.5, m), rng.uniform(0, 2 * np.pi, m),
    ])  # fmt: skip
    owners = np.flatnonzero((cells.radius > 0.7 * _SPACING) & (rng.random(n) < 0.12))
    m = len(owners)
    angle = rng.uniform(0, 2 * np.pi, m)
    reach = 0.22 * cells.radius[owners]
    clusters = np.column_stack([
        owners, reach * np.sin(angle), reach * np.cos(angle), 0.35 * cells.radius[owners],
        rng.uniform(-5, nz + 4, m), rng.uniform(1.5, 5, m),
    ])  # fmt: skip
    m = rng.poisson(h * w / 170.0**2 * (nz + 6) / 3.0)
    densities = np.column_stack([
        rng.uniform(0, h, m), rng.uniform(0, w, m), rng.uniform(-3, nz + 2, m),
        rng.uniform(0.8, 3, m), rng.uniform(3, 9, m), rng.uniform(0.12, 0.35, m),
    ])  # fmt: skip
    return _Organelles(mito, clusters, densities)


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


def _upsample2(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling by 2 of ``(H // 2 + 1, W // 2 + 1)`` values to ``shape``."""
    ny, nx = values.shape
    out = np.empty((2 * ny - 1, 2 * nx - 1), dtype=values.dtype)
    out[::2, ::2] = values
    out[1::2, ::2] = (values[:-1] + values[1:]) / 2
    out[:, 1::2] = (out[:, :-2:2] + out[:, 2::2]) / 2
    return out[: shape[0], : shape[1]]


def _geometry(
    z: int, shape: tuple[int, int], cells: _Neurites, fields: _Fields
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
    dist = _upsample2(dist.reshape(half), shape)
    cell, other = (
        np.repeat(np.repeat(alive[c].reshape(half), 2, 0), 2, 1)[: shape[0], : shape[1]]
        for c in (cell, other)
    )
    return dist, cell, other


def _gauss_noise(white: np.ndarray, sigma: float) -> np.ndarray:
    """White noise filtered to correlation length ``sigma`` and rescaled to unit variance."""
    smooth = ndi.gaussian_filter(white, sigma, mode="wrap", truncate=3.0)
    return smooth * np.float32(np.sqrt(4 * np.pi) * sigma)


def _stamp(shape: tuple[int, int], centers: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Sum of ``kernels[i]`` ``(n, 2r+1, 2r+1)`` centred at integer ``centers[i]``, ``(H, W)``."""
    h, w = shape
    r = kernels.shape[1] // 2
    off = np.arange(-r, r + 1)
    yy, xx = np.broadcast_arrays(
        centers[:, 0, None, None] + off[None, :, None], centers[:, 1, None, None] + off[None, None]
    )
    ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    total = np.bincount((yy * w + xx)[ok], weights=kernels[ok], minlength=h * w)
    return total.reshape(h, w).astype(np.float32)


def _radial(radii: np.ndarray, half: int) -> np.ndarray:
    """Distance of each kernel pixel from the kernel's rim, ``(n, 2h+1, 2h+1)``."""
    off = np.arange(-half, half + 1, dtype=np.float32)
    return np.hypot(off[:, None], off[None, :])[None] - radii[:, None, None]


def _draw_mitochondria(
    image: np.ndarray, z: int, cells: _Neurites, rows: np.ndarray, fields: _Fields,
    owner: np.ndarray, dist: np.ndarray,
) -> None:  # fmt: skip
    """Darken mitochondria with cristae into ``image`` in place, clipped to their cell."""
    visible = rows[np.abs(z - rows[:, 6]) < rows[:, 7]]
    if len(visible) == 0:
        return
    idx = visible[:, 0].astype(np.intp)
    centers = fields.to_pixels(z, cells.pos[idx] + z * cells.vel[idx] + visible[:, 1:3])
    h, w = image.shape
    for (y, x), row, own in zip(centers, visible, idx, strict=True):
        angle, a, b, zc, half, period, phase = row[3:]
        scale = np.sqrt(1 - ((z - zc) / half) ** 2)
        a, b = max(a * scale, 3.0), max(b * scale, 2.5)
        r = int(a + 4)
        y0, y1 = max(int(y) - r, 0), min(int(y) + r + 1, h)
        x0, x1 = max(int(x) - r, 0), min(int(x) + r + 1, w)
        if y0 >= y1 or x0 >= x1:
            continue
        dy, dx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = dy - y, dx - x
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        inside = (1 - np.hypot(u / a, v / b)) * b  # approximate distance inside the outline
        in_cell = (owner[y0:y1, x0:x1] == own) * np.clip((dist[y0:y1, x0:x1] - 1.5) / 2, 0, 1)
        body = in_cell / (1 + np.exp(-(inside - 0.5) / 0.6))
        wobbly = u + 1.2 * np.sin(v / 5 + phase) + phase * period
        line = np.abs(np.mod(wobbly, period) - period / 2)
        cristae = np.exp(-((line / 1.2) ** 2)) * np.clip((inside - 2.5) / 1.5, 0, 1)
        rim = np.exp(-(((inside - 1.2) / 1.2) ** 2))
        level = 0.68 * _CYTOPLASM * (1 - 0.6 * cristae - 0.55 * rim)
        patch = image[y0:y1, x0:x1]
        patch[:] = patch * (1 - body) + body * level * np.sqrt(np.maximum(patch, 0) / _CYTOPLASM)


def _vesicles(
    rng: np.random.Generator, z: int, cells: _Neurites, rows: np.ndarray, fields: _Fields,
    owner: np.ndarray, dist: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """Darkening by synaptic vesicles (dark rims, greyish lumen), ``(H, W)``: dense clusters in
    boutons plus sparse single vesicles everywhere."""
    visible = rows[np.abs(z - rows[:, 4]) < rows[:, 5]]
    idx = visible[:, 0].astype(np.intp)
    centers = fields.to_pixels(z, cells.pos[idx] + z * cells.vel[idx] + visible[:, 1:3])
    points, owners = [], []
    for center, radius, own in zip(centers, visible[:, 3], idx, strict=True):
        # A jittered hexagonal packing inside a disk: vesicles crowd without overlapping.
        step = 9.5
        j, i = np.mgrid[-8:9, -8:9].reshape(2, -1)
        grid = np.stack([j * step * 0.866, (i + 0.5 * (j % 2)) * step], axis=1)
        grid = grid[np.hypot(*grid.T) < radius]
        grid = grid + rng.normal(0, 1.0, grid.shape)
        keep = rng.random(len(grid)) < 0.8
        points.append(center + grid[keep])
        owners.append(np.full(keep.sum(), own))
    h, w = owner.shape
    n = rng.poisson(h * w / 2500)
    single = np.stack([rng.integers(0, h, n), rng.integers(0, w, n)], axis=1)
    pts = np.rint(np.concatenate([*points, single])).astype(np.intp)
    own = np.concatenate([*owners, owner[single[:, 0], single[:, 1]]])
    radii = rng.uniform(3.0, 4.3, len(pts)).astype(np.float32)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < h) & (pts[:, 1] >= 0) & (pts[:, 1] < w)
    pts, own, radii = pts[inside], own[inside], radii[inside]
    ok = (owner[pts[:, 0], pts[:, 1]] == own) & (dist[pts[:, 0], pts[:, 1]] > radii + 2)
    rim = _radial(radii[ok], 6)
    kernels = 0.45 * np.exp(-((rim / 0.9) ** 2)) + 0.12 * (rim < 0)
    return _stamp((h, w), pts[ok], kernels * rng.uniform(0.6, 1.2, (ok.sum(), 1, 1)))


def _specks_and_densities(
    rng: np.random.Generator, z: int, shape: tuple[int, int], rows: np.ndarray, dist: np.ndarray
) -> np.ndarray:
    """Darkening by synaptic densities (near membranes) and small dark specks, ``(H, W)``."""
    h, w = shape
    dark = np.zeros(shape, np.float32)
    for y, x, zc, half, sigma, strength in rows[np.abs(z - rows[:, 2]) < rows[:, 3]]:
        r = int(3 * sigma)
        y0, y1, x0, x1 = (
            max(int(y) - r, 0),
            min(int(y) + r + 1, h),
            max(int(x) - r, 0),
            min(int(x) + r + 1, w),
        )
        dy, dx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        blob = np.exp(-((dy - y) ** 2 + (dx - x) ** 2) / (2 * sigma**2))
        fade = 1 - abs(z - zc) / half
        near = 0.35 + 0.65 * np.exp(-dist[y0:y1, x0:x1] / 4)
        dark[y0:y1, x0:x1] += strength * fade * blob * near
    n = rng.poisson(h * w / 5000)
    centers = np.stack([rng.integers(0, h, n), rng.integers(0, w, n)], axis=1)
    radii = rng.uniform(0.8, 2.2, n).astype(np.float32)
    disks = 1 / (1 + np.exp(_radial(radii, 4) / 0.5))
    return dark + _stamp(shape, centers, disks * rng.uniform(0.2, 0.5, (n, 1, 1)))


def _section(
    rng: np.random.Generator, z: int, shape: tuple[int, int], cells: _Neurites,
    organelles: _Organelles, fields: _Fields, white: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """Render section ``z``: float32 ``(H, W)`` in ``[0, 1]``."""
    dist, cell, other = _geometry(z, shape, cells, fields)

    mottle = _gauss_noise(white[0], 1.2) + 0.35 * _gauss_noise(white[0], 3.0)
    dots = np.maximum(-_gauss_noise(white[1], 1.0) - 1.5, 0)
    tex = cells.texture[cell]
    image = cells.shade[cell] + tex * (_MOTTLE * mottle - _DOTS * dots)

    thick = 1.2 + 1.6 * np.modf(cells.key[cell] + cells.key[other])[0]
    dist = np.maximum(dist + 0.3 * mottle, 0)  # rough membrane edges
    half = (shape[0] // 2 + 1, shape[1] // 2 + 1)
    smooth = (_upsample2(f.grid(z, half, stride=2), shape) for f in (fields.membrane, fields.light))
    membrane_field, light = smooth
    strength = np.clip((1 + 0.3 * membrane_field) * (1 + 0.2 * mottle), 0.3, 1.4)
    membrane = _MEMBRANE * strength * np.exp(-((dist / thick) ** 2)) + _HALO * np.exp(
        -((dist / 3.5) ** 2)
    )
    image *= 1 - membrane
    _draw_mitochondria(image, z, cells, organelles.mito, fields, cell, dist)
    image *= 1 - np.clip(_vesicles(rng, z, cells, organelles.clusters, fields, cell, dist), 0, 0.8)
    darkening = _specks_and_densities(rng, z, shape, organelles.densities, dist)
    image *= 1 - np.clip(darkening * (1 + 0.3 * mottle), 0, 0.85)
    image *= 1 + 0.09 * light
    image = ndi.gaussian_filter(image, _BLUR, truncate=3.0)
    grain = _gauss_noise(rng.standard_normal(shape, dtype=np.float32), 0.6)
    image += _NOISE * np.sqrt(np.clip(image, 0, None) / 0.5) * grain
    return np.clip(image, 0, 1).astype(np.float32)


def _check_shape(shape: tuple[int, ...], ndim: int) -> tuple[int, ...]:
    dims = tuple(shape) if isinstance(shape, (tuple, list)) else ()
    if len(dims) != ndim or not all(isinstance(d, (int, np.integer)) and d >= 1 for d in dims):
        raise EmaeError(f"shape must be {ndim} positive integers, got {shape!r}")
    return tuple(int(d) for d in dims)


def make_volume(shape: tuple[int, int, int], *, seed: int | np.random.Generator) -> np.ndarray:
    """Serial sections of synthetic neuropil.

    Parameters
    ----------
    shape
        ``(Z, H, W)`` in sections and pixels (about 4 nm per pixel).
    seed
        Seed or generator for every random draw; the same seed gives the same volume.

    Returns
    -------
    numpy.ndarray
        float32 ``(Z, H, W)``, axes ``"ZYX"``, values in ``[0, 1]``. Consecutive sections show the
        same cells with slowly changing cross sections.
    """
    nz, h, w = _check_shape(shape, 3)
    rng = _generator(seed)
    extent = float(max(h, w))
    pad = 3 * _SPACING + 3 * sum(amp for amp, _ in _WARP) + 2 * _DRIFT * nz / 2
    cells = _sample_neurites(rng, nz, extent, pad)
    organelles = _sample_organelles(rng, cells, nz, h, w)
    fields = _Fields(
        warp_y=_smooth_field(rng, nz, extent, 0, _WARP, 12.0),
        warp_x=_smooth_field(rng, nz, extent, 0, _WARP, 12.0),
        membrane=_smooth_field(rng, nz, extent, 0, ((1.0, 40.0),), 3.0),
        light=_smooth_field(rng, nz, extent, 0, ((1.0, 300.0),), 10.0),
    )
    out = np.empty((nz, h, w), dtype=np.float32)
    white = rng.standard_normal((2, h, w), dtype=np.float32)
    for z in range(nz):
        if z:
            fresh = rng.standard_normal((2, h, w), dtype=np.float32)
            white = _TEXTURE_RHO * white + np.sqrt(1 - _TEXTURE_RHO**2) * fresh
        out[z] = _section(rng, z, (h, w), cells, organelles, fields, white)
    return out


def make_section(shape: tuple[int, int], *, seed: int | np.random.Generator) -> np.ndarray:
    """One section of synthetic neuropil: float32 ``(H, W)``, axes ``"YX"``, values in ``[0, 1]``.

    Parameters
    ----------
    shape
        ``(H, W)`` in pixels (about 4 nm per pixel).
    seed
        Seed or generator for every random draw; the same seed gives the same section.
    """
    h, w = _check_shape(shape, 2)
    return make_volume((1, h, w), seed=seed)[0]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Intensities in ``[0, 1]`` (any shape) as uint8 ``0..255``; values outside are clipped."""
    return np.rint(np.clip(np.asarray(image, dtype=np.float32), 0, 1) * 255).astype(np.uint8)
