"""Synthetic serial-section TEM of neuropil.

The images imitate transmission EM of insect neuropil at about 4 nm per pixel (the ISBI 2012
data): cell profiles of many sizes separated by dark membranes of varying thickness,
mitochondria with cristae, synaptic vesicles, dark synaptic densities and specks, grainy
cytoplasm, blur and shot noise. Intensity statistics are calibrated against the ISBI 2012
training images (mean about 0.5, standard deviation about 0.17).

Geometry. Neurite profiles come from :mod:`emae.synth.neurites` (a power diagram of seeds that
drift and live for a limited range of sections), so consecutive sections show the same cells
with slowly changing cross sections while distant sections differ; this module renders
membranes, organelles, texture, blur and noise on top.

Speed. The diagram is evaluated (``cKDTree``) at every second pixel and upsampled; smooth
random fields are drawn on coarse grids and upsampled with separable interpolation matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from emae.errors import EmaeError
from emae.runtime import as_generator
from emae.synth.neurites import (
    CYTOPLASM,
    DRIFT,
    SPACING,
    WARP,
    Fields,
    Neurites,
    geometry,
    sample_neurites,
    smooth_field,
    upsample2,
)

# Intensities, calibrated against the ISBI 2012 training images.
_MEMBRANE = 0.5  # darkening at the centre of a membrane
_HALO = 0.18  # darkening of the wider halo around membranes
_MOTTLE = 0.07  # amplitude of the cytoplasm mottle
_DOTS = 0.35  # darkening of small dark dots in the cytoplasm
_BLUR = 1.0  # point-spread sigma, pixels
_NOISE = 0.06  # shot-noise sigma at intensity 0.5, before the final slight blur
_TEXTURE_RHO = 0.7  # correlation of the fine texture between consecutive sections


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
    rng: np.random.Generator, cells: Neurites, nz: int, h: int, w: int
) -> _Organelles:
    """Mitochondria in about a third of the larger neurites, vesicle clusters in about a tenth
    of the neurites, and synaptic densities scattered over the ``(nz, h, w)`` volume."""
    n = len(cells.pos)
    owners = np.flatnonzero((cells.radius > 1.1 * SPACING) & (rng.random(n) < 0.3))
    b = np.minimum(rng.uniform(11, 22, len(owners)), 0.6 * cells.radius[owners])
    a = np.minimum(b * rng.uniform(1.1, 2.0, len(owners)), 1.0 * cells.radius[owners])
    off = 0.12 * cells.radius[owners, None] * rng.standard_normal((len(owners), 2))
    m = len(owners)
    mito = np.column_stack(
        [
            owners,
            off,
            rng.uniform(0, np.pi, m),
            a,
            b,
            rng.uniform(-8, nz + 7, m),
            rng.uniform(3, 10, m),
            rng.uniform(4.5, 7.5, m),
            rng.uniform(0, 2 * np.pi, m),
        ]
    )
    owners = np.flatnonzero((cells.radius > 0.7 * SPACING) & (rng.random(n) < 0.12))
    m = len(owners)
    angle = rng.uniform(0, 2 * np.pi, m)
    reach = 0.22 * cells.radius[owners]
    clusters = np.column_stack(
        [
            owners,
            reach * np.sin(angle),
            reach * np.cos(angle),
            0.35 * cells.radius[owners],
            rng.uniform(-5, nz + 4, m),
            rng.uniform(1.5, 5, m),
        ]
    )
    m = rng.poisson(h * w / 170.0**2 * (nz + 6) / 3.0)
    densities = np.column_stack(
        [
            rng.uniform(0, h, m),
            rng.uniform(0, w, m),
            rng.uniform(-3, nz + 2, m),
            rng.uniform(0.8, 3, m),
            rng.uniform(3, 9, m),
            rng.uniform(0.12, 0.35, m),
        ]
    )
    return _Organelles(mito, clusters, densities)


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
    image: np.ndarray,
    z: int,
    cells: Neurites,
    rows: np.ndarray,
    fields: Fields,
    owner: np.ndarray,
    dist: np.ndarray,
) -> None:
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
        level = 0.68 * CYTOPLASM * (1 - 0.6 * cristae - 0.55 * rim)
        patch = image[y0:y1, x0:x1]
        patch[:] = patch * (1 - body) + body * level * np.sqrt(np.maximum(patch, 0) / CYTOPLASM)


def _vesicles(
    rng: np.random.Generator,
    z: int,
    cells: Neurites,
    rows: np.ndarray,
    fields: Fields,
    owner: np.ndarray,
    dist: np.ndarray,
) -> np.ndarray:
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
    rng: np.random.Generator,
    z: int,
    shape: tuple[int, int],
    cells: Neurites,
    organelles: _Organelles,
    fields: Fields,
    white: np.ndarray,
) -> np.ndarray:
    """Render section ``z``: float32 ``(H, W)`` in ``[0, 1]``."""
    dist, cell, other = geometry(z, shape, cells, fields)

    mottle = _gauss_noise(white[0], 1.2) + 0.35 * _gauss_noise(white[0], 3.0)
    dots = np.maximum(-_gauss_noise(white[1], 1.0) - 1.5, 0)
    tex = cells.texture[cell]
    image = cells.shade[cell] + tex * (_MOTTLE * mottle - _DOTS * dots)

    thick = 1.2 + 1.6 * np.modf(cells.key[cell] + cells.key[other])[0]
    dist = np.maximum(dist + 0.3 * mottle, 0)  # rough membrane edges
    half = (shape[0] // 2 + 1, shape[1] // 2 + 1)
    smooth = (upsample2(f.grid(z, half, stride=2), shape) for f in (fields.membrane, fields.light))
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
    rng = as_generator(seed)
    extent = float(max(h, w))
    pad = 3 * SPACING + 3 * sum(amp for amp, _ in WARP) + 2 * DRIFT * nz / 2
    cells = sample_neurites(rng, nz, extent, pad)
    organelles = _sample_organelles(rng, cells, nz, h, w)
    fields = Fields(
        warp_y=smooth_field(rng, nz, extent, 0, WARP, 12.0),
        warp_x=smooth_field(rng, nz, extent, 0, WARP, 12.0),
        membrane=smooth_field(rng, nz, extent, 0, ((1.0, 40.0),), 3.0),
        light=smooth_field(rng, nz, extent, 0, ((1.0, 300.0),), 10.0),
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
