"""Artifacts of electron microscopy drawn onto images, each with the mask of what it changed.

Every injector takes a 2D float image in ``[0, 1]`` and returns a new image and a boolean mask.
The mask marks the artifact's own pixels (for a scratch the line, not its bounding box), and
pixels outside it change by at most :data:`MASK_LEVEL`.

``size`` is the characteristic extent in pixels: the length of a scratch, fold, seam or band of
stripes; the outer diameter of a ring, horseshoe, dust particle (with halo) or charged or
defocused region; the side of a tile. ``contrast`` in ``[-1, 1]`` is the strength; its sign
picks bright (+) or dark (-) for scratches, rings, horseshoes, seams and stripes, while dust,
folds, charging, defocus and tiles need ``contrast >= 0``. ``orientation`` in radians is the
direction of a line (scratch, fold, seam, scan lines), the opening of a horseshoe, or the
rotation of a shape (dust, charging, defocus, tile); rings ignore it.

:data:`INJECTORS` maps every kind to its drawing function and to the ranges from which
:func:`inject` draws the parameters left as None, so code and tests can loop over all kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from emae.errors import EmaeError
from emae.runtime import as_generator

#: Outside an artifact's mask no pixel changes by more than this.
MASK_LEVEL = 0.1

_Params = tuple[tuple[float, float], float, float, float]  # center (y, x), size, contrast, angle


def as_unit_float(image: np.ndarray) -> np.ndarray:
    """Intensities as float32 in ``[0, 1]``, so injectors also work on real images.

    Parameters
    ----------
    image
        Array of any shape. Unsigned integers are divided by their dtype's maximum (uint8 by
        255, uint16 by 65535); signed integers are mapped from their dtype's range; floats
        already in ``[0, 1]`` are kept, other floats are rescaled from their minimum and maximum
        (a constant image becomes zeros); booleans become 0 and 1.

    Returns
    -------
    numpy.ndarray
        float32 array of the same shape, values in ``[0, 1]``; always a new array.
    """
    image = np.asarray(image)
    if image.dtype == bool:
        return image.astype(np.float32)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return ((image.astype(np.float64) - info.min) / (info.max - info.min)).astype(np.float32)
    if not np.issubdtype(image.dtype, np.floating):
        raise EmaeError(f"expected a numeric image, got dtype {image.dtype}")
    if image.size and not np.isfinite(image).all():
        raise EmaeError("image contains NaN or infinite values")
    if image.size == 0 or (image.min() >= 0 and image.max() <= 1):
        return image.astype(np.float32, copy=True)
    lo, hi = float(image.min()), float(image.max())
    return ((image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)).astype(np.float32)


def _frame(
    shape: tuple[int, int], center: tuple[float, float], angle: float
) -> tuple[np.ndarray, ...]:
    """Coordinates ``(u, v)`` float32 ``(H, W)``: ``u`` along ``angle`` (radians from the x axis
    towards +y), ``v`` across it, both relative to ``center``."""
    ys, xs = np.ogrid[: shape[0], : shape[1]]
    dy, dx = np.float32(ys - center[0]), np.float32(xs - center[1])
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return dx * c + dy * s, -dx * s + dy * c


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to unit standard deviation, float32."""
    noise = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return noise / max(float(noise.std()), 1e-6)


def _taper(x: np.ndarray, half: float, soft: float) -> np.ndarray:
    """1 where ``|x| < half - soft``, falling smoothly to 0 at ``|x| = half``."""
    t = np.clip((half - np.abs(x)) / max(soft, 1e-6), 0, 1)
    return t * t * (3 - 2 * t)


def _shifted(image: np.ndarray, dy: np.ndarray | float, dx: np.ndarray | float) -> np.ndarray:
    """``image`` sampled at ``(y + dy, x + dx)`` (linear interpolation, edges repeated)."""
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]].astype(np.float32)
    return ndi.map_coordinates(image, [ys + dy, xs + dx], order=1, mode="nearest")


def _blob(rng: np.random.Generator, shape: tuple[int, int], p: _Params, soft: float) -> np.ndarray:
    """An irregular elliptical region with soft edges, ``(H, W)`` in ``[0, 1]``."""
    center, size, _, angle = p
    u, v = _frame(shape, center, angle)
    aspect = rng.uniform(1.0, 1.6)
    r = np.hypot(u / np.sqrt(aspect), v * np.sqrt(aspect)) / (size / 2)
    phi = np.arctan2(v, u)
    wobble = sum(
        rng.normal(0, 0.08) * np.cos(k * phi + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)
    )
    return _taper(r * (1 + wobble), 1.0, soft)


