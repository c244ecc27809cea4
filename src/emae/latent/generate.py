"""What a generative autoencoder makes: prior samples, interpolations and latent traversals.

All three decode latent codes with the model's own ``decode``; images are returned in the
model's normalized intensities (``(n, P, P)`` float32, about 0..1).

- :func:`prior_samples`: ``z ~ N(0, I)`` decoded (a VAE or beta-VAE only: a plain autoencoder
  has no prior to draw from).
- :func:`interpolate`: codes of two patches (a VAE's posterior means, another autoencoder's
  latent) mixed linearly in ``steps`` steps and decoded; any model with ``encode``/``decode``.
- :func:`traversals`: one row per latent unit, the unit swept over ``[-span, span]`` (in prior
  standard deviations) around a base code with the others fixed. For a beta-VAE this shows what
  each unit controls (disentanglement). Units are ordered by their mean KL divergence over the
  given patches, most informative first, so inactive units (KL near 0, flat rows) come last.
  In a spatial latent a "unit" is a channel, swept at every position at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from emae.errors import EmaeError
from emae.models.blocks import center_crop


def _check_codec(model: nn.Module) -> None:
    if not (hasattr(model, "encode") and hasattr(model, "decode") and hasattr(model, "latent")):
        raise EmaeError(
            f"{type(model).__name__} has no latent code to decode (a U-Net's skip connections "
            "bypass it); use a conv-ae, denoising-ae, vae or beta-vae"
        )


def is_variational(model: nn.Module) -> bool:
    """Whether the model has a Gaussian latent with a N(0, I) prior (vae, beta-vae)."""
    return hasattr(model, "reparameterize") and hasattr(model, "kl_divergence")


def _code(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The deterministic code of ``x``: a VAE's posterior mean, else ``encode(x)``."""
    return model.encode(x)[0] if is_variational(model) else model.encode(x)


def _images(model: nn.Module, z: torch.Tensor, size: int) -> np.ndarray:
    weight = next(model.parameters())
    out = center_crop(model.decode(z.to(weight)), (size, size))
    return out[:, 0].float().cpu().numpy()


def _tensor(patches: Any, model: nn.Module) -> torch.Tensor:
    a = np.asarray(patches, dtype=np.float32)
    if a.ndim != 3 or a.shape[1] != a.shape[2]:
        raise EmaeError(f"patches must be (N, P, P) normalized images, got shape {a.shape}")
    return torch.from_numpy(a[:, None]).to(next(model.parameters()).device)


def prior_samples(model: nn.Module, n: int, size: int, *, seed: int = 0) -> np.ndarray:
    """``n`` images ``(n, size, size)`` decoded from draws of the prior N(0, I)."""
    _check_codec(model)
    if not is_variational(model):
        raise EmaeError(
            f"a {type(model).__name__} has no prior to sample from; train a vae or beta-vae"
        )
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.inference_mode():
        spatial = None if model.latent == "vector" else (size, size)
        return model.sample(n, generator=generator, spatial_shape=spatial)[:, 0].float().numpy()


def interpolate(model: nn.Module, a: Any, b: Any, steps: int = 8) -> np.ndarray:
    """Images ``(steps, P, P)`` from patch ``a`` to patch ``b`` (each ``(P, P)``, normalized):
    their codes mixed linearly, the ends included."""
    _check_codec(model)
    if steps < 2:
        raise EmaeError(f"steps must be >= 2, got {steps}")
    x = _tensor(np.stack([a, b]), model)
    model.eval()
    with torch.inference_mode():
        za, zb = _code(model, x)
        t = torch.linspace(0, 1, steps, device=za.device).view(-1, *([1] * za.dim()))
        return _images(model, (1 - t) * za + t * zb, x.shape[-1])


def unit_kl(model: nn.Module, patches: Any) -> np.ndarray:
    """Mean KL divergence of each latent unit (channel of a spatial latent) over ``patches``
    ``(N, P, P)``: ``(units,)`` float64, in nats."""
    x = _tensor(patches, model)
    model.eval()
    with torch.inference_mode():
        mu, logvar = model.encode(x)
        kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)
        dims = (0,) if kl.dim() == 2 else (0, 2, 3)
        return kl.mean(dim=dims).double().cpu().numpy()


def traversals(
    model: nn.Module,
    base: Any,
    *,
    units: int = 8,
    steps: int = 9,
    span: float = 3.0,
    patches: Any = None,
    size: int | None = None,
) -> tuple[np.ndarray, list[int], np.ndarray | None]:
    """Latent traversals of a VAE around the code of ``base`` ``(P, P)``.

    Parameters
    ----------
    model
        A vae or beta-vae.
    base
        The patch whose posterior mean the traversals start from (normalized ``(P, P)``), or
        None: the prior's mean, the zero code (of patches of side ``size``).
    units
        Rows: the ``units`` latent units with the largest mean KL over ``patches`` (or the first
        units, in order, without ``patches``).
    steps, span
        Each unit takes ``steps`` values evenly spaced over ``[-span, span]``.
    patches
        ``(N, P, P)`` normalized patches that rank the units by KL.
    size
        Side of the images when ``base`` is None.

    Returns
    -------
    images : numpy.ndarray
        ``(rows, steps, P, P)`` float32.
    order : list of int
        The unit of each row.
    kl : numpy.ndarray or None
        ``(all units,)`` mean KL per unit (None without ``patches``).
    """
    _check_codec(model)
    if not is_variational(model):
        raise EmaeError(f"traversals need a vae or beta-vae, not a {type(model).__name__}")
    kl = None if patches is None else unit_kl(model, patches)
    if base is None and size is None:
        raise EmaeError("traversals need a base patch or the size of the images")
    start = np.zeros((size, size)) if base is None else base
    x = _tensor(np.asarray(start)[None], model)
    model.eval()
    with torch.inference_mode():
        mu, _ = model.encode(x)
        if base is None:
            mu = torch.zeros_like(mu)
        n_units = mu.shape[1]
        order = list(range(n_units)) if kl is None else [int(u) for u in np.argsort(-kl)]
        order = order[: min(units, n_units)]
        values = torch.linspace(-span, span, steps, device=mu.device)
        rows = []
        for u in order:
            z = mu.repeat(steps, *([1] * (mu.dim() - 1)))
            z[:, u] = values.view(-1, *([1] * (mu.dim() - 2)))
            rows.append(_images(model, z, x.shape[-1]))
    return np.stack(rows), order, kl
