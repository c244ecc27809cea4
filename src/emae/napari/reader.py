"""The napari reader: emae's map stores and score TIFF maps as layers that overlay their source.

:func:`napari_get_reader` accepts only what emae wrote (its ``emae`` mark,
:mod:`emae.io.provenance`) and returns None for anything else, so napari falls back to other
readers. :func:`read_outputs` returns napari layer data tuples ``(data, kwargs, layer_type)``:

- the anomaly map (the root of ``OUT.zarr``, or a ``*.tif`` written by ``emae score``): an
  ``"image"`` layer, multiscale from the pyramid levels, colormap ``"magma"``, contrast from the
  map, ``scale`` the pixel size in nanometers (1 for axes without one), as the source had it;
- ``OUT.zarr/probabilities``: one ``"image"`` tuple with ``channel_axis=0``, which napari splits
  into one layer per class, named for the class, in its OMERO colour and visibility, contrast
  0-255 (p = value / 255);
- ``OUT.zarr/labels/<name>`` (NGFF image-labels: ``emae detect``'s detections), when present:
  ``"labels"`` layers, with each label's properties as features.

Arrays are opened lazily with emae's own readers (:func:`emae.io.ngff.open_zarr`,
:func:`emae.io.open_image`); nothing is read but a few sections of the coarsest level, for the
contrast.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from napari.utils.colormaps import Colormap

from emae.io import open_image
from emae.io.map_store import ANOMALY_KIND, LABELS, PROBABILITY_KIND, store_images
from emae.io.ngff import open_zarr
from emae.io.provenance import is_emae_image

LayerData = tuple[Any, dict[str, Any], str]
TIFF_SUFFIXES = (".tif", ".tiff")
#: Sections of the coarsest level read to set the anomaly map's contrast.
CONTRAST_SECTIONS = 8
#: Upper end of the anomaly map's contrast: this percentile of those sections.
CONTRAST_PERCENTILE = 99.9


def _attrs(path: Path) -> dict[str, Any]:
    """A zarr group's attributes, NGFF v0.5's ``"ome"`` ones lifted to the top; {} if none."""
    try:
        attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
    except (OSError, ValueError, TypeError, KeyError, zarr.errors.NodeNotFoundError):
        return {}
    ome = attrs.get("ome")
    return {**attrs, **ome} if isinstance(ome, dict) else attrs


def _marked_images(path: Path) -> dict[str, Path]:
    """The images of a map store that carry emae's mark; empty for anything else."""
    if not path.is_dir():
        return {}
    kinds = {"anomaly": ANOMALY_KIND, "probabilities": PROBABILITY_KIND}
    return {k: p for k, p in store_images(path).items() if is_emae_image(p, kinds[k])}


def _levels(path: Path) -> tuple[list[Any], tuple[float, ...]]:
    """The pyramid levels of an OME-Zarr image (lazy zarr arrays, level 0 first) and the
    level-0 scale of every axis, in nm where known, 1 where not."""
    n = len(_attrs(path)["multiscales"][0]["datasets"])
    levels = [open_zarr(path, scale=k) for k in range(n)]
    array, _, sizes = levels[0]
    scale = tuple(1.0 if s is None else float(s) for s in sizes or [None] * array.ndim)
    return [array for array, _, _ in levels], scale


def _spatial(scale: tuple[float, ...], ndim: int) -> tuple[float, ...]:
    return scale[-ndim:] if len(scale) >= ndim else (1.0,) * ndim


def contrast_limits(array: Any) -> list[float]:
    """Contrast of an anomaly map: ``[min, 99.9th percentile]`` of its finite values.

    ``array`` is ``"YX"`` or ``"ZYX"``; of a stack, up to :data:`CONTRAST_SECTIONS` evenly
    spaced sections are read.
    """
    if array.ndim == 2:
        sample = np.asarray(array[...])
    else:
        n = array.shape[0]
        picks = np.unique(np.linspace(0, n - 1, min(n, CONTRAST_SECTIONS)).round().astype(int))
        sample = np.stack([np.asarray(array[int(z)]) for z in picks])
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return [0.0, 1.0]
    low, high = float(sample.min()), float(np.percentile(sample, CONTRAST_PERCENTILE))
    return [low, high if high > low else low + 1.0]


def _image_layer(levels: list[Any], scale: tuple[float, ...], name: str) -> LayerData:
    kwargs = {
        "name": name,
        "scale": _spatial(scale, levels[0].ndim),
        "colormap": "magma",
        "contrast_limits": contrast_limits(levels[-1]),
        "multiscale": len(levels) > 1,
        "metadata": {"emae": {"kind": ANOMALY_KIND}},
    }
    return (levels if len(levels) > 1 else levels[0]), kwargs, "image"