def _scratch(image: np.ndarray, rng: np.random.Generator, p: _Params) -> tuple[np.ndarray, ...]:
    center, size, contrast, angle = p
    u, v = _frame(image.shape, center, angle)
    bend = rng.uniform(-0.15, 0.15) / size  # sagitta up to ~4% of the length
    width = rng.uniform(1.0, 2.5)
    lines = np.zeros(image.shape, np.float32)
    for offset in np.cumsum([0.0, *rng.uniform(3, 9, rng.choice([0, 0, 0, 1, 2]))]):
        lines = np.maximum(lines, np.exp(-0.5 * ((v - bend * u**2 - offset) / width) ** 2))
    along = _taper(u, size / 2, 0.1 * size + 2)
    profile = lines * along
    strength = 0.75 + 0.25 * np.cos(u / rng.uniform(8, 30) + rng.uniform(0, 6.3))
    target = 1.0 if contrast > 0 else 0.0
    new = image + abs(contrast) * profile * strength * (target - image)
    return new, profile > MASK_LEVEL


def _annulus(
    image: np.ndarray, rng: np.random.Generator, p: _Params, gap: float
) -> tuple[np.ndarray, ...]:
    """A ring of radius ~0.4 ``size``, open over ``gap`` radians around ``angle``."""
    center, size, contrast, angle = p
    u, v = _frame(image.shape, center, angle)
    radius = size / 2 * rng.uniform(0.7, 0.8)
    half = max(size / 2 - radius, 2.0)
    radial = _taper(np.hypot(u, v) - radius, half, 0.6 * half)
    opening = np.abs(np.arctan2(v, u))  # 0 in the direction of ``angle``
    profile = radial * np.clip((opening - gap / 2) / 0.5, 0, 1) if gap else radial
    blurred = ndi.gaussian_filter(image, rng.uniform(1.0, 2.5))
    target = np.clip(blurred + np.sign(contrast) * 0.45, 0, 1)
    new = image + abs(contrast) * profile * (target - image)
    return new, profile > MASK_LEVEL


def _ring(image: np.ndarray, rng: np.random.Generator, p: _Params) -> tuple[np.ndarray, ...]:
    return _annulus(image, rng, p, gap=0.0)


def _horseshoe(image: np.ndarray, rng: np.random.Generator, p: _Params) -> tuple[np.ndarray, ...]:
    return _annulus(image, rng, p, gap=rng.uniform(0.8, 2.0))


def _dust(image: np.ndarray, rng: np.random.Generator, p: _Params) -> tuple[np.ndarray, ...]:
    center, size, contrast, angle = p
    u, v = _frame(image.shape, center, angle)
    core_r = size / 2 * rng.uniform(0.45, 0.65)
    phi = np.arctan2(v, u)
    edge = core_r * (
        1
        + sum(
            rng.normal(0, 0.1 / k**0.5) * np.cos(k * phi + rng.uniform(0, 6.3)) for k in range(2, 8)
        )
    )
    outside = np.hypot(u, v) - edge  # < 0 inside the particle
    for _ in range(rng.integers(0, 4)):  # small satellite specks
        a, d = rng.uniform(0, 2 * np.pi), rng.uniform(1.0, 1.5) * core_r
        r = rng.uniform(0.1, 0.25) * core_r
        outside = np.minimum(outside, np.hypot(u - d * np.cos(a), v - d * np.sin(a)) - r)
    core = 1 / (1 + np.exp(np.minimum(outside / 0.7, 50)))
    halo = np.exp(-np.maximum(outside, 0) / max(0.15 * size, 1.5)) * (1 - core)
    dark = np.float32(rng.uniform(0.02, 0.1)) + 0.05 * _smooth_noise(rng, image.shape, 2.0)
    halo *= 0.25 * contrast
    new = image + contrast * core * (dark - image) + halo * (1 - image)
    return new, core + halo > MASK_LEVEL


def _fold(image: np.ndarray, rng: np.random.Generator, p: _Params) -> tuple[np.ndarray, ...]:
    center, size, contrast, angle = p
    u, v = _frame(image.shape, center, angle)
    width = max(3.0, size * rng.uniform(0.03, 0.08))
    along = _taper(u, size / 2, min(0.2 * size, 4 * width))
    band = _taper(v, width / 2, min(2.0, width / 3)) * along
    # Tissue beside the fold is pulled towards it: content at v comes from further out.
    pull = 0.5 * width * along * np.exp(-np.maximum(v - width / 2, 0) / width) * (v > 0)
    pull *= np.clip(pull / 0.15 - 1, 0, 1)  # exactly zero below 0.15 px, so the mask is tight
    ny, nx = np.float32(np.cos(angle)), np.float32(-np.sin(angle))  # unit vector along +v
    pulled = _shifted(image, pull * ny, pull * nx)
    doubled = 0.85 * image * _shifted(image, 1.5 * width * ny, 1.5 * width * nx)
    core = np.exp(-0.5 * (v / (0.3 * width)) ** 2)
    edges = np.exp(-0.5 * ((np.abs(v) - width / 2) / 1.0) ** 2)
    folded = np.clip(doubled * (1 - 0.4 * core) * (1 - 0.4 * edges), 0, 1)
    new = pulled + contrast * band * (folded - pulled)
    return new, (band > MASK_LEVEL) | (pull > 0)


