"""``emae generate``: what a trained autoencoder makes, as image grids (emae.latent.generate).

Writes the folder ``OUT/`` atomically::

    samples.png, samples.tif                 draws from the prior (vae, beta-vae)
    interpolations.png, interpolations.tif   rows of patch A -> patch B (any autoencoder with a
                                             latent code; needs inputs to take the patches from)
    traversals.png, traversals.tif           one row per latent unit, most informative first
                                             (vae, beta-vae)
    generate.json                            what was made, the units' order and mean KL, and
                                             why anything was left out

TIFFs hold the images as float32 stacks in the model's normalized intensities (``"ZYX"``,
rows one after the other). The pairs of patches are drawn at random (seeded) from the inputs,
or given with ``at``: two patch centres ``(z, y, x)`` in the first input.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from emae.data.patches import PatchLocation, read_patches
from emae.data.sampling import random_locations
from emae.errors import EmaeError
from emae.folders.autoencoder import load_bundle
from emae.io import expand_inputs, open_image
from emae.io.atomic import atomic_dir
from emae.io.provenance import check_not_input
from emae.latent.generate import interpolate, is_variational, prior_samples, traversals
from emae.report.latent_figures import image_grid_figure

SUMMARY = "generate.json"
#: Patches drawn from the inputs to rank the latent units by KL.
KL_PATCHES = 256


def _patches(
    sources: list[str], patch: int, n: int, seed: int, at: Sequence[Sequence[int]] | None
) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """``n`` raw patches drawn from the inputs, the ``at`` centres (if any) first."""
    images = [open_image(s) for s in sources]
    locations = []
    for centre in at or ():
        z, y, x = centre
        locations.append(PatchLocation(0, z, y - patch // 2, x - patch // 2))
    locations += random_locations(images, n, patch, seed=seed)
    return read_patches(images, locations, patch), [loc[1:] for loc in locations]


def generate(
    model: str | Path,
    out: str | Path,
    *,
    inputs: Sequence[str | Path] = (),
    samples: int = 16,
    pairs: int = 4,
    steps: int = 8,
    units: int = 8,
    span: float = 3.0,
    at: Sequence[Sequence[int]] | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write prior samples, interpolations and traversals of a model folder to ``out``.

    Parameters
    ----------
    model
        A model folder of ``emae pretrain``.
    out
        The folder to write.
    inputs
        Images or volumes to take patches from (interpolations, the base and the KL ranking of
        traversals); without them only prior samples and traversals around the zero code.
    samples, pairs, steps, units, span
        Prior samples; interpolated pairs and their steps; traversal rows and their values in
        ``[-span, span]`` prior standard deviations (``steps + 1`` values, odd, so 0 is one).
    at
        Two patch centres ``(z, y, x)`` in the first input: the first interpolated pair.
    seed
        Seed of the prior draws and of the patches drawn from the inputs.

    Returns
    -------
    dict
        The content of ``generate.json``.
    """
    bundle = load_bundle(model)
    net, patch = bundle.model.eval(), int(bundle.config.get("patch_size", 64))
    sources = expand_inputs(inputs) if inputs else []
    out = Path(out)
    check_not_input(out, [*sources, model])
    if at is not None and (len(at) != 2 or not sources):
        raise EmaeError("--at takes two patch centres z,y,x in the first input")
    variational = is_variational(net)
    if not variational and not sources:
        raise EmaeError(
            f"{model} is a {bundle.model_name}: it has no prior to sample from; give inputs to "
            "interpolate between their patches, or train a vae or beta-vae"
        )
    normalized = None
    if sources:
        raw, centres = _patches(sources, patch, max(2 * pairs, KL_PATCHES), seed, at)
        normalized = bundle.normalizer(raw).astype(np.float32)
    summary: dict[str, Any] = {"model": str(model), "model_name": bundle.model_name, "made": []}
    grids: dict[str, tuple[list[np.ndarray], list[str], str]] = {}
    if variational:
        drawn = prior_samples(net, samples, patch, seed=seed)
        rows = [drawn[i : i + 8] for i in range(0, len(drawn), 8)]
        grids["samples"] = (rows, [""] * len(rows), f"{samples} draws from the prior N(0, I)")
    else:
        summary["samples"] = f"left out: a {bundle.model_name} has no prior"
    if normalized is not None:
        rows = [
            interpolate(net, normalized[2 * i], normalized[2 * i + 1], steps) for i in range(pairs)
        ]
        titles = [f"{centres[2 * i]}\n-> {centres[2 * i + 1]}" for i in range(pairs)]
        grids["interpolations"] = (rows, titles, "interpolations between patches (z, y, x)")
    else:
        summary["interpolations"] = "left out: no inputs to take the patches from"
    if variational:
        base = normalized[0] if normalized is not None else None
        images, order, kl = _traverse(net, base, patch, units, steps, span, normalized)
        titles = [f"unit {u}" + ("" if kl is None else f"\nKL {kl[u]:.2f}") for u in order]
        grids["traversals"] = (list(images), titles, f"latent traversals, -{span} to +{span} sd")
        summary["traversal_units"] = order
        summary["unit_kl"] = None if kl is None else [round(float(v), 5) for v in kl]
    else:
        summary["traversals"] = f"left out: a {bundle.model_name} has no prior"

    def is_generate(path: Path) -> bool:
        return (path / SUMMARY).is_file()

    with atomic_dir(
        out, overwrite=overwrite, replaceable=is_generate, kind="an emae generate output"
    ) as tmp:
        for name, (rows, titles, title) in grids.items():
            image_grid_figure(rows, titles, title).savefig(tmp / f"{name}.png", format="png")
            tifffile.imwrite(tmp / f"{name}.tif", np.concatenate(rows).astype(np.float32))
            summary["made"].append(name)
        (tmp / SUMMARY).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def _traverse(
    net: Any, base: np.ndarray | None, patch: int, units: int, steps: int, span: float, patches: Any
) -> tuple[np.ndarray, list[int], np.ndarray | None]:
    """Traversals around ``base``'s code, or around the prior's mean (the zero code)."""
    n = steps + 1 if steps % 2 == 0 else steps
    if base is not None:
        return traversals(net, base, units=units, steps=n, span=span, patches=patches)
    return traversals(net, None, units=units, steps=n, span=span, size=patch)
