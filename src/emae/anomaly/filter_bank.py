"""Multi-scale filter responses at every pixel: ilastik's default feature set, in torch.

At each scale ``sigma`` seven responses describe a pixel's neighbourhood the way ilastik's
pixel classifier does:

1. ``G``: the Gaussian-smoothed intensity (brightness at that scale: charging, folds);
2. ``LoG``: the Laplacian of Gaussian (blobs and their polarity: dust, vesicles);
3. ``|grad|``: the gradient magnitude of the smoothed image (edges: tiles, seams);
4. and 5. the two Hessian eigenvalues, larger first (ridges and valleys: membranes, scratches);
6. and 7. the two structure-tensor eigenvalues, larger first (gradients at ``sigma``, their
   outer products averaged over ``sigma / 2`` as ilastik does; edge strength and how oriented it
   is: stripes, scratches, defocus).

Derivatives are central differences of the smoothed image (the border replicated), which is
the derivative of Gaussian up to ``O(1 / sigma**2)``. Everything is batched torch on the
input's device, float32, built on :func:`emae.anomaly.filters.gaussian_filter`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from emae.anomaly.filters import gaussian_filter
from emae.errors import EmaeError

#: ilastik's default scales above its finest (0.3), in pixels.
SIGMAS: tuple[float, ...] = (0.7, 1.6, 3.5, 5.0, 10.0)
#: The responses at each scale, in the order :func:`filter_features` stacks them.
RESPONSES: tuple[str, ...] = (
    "gaussian",
    "laplacian",
    "gradient",
    "hessian_1",
    "hessian_2",
    "structure_1",
    "structure_2",
)


def feature_names(sigmas: Sequence[float] = SIGMAS) -> list[str]:
    """``"<response>@<sigma>"`` for every channel of :func:`filter_features`, in order."""
    return [f"{r}@{s:g}" for s in sigmas for r in RESPONSES]


def _gradients(x: Tensor) -> tuple[Tensor, Tensor]:
    """Central differences along y and x of ``(B, H, W)`` images, border replicated."""
    padded = F.pad(x[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    dy = 0.5 * (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1])
    dx = 0.5 * (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2])
    return dy, dx


def _eigenvalues(a: Tensor, b: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues of the symmetric 2 x 2 matrices ``[[a, b], [b, c]]``, larger first."""
    half_trace = 0.5 * (a + c)
    root = torch.sqrt((0.5 * (a - c)).square() + b.square())
    return half_trace + root, half_trace - root


def filter_features(x: Tensor, sigmas: Sequence[float] = SIGMAS) -> Tensor:
    """The seven responses of the module docstring at each scale.

    Parameters
    ----------
    x
        ``(B, H, W)`` float images (normalized intensities), any device.
    sigmas
        Scales in pixels, each > 0.

    Returns
    -------
    Tensor
        ``(B, 7 * len(sigmas), H, W)``, the dtype and device of ``x``; channel ``7 i + j`` is
        response ``RESPONSES[j]`` at ``sigmas[i]`` (:func:`feature_names`).
    """
    if x.ndim != 3 or not x.is_floating_point():
        raise EmaeError(f"filter_features needs (B, H, W) float images, got {tuple(x.shape)}")
    if not sigmas or not all(s > 0 for s in sigmas):
        raise EmaeError(f"sigmas must be positive pixel scales, got {list(sigmas)}")
    out = []
    for sigma in sigmas:
        smooth = gaussian_filter(x, sigma)
        dy, dx = _gradients(smooth)
        dyy, dyx = _gradients(dy)
        _, dxx = _gradients(dx)
        h1, h2 = _eigenvalues(dyy, dyx, dxx)
        outer = torch.stack([dy * dy, dy * dx, dx * dx])  # (3, B, H, W)
        jyy, jyx, jxx = gaussian_filter(outer, 0.5 * sigma)
        s1, s2 = _eigenvalues(jyy, jyx, jxx)
        gradient = torch.sqrt(dy * dy + dx * dx)
        out += [smooth, dyy + dxx, gradient, h1, h2, s1, s2]
    return torch.stack(out, dim=1)