def _charging(image: np.ndarray, rng: np.random.Generator, p: _Params) -> tuple[np.ndarray, ...]:
    blob = _blob(rng, image.shape, p, soft=0.5)
    washed = rng.uniform(0.85, 0.97) + 0.15 * (image - image.mean())
    new = image + p[2] * blob * (washed - image)
    return new, blob > MASK_LEVEL


def _defocus(image: np.ndarray, rng: np.random.Generator, p: _Params) -> tuple[np.ndarray, ...]:
    blob = _blob(rng, image.shape, p, soft=0.3)
    blurred = ndi.gaussian_filter(image, 1.0 + 4.0 * p[2])
    return image + blob * (blurred - image), blob > MASK_LEVEL


def _seam(image: np.ndarray, rng: np.random.Generator, p: _Params) -> tuple[np.ndarray, ...]:
    center, size, contrast, angle = p
    u, v = _frame(image.shape, center, angle)
    reach = max(8.0, 0.2 * size)  # misregistered strip; its far half blends back (ghosting)
    side = (v >= 0) * _taper(v - reach / 2, reach / 2, reach / 2) * _taper(u, size / 2, 3.0)
    shift_u, shift_v = rng.uniform(2.0, 6.0) * rng.choice([-1, 1]), rng.uniform(-2.0, 2.0)
    c, s = np.cos(angle), np.sin(angle)
    moved = _shifted(image, shift_u * s + shift_v * c, shift_u * c - shift_v * s)
    target = np.clip(moved + 0.25 * contrast, 0, 1)
    new = image + side * (target - image)
    return new, side > MASK_LEVEL


def _stripes(image: np.ndarray, rng: np.random.Generator, p: _Params) -> tuple[np.ndarray, ...]:
    center, size, contrast, angle = p
    u, v = _frame(image.shape, center, angle)
    thickness = size * rng.uniform(0.25, 0.5)
    weight = _taper(v, thickness / 2, 2.0) * _taper(u, size / 2, 0.1 * size)
    line = np.floor(v + thickness).astype(np.intp).clip(0, int(2 * thickness) + 1)
    n = int(2 * thickness) + 2
    hit = rng.random(n) < 0.6  # scan lines that jumped
    offset = (np.sign(contrast) * 0.08 + 0.2 * rng.normal(0, 1, n) * hit)[line]
    shift = (rng.normal(0, 1.5, n) * hit)[line]
    moved = _shifted(image, shift * np.sin(angle), shift * np.cos(angle))
    target = np.clip(moved + abs(contrast) * offset, 0, 1)
    return image + weight * (target - image), weight > MASK_LEVEL


def _tile(image: np.ndarray, rng: np.random.Generator, p: _Params) -> tuple[np.ndarray, ...]:
    center, size, contrast, angle = p
    u, v = _frame(image.shape, center, angle)
    aspect = rng.uniform(0.6, 1.6)
    inside = (np.abs(u) <= size / 2 * aspect**0.5) & (np.abs(v) <= size / 2 / aspect**0.5)
    fill = rng.choice(["black", "white", "noise"])
    if fill == "noise":
        target = rng.random(image.shape).astype(np.float32)
    else:
        target = np.full(image.shape, 0.0 if fill == "black" else 1.0, np.float32)
    return np.where(inside, image + contrast * (target - image), image), inside


@dataclass(frozen=True)
class _Kind:
    """An injector with the ranges its unspecified parameters are drawn from."""

    draw: Callable[[np.ndarray, np.random.Generator, _Params], tuple[np.ndarray, ...]]
    size: tuple[float, float]  # fraction of the shorter image side
    contrast: tuple[float, float]  # magnitude
    signed: bool  # the sign of contrast picks bright or dark
    angles: tuple[float, ...] | None = None  # default orientations (None: any)


INJECTORS: dict[str, _Kind] = {
    "scratch": _Kind(_scratch, (0.4, 0.9), (0.4, 0.9), True),
    "ring": _Kind(_ring, (0.12, 0.3), (0.4, 0.8), True),
    "horseshoe": _Kind(_horseshoe, (0.12, 0.3), (0.5, 0.9), True),
    "dust": _Kind(_dust, (0.04, 0.12), (0.8, 1.0), False),
    "fold": _Kind(_fold, (0.4, 0.9), (0.6, 1.0), False),
    "charging": _Kind(_charging, (0.15, 0.35), (0.5, 0.9), False),
    "defocus": _Kind(_defocus, (0.15, 0.35), (0.4, 1.0), False),
    "seam": _Kind(_seam, (0.4, 1.0), (0.2, 0.6), True, (0.0, np.pi / 2)),
    "stripes": _Kind(_stripes, (0.3, 0.7), (0.3, 0.8), True, (0.0,)),
    "tile": _Kind(_tile, (0.08, 0.2), (0.8, 1.0), False, (0.0,)),
}