def _anomaly_zarr(path: Path, name: str) -> LayerData:
    levels, scale = _levels(path)
    return _image_layer(levels, scale, name)


def _anomaly_tiff(path: Path) -> LayerData:
    image = open_image(path)
    scale = tuple(1.0 if s is None else float(s) for s in image.pixel_size or (None,) * image.ndim)
    return _image_layer([image.data], scale, f"anomaly ({path.name})")


def _colormap(colour: str, name: str) -> Colormap:
    """Black to the OMERO colour ``colour`` (hex RGB)."""
    rgb = [int(colour[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    return Colormap([[0.0, 0.0, 0.0, 1.0], [*rgb, 1.0]], name=f"emae {name}")


def _probabilities(path: Path) -> LayerData:
    """One tuple with ``channel_axis=0``; every per-channel value is a list, one per class."""
    levels, scale = _levels(path)
    attrs = _attrs(path)
    channels = attrs["omero"]["channels"]
    n = len(channels)
    spatial = _spatial(scale, levels[0].ndim - 1)
    kwargs = {
        "channel_axis": 0,
        "name": [c["label"] for c in channels],
        "colormap": [_colormap(c.get("color", "FFFFFF"), c["label"]) for c in channels],
        "visible": [bool(c.get("active", True)) for c in channels],
        "contrast_limits": [[0, 255]] * n,
        "scale": [spatial] * n,
        "blending": "additive",
        "multiscale": len(levels) > 1,
        "metadata": [{"emae": attrs.get("emae", {})}] * n,
    }
    return (levels if len(levels) > 1 else levels[0]), kwargs, "image"


def _labels(store: Path, map_scale: tuple[float, ...] | None) -> list[LayerData]:
    """The NGFF image-labels listed in ``store/labels/.zattrs``, named ``"<name> regions"``,
    with their ``properties`` (e.g. each detection's class, area and peak) as layer features.

    Labels without a pixel size (as ome-zarr-py writes them by default) take ``map_scale``, the
    spatial scale of the store's image they label.
    """
    layers = []
    for name in _attrs(store / LABELS).get("labels", []):
        path = store / LABELS / name
        levels, scale = _levels(path)
        scale = _spatial(scale, levels[0].ndim)
        if map_scale and len(map_scale) == len(scale) and open_zarr(path)[2] is None:
            scale = map_scale
        kwargs: dict[str, Any] = {
            "name": f"{name} regions",
            "scale": scale,
            "multiscale": len(levels) > 1,
        }
        label = _attrs(path).get("image-label", {})
        properties = [p for p in label.get("properties", []) if "label-value" in p]
        if properties:
            columns = dict.fromkeys(k for p in properties for k in p if k != "label-value")
            kwargs["features"] = {
                "index": [int(p["label-value"]) for p in properties],
                **{c: [p.get(c) for p in properties] for c in columns},
            }
        colours = label.get("colors", [])
        if colours:
            kwargs["colormap"] = {  # labels without a colour are transparent
                None: np.zeros(4),
                **{
                    int(c["label-value"]): np.asarray(c["rgba"], dtype=float) / 255
                    for c in colours
                    if "label-value" in c and "rgba" in c
                },
            }
        layers.append(((levels if len(levels) > 1 else levels[0]), kwargs, "labels"))
    return layers


def read_outputs(path: str | list[str]) -> list[LayerData]:
    """The layers of an emae map store or score TIFF map (see the module docstring).

    Parameters
    ----------
    path
        ``OUT.zarr`` written by ``emae detect`` or ``emae score``, or a ``*.tif`` map of
        ``emae score``; a one-element list as napari may pass it.

    Returns
    -------
    list of (data, kwargs, layer_type)
        The anomaly map, the class probabilities and the labels, those present, in that order.
    """
    path = Path(path[0] if isinstance(path, list) else path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        return [_anomaly_tiff(path)]
    images = _marked_images(path)
    layers = []
    if "anomaly" in images:
        layers.append(_anomaly_zarr(images["anomaly"], f"anomaly ({path.name})"))
    if "probabilities" in images:
        layers.append(_probabilities(images["probabilities"]))
    map_scale = layers[0][1]["scale"] if layers else None
    map_scale = map_scale[0] if isinstance(map_scale, list) else map_scale
    return layers + _labels(path, map_scale)


def napari_get_reader(path: str | list[str]) -> Callable[..., list[LayerData]] | None:
    """napari's reader hook: :func:`read_outputs` for emae outputs, None for any other path."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        return read_outputs if path.is_file() and is_emae_image(path, ANOMALY_KIND) else None
    return read_outputs if _marked_images(path) else None
