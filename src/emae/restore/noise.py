"""The noise of an EM image, and the blind-spot prediction combined with the noisy pixel.

A blind-spot network (:mod:`emae.train.blind_spot`) predicts every pixel from its
neighbourhood: its output ``mu`` is a *prior* for the clean value, learned without ever seeing
the pixel's own noise. On its own it throws away what the pixel itself says, which on images
that are smooth at the pixel scale is most of what there is to know (a Gaussian filter beats a
plain blind-spot output on ISBI TEM slices by 2 dB at low noise). With a model of the noise the
two combine by Bayes' rule (Laine et al., 2019; probabilistic Noise2Void, Krull et al., 2020);
for Gaussian prior and noise the posterior mean is::

    x = mu + p / (p + n) * (y - mu)

with ``y`` the noisy pixel, ``n`` the noise variance at that intensity and ``p`` the prior's
variance, estimated locally from the residual: ``E[(y - mu)^2] = p + n`` when the prediction's
error and the noise are independent, so ``p = max(G * (y - mu)^2 - n, 0)`` with ``G`` a
Gaussian window of ``window`` pixels. Where the network is sure (``p`` small) the output is its
prediction; where it errs (edges, fine structure) the pixel's own value comes back.

The noise model is Poisson-Gaussian, ``n(x) = a x + b`` in the image's own units (shot noise
of the detected electrons plus the detector's read noise), fitted on the image itself as Foi
et al. (2008) do: the finest diagonal Haar coefficient of every 2 x 2 block,
``(y00 - y01 - y10 + y11) / 2``, has the noise's variance and almost none of a signal that is
smooth at the pixel scale; its robust variance (median absolute deviation) in 16 bins of the
blocks' mean intensity gives ``n`` at 16 intensities, and a weighted least-squares line through
them gives ``a`` and ``b``. Blocks holding the sample's lowest or highest value (saturation,
padding, clipping) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage, stats

from emae.errors import EmaeError

if TYPE_CHECKING:
    from emae.io.image import Image

#: Width (Gaussian sigma, pixels) of the window the prior's variance is estimated over.
WINDOW = 4.0
#: The window's Gaussian is cut at this many sigmas: it reaches ``ceil(TRUNCATE * window)``
#: pixels, which a tile's halo must cover beyond the network's receptive field.
TRUNCATE = 3.0
#: Intensity bins of the noise fit.
BINS = 16
#: Pixels read from an image to fit its noise model, at most.
SAMPLE_PIXELS = 8 * 1024 * 1024


@dataclass(frozen=True)
class NoiseModel:
    """Noise variance ``a * x + b`` at intensity ``x``, in the image's own units.

    ``floor`` (> 0) is the smallest variance returned: a line fitted through the bins, or a
    calibration with a dark offset (``b < 0``), reaches 0 or below at the darkest intensities.
    """

    a: float
    b: float
    floor: float

    def __post_init__(self) -> None:
        if not all(np.isfinite([self.a, self.b, self.floor])) or self.a < 0 or self.floor <= 0:
            raise EmaeError(
                f"a noise model needs finite a >= 0, b and floor > 0; got a={self.a}, "
                f"b={self.b}, floor={self.floor}"
            )

    def variance(self, x: np.ndarray) -> np.ndarray:
        """Noise variance at intensities ``x`` (any shape) as float32, at least ``floor``."""
        x = np.asarray(x, np.float32)
        return np.maximum(np.float32(self.a) * x + np.float32(self.b), np.float32(self.floor))

    def to_dict(self) -> dict[str, float]:
        return {"a": self.a, "b": self.b, "floor": self.floor}

    def __str__(self) -> str:
        sign = "+" if self.b >= 0 else "-"
        line = f"variance {self.a:.4g} * intensity {sign} {abs(self.b):.4g}"
        return f"{line} (at least {self.floor:.4g})"

    @classmethod
    def parse(cls, text: str) -> NoiseModel:
        """``"A,B"`` or ``"A,B,FLOOR"`` (variance ``A x + B``, at least ``FLOOR``, in the
        image's units; FLOOR defaults to ``B / 100`` and is needed when ``B <= 0``) -> a model;
        one-line errors."""
        try:
            values = [float(v) for v in text.split(",")]
            if len(values) not in (2, 3):
                raise ValueError
        except ValueError:
            raise EmaeError(
                f"a noise model is 'auto', 'fit', 'off' or 'A,B[,FLOOR]' (variance "
                f"A * intensity + B, at least FLOOR), got {text!r}"
            ) from None
        a, b = values[:2]
        if len(values) == 2 and not b > 0:
            raise EmaeError(f"noise model {text!r}: with B <= 0 give the smallest variance too")
        return cls(a, b, values[2] if len(values) == 3 else b / 100)


def haar_diagonal(image: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, bool]:
    """Diagonal Haar coefficients and means of the 2 x 2 blocks of ``image`` ``(H, W)``.

    Returns two float64 arrays ``(H // 2, W // 2)``, ``(y00 - y01 - y10 + y11) / 2`` (variance
    equal to the pixels' for independent noise) and the block means, with blocks touching the
    image's lowest or highest value NaN in both; and whether the image is integer-valued. The
    pixels of an integer-valued image are dithered first (uniform in -0.5..0.5, seeded), so
    that the coefficients' median does not step with the grey levels; the dither adds 1/12 to
    their variance.
    """
    h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    y = np.asarray(image[:h, :w], dtype=np.float64)
    low, high = y.min(), y.max()
    clipped = (y == low) | (y == high)
    clipped = clipped[0::2, 0::2] | clipped[0::2, 1::2] | clipped[1::2, 0::2] | clipped[1::2, 1::2]
    integral = bool(np.all(y == np.rint(y)))
    if integral:
        y = y + np.random.default_rng(seed).uniform(-0.5, 0.5, y.shape)
    a, b, c, d = y[0::2, 0::2], y[0::2, 1::2], y[1::2, 0::2], y[1::2, 1::2]
    coefficient, mean = (a - b - c + d) / 2, (a + b + c + d) / 4
    coefficient[clipped] = np.nan
    mean[clipped] = np.nan
    return coefficient, mean, integral


def fit_noise_model(images: list[np.ndarray], *, bins: int = BINS) -> NoiseModel:
    """The Poisson-Gaussian noise model of ``images`` (2D arrays ``(H, W)``, any dtype).

    Per intensity bin the robust variance of the diagonal Haar coefficients (the median
    absolute deviation's, less the dither's 1/12 on integer images); a line through the bins
    weighted by their inverse variance (the error of a variance estimate grows with it);
    ``floor`` half the smallest bin variance.
    Figures are rounded to 6 significant digits, so that a fit repeated on another machine
    gives the same model.

    Raises
    ------
    EmaeError
        When too few unclipped pixels remain to fit (fewer than 100 blocks per bin), or the
        images show no noise at all.
    """
    pairs = [haar_diagonal(image, seed=i) for i, image in enumerate(images)]
    dither = 1 / 12 if all(p[2] for p in pairs) else 0.0  # mixed: no correction
    d = np.concatenate([p[0].ravel() for p in pairs])
    m = np.concatenate([p[1].ravel() for p in pairs])
    keep = np.isfinite(d)
    d, m = d[keep], m[keep]
    if d.size < 100 * bins:
        raise EmaeError(
            f"cannot fit a noise model: {d.size} unclipped 2 x 2 blocks, need {100 * bins}; "
            "give one (--noise A,B) or use the prediction alone (--noise off)"
        )
    edges = np.quantile(m, np.linspace(0, 1, bins + 1))
    index = np.clip(np.searchsorted(edges, m, side="right") - 1, 0, bins - 1)
    means, variances, counts = [], [], []
    for i in range(bins):
        in_bin = index == i
        inside = d[in_bin]
        if inside.size < 100:  # a bin of one repeated intensity
            continue
        means.append(np.median(m[in_bin]))
        sd = stats.median_abs_deviation(inside, scale="normal")  # a Gaussian's sd, robustly
        variances.append(max(sd**2 - dither, 0.0))
        counts.append(inside.size)
    x, v, n = np.array(means), np.array(variances), np.array(counts, float)
    if v.max() <= 0:
        raise EmaeError(
            "cannot fit a noise model: the image shows no noise; use the prediction alone "
            "(--noise off)"
        )
    floor = 0.5 * float(v[v > 0].min())
    weight = np.sqrt(n) / np.maximum(v, floor)
    a, b = np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1) * weight[:, None], v * weight)[0]
    if len(x) < 2 or a < 0:  # no shot noise to see: one variance for every intensity
        a, b = 0.0, float(np.average(v, weights=n))
    return NoiseModel(*(float(f"{value:.6g}") for value in (a, b, floor)))


def noise_sample(image: Image, *, max_pixels: int = SAMPLE_PIXELS) -> list[np.ndarray]:
    """Regions of an image to fit its noise on: the centres of up to 8 sections spread evenly
    over ``z``, ``max_pixels`` in all; deterministic.

    Returns
    -------
    list of numpy.ndarray
        ``(h, w)`` arrays in the image's dtype, one per chosen section (``"YX"``: one).

    Raises
    ------
    EmaeError
        When a region holds NaN or infinite values (naming the file and the pixel).
    """
    n = image.n_sections
    zs = sorted({int(z) for z in np.linspace(0, n - 1, min(n, 8))})
    side = int(np.sqrt(max_pixels / len(zs)))
    h, w = image.yx_shape
    sh, sw = min(h, side), min(w, side)
    y0, x0 = (h - sh) // 2, (w - sw) // 2
    regions = []
    for z in zs:
        key = (slice(y0, y0 + sh), slice(x0, x0 + sw))
        region = image[key] if image.axes == "YX" else image[(z, *key)]
        regions.append(image.check_finite(region, z, y0, x0))
    return regions


def posterior_mean(
    y: np.ndarray, mu: np.ndarray, noise: NoiseModel, *, window: float = WINDOW
) -> np.ndarray:
    """Combine noisy pixels with the blind-spot prediction (module docstring).

    Parameters
    ----------
    y, mu
        ``(B, h, w)`` float32: the noisy tiles and the network's prediction of them, in the
        image's own units.
    noise
        The noise model, same units.
    window
        Gaussian sigma (pixels) of the local estimate of the prior's variance, cut at
        ``TRUNCATE * window`` pixels: a tile's halo must cover that beyond the network's
        receptive field for the result to be free of seams.

    Returns
    -------
    numpy.ndarray
        ``(B, h, w)`` float32, the posterior mean.
    """
    residual = (y - mu).astype(np.float32)
    total = ndimage.gaussian_filter(
        residual * residual, (0, window, window), mode="reflect", truncate=TRUNCATE
    )
    n = noise.variance(mu)
    prior = np.maximum(total - n, 0.0)
    return (mu + prior / (prior + n) * residual).astype(np.float32)