#: The artifact kinds, in a fixed order.
ARTIFACT_TYPES: tuple[str, ...] = tuple(INJECTORS)


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 2 or 0 in image.shape:
        raise EmaeError(f"image must be a non-empty 2D numpy array (YX), got {np.shape(image)}")
    if not np.issubdtype(image.dtype, np.floating):
        raise EmaeError(
            f"image must be float in [0, 1], got dtype {image.dtype}; use as_unit_float"
        )
    lo, hi = float(image.min()), float(image.max())
    if not (np.isfinite(lo) and np.isfinite(hi) and lo >= -1e-6 and hi <= 1 + 1e-6):
        raise EmaeError(f"image values must lie in [0, 1], got [{lo}, {hi}]; use as_unit_float")
    return np.asarray(image, dtype=np.float32)


def inject(
    image: np.ndarray,
    kind: str,
    *,
    seed: int | np.random.Generator,
    center: tuple[int, int] | None = None,
    size: float | None = None,
    contrast: float | None = None,
    orientation: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one artifact of ``kind`` onto a copy of ``image``.

    Parameters
    ----------
    image
        float ``(H, W)``, axes ``"YX"``, values in ``[0, 1]`` (see :func:`as_unit_float`). It is
        not modified.
    kind
        One of :data:`ARTIFACT_TYPES`.
    seed
        Seed or generator for every random draw, including the parameters left as None.
    center
        ``(y, x)`` in pixels, inside the image; None draws it away from the borders.
    size
        Characteristic extent in pixels (see the module docstring); None draws it relative to
        the shorter image side.
    contrast
        Strength in ``[-1, 1]``; the sign picks bright or dark where the kind has both, other
        kinds need ``contrast >= 0``. None draws a typical strength (and a random sign).
    orientation
        Angle in radians from the x axis towards +y; None draws a typical one.

    Returns
    -------
    new : numpy.ndarray
        float32 ``(H, W)`` in ``[0, 1]``, the image with the artifact.
    mask : numpy.ndarray
        bool ``(H, W)``, the pixels the artifact affects. Outside it no pixel changed by more
        than :data:`MASK_LEVEL`.
    """
    if kind not in INJECTORS:
        raise EmaeError(f"unknown artifact kind {kind!r}; expected one of {', '.join(INJECTORS)}")
    spec = INJECTORS[kind]
    image = _check_image(image)
    rng = as_generator(seed)
    h, w = image.shape
    side = min(h, w)
    if center is None:
        center = (rng.uniform(0.15, 0.85) * (h - 1), rng.uniform(0.15, 0.85) * (w - 1))
    elif len(center) != 2 or not (0 <= center[0] < h and 0 <= center[1] < w):
        raise EmaeError(f"center must be (y, x) inside the {h}x{w} image, got {center!r}")
    if size is None:
        size = rng.uniform(*spec.size) * side
    elif not (np.isfinite(size) and size > 0):
        raise EmaeError(f"size must be a positive number of pixels, got {size!r}")
    if contrast is None:
        contrast = rng.uniform(*spec.contrast) * (rng.choice([-1, 1]) if spec.signed else 1)
    elif not (-1 <= contrast <= 1 and (spec.signed or contrast >= 0)):
        allowed = "[-1, 1]" if spec.signed else "[0, 1]"
        raise EmaeError(f"contrast for {kind!r} must be in {allowed}, got {contrast!r}")
    if orientation is None:
        options = spec.angles
        orientation = rng.uniform(0, 2 * np.pi) if options is None else rng.choice(options)
    elif not np.isfinite(orientation):
        raise EmaeError(f"orientation must be a finite angle in radians, got {orientation!r}")
    # Every artifact lies within ``size`` of its centre: draw it on that window only.
    reach = int(np.ceil(size)) + 16
    y0, x0 = max(int(center[0]) - reach, 0), max(int(center[1]) - reach, 0)
    window = (slice(y0, int(center[0]) + reach + 1), slice(x0, int(center[1]) + reach + 1))
    local = ((float(center[0]) - y0, float(center[1]) - x0), float(size), float(contrast))
    drawn, drawn_mask = spec.draw(image[window], rng, (*local, float(orientation)))
    new, mask = image.copy(), np.zeros(image.shape, dtype=bool)
    new[window] = np.clip(drawn, 0, 1)
    mask[window] = drawn_mask
    return new, mask
