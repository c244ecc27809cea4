"""PyTorch datasets of 2D patches read lazily from many images.

Both datasets are map-style and hold only paths and plans, so they pickle cheaply into
``DataLoader`` worker processes; each process opens an image the first time it needs it and
keeps it open (a process started by ``fork`` reopens its images rather than sharing handles).

- :class:`PatchDataset` reads a fixed list of :class:`~emae.data.patches.PatchLocation`.
- :class:`RandomPatchDataset` is a stream of random patches counted in samples seen rather than
  epochs: item ``i`` is sample ``i`` of :func:`~emae.data.sampling.sample_patches` for the seed, so
  it does not depend on workers, batch size or shuffling, and training resumes at item ``k``
  exactly.

Items are ``torch.float32`` tensors of shape ``(1, patch_size, patch_size)``: the patch after the
optional ``transform`` (an ``(H, W)`` array to a float32 ``(H, W)`` array, e.g. a normalizer),
or simply cast to float32 without scaling when there is none.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from emae.data.patches import PatchLocation, read_patches
from emae.data.sampling import PatchSampler, draw_patches
from emae.data.validity import PatchCheck, not_empty
from emae.errors import EmaeError
from emae.io.image import Image

Source = str | os.PathLike | Image
Transform = Callable[[np.ndarray], np.ndarray]


class _LazyImages(Sequence):
    """Paths that open as :class:`Image` on first access, once per process.

    Entries that are not paths (an :class:`Image`, an array, None) are returned as they are.
    """

    def __init__(self, sources: Sequence[Any], scale: int) -> None:
        self.sources, self.scale = list(sources), scale
        self._opened: dict[int, Any] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> Any:  # type: ignore[override]
        if self._pid != os.getpid():
            self._opened, self._pid = {}, os.getpid()
        if i not in self._opened:
            source = self.sources[i]
            if isinstance(source, (str, os.PathLike)):
                from emae.io.readers import open_image

                source = open_image(os.fspath(source), scale=self.scale)
            self._opened[i] = source
        return self._opened[i]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_opened": {}}


def _to_tensor(patch: np.ndarray, transform: Transform | None) -> torch.Tensor:
    out = patch if transform is None else transform(patch)
    out = np.ascontiguousarray(out, dtype=np.float32)
    if out.shape != patch.shape:
        raise EmaeError(f"transform must return an array of shape {patch.shape}, got {out.shape}")
    return torch.from_numpy(out[None])


class PatchDataset(Dataset):
    """Patches at planned locations, e.g. from :func:`~emae.data.sampling.grid_locations`.

    Parameters
    ----------
    sources
        Image paths (anything :func:`~emae.io.readers.open_image` reads) or open images; an open
        :class:`Image` must pickle to be used with worker processes.
    locations
        Top-left corners; ``source_index`` refers to ``sources``.
    patch_size
        Side of the square patches, in pixels.
    transform
        ``(H, W)`` array to float32 ``(H, W)`` array; it must pickle for worker processes.
    scale
        Pyramid level to read from multiscale sources.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        locations: Sequence[PatchLocation],
        patch_size: int,
        *,
        transform: Transform | None = None,
        scale: int = 0,
    ) -> None:
        self.locations = [PatchLocation(*loc) for loc in locations]
        bad = [loc for loc in self.locations if not 0 <= loc.source_index < len(sources)]
        if bad:
            raise EmaeError(
                f"location {bad[0]} names source {bad[0].source_index}, but there are "
                f"{len(sources)} sources"
            )
        self.images = _LazyImages(sources, scale)
        self.patch_size, self.transform = patch_size, transform

    def __len__(self) -> int:
        return len(self.locations)

    def __getitem__(self, index: int) -> torch.Tensor:
        """Patch ``index`` as a float32 tensor of shape ``(1, patch_size, patch_size)``."""
        patch = read_patches(self.images, [self.locations[index]], self.patch_size)[0]
        return _to_tensor(patch, self.transform)


class RandomPatchDataset(Dataset):
    """``n_patches`` random patches; item ``i`` is always the same patch for the same seed.

    Parameters
    ----------
    sources
        Image paths or open images, as for :class:`PatchDataset`.
    patch_size
        Side of the square patches, in pixels.
    n_patches
        Length of the dataset: the number of patches seen in training.
    seed
        Seed; item ``i`` equals sample ``i`` of :func:`~emae.data.sampling.sample_patches`.
    masks
        One validity mask or None per source: a path (opened at full resolution), an array or an
        :class:`Image` (nonzero = valid, possibly downsampled; see :mod:`emae.data.validity`).
    min_valid_fraction
        Smallest fraction of a patch's pixels that its mask must mark valid.
    is_valid
        Check on the raw patch pixels; the default rejects padding. Must pickle for workers.
    transform
        ``(H, W)`` array to float32 ``(H, W)`` array; it must pickle for worker processes.
    scale
        Pyramid level to read from multiscale sources.

    Notes
    -----
    All sources are opened once when the dataset is built, to check that patches fit and the
    masks match; the open handles are not passed on to worker processes.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        patch_size: int,
        n_patches: int,
        *,
        seed: int,
        masks: Sequence[Any] | None = None,
        min_valid_fraction: float = 1.0,
        is_valid: PatchCheck | None = not_empty,
        transform: Transform | None = None,
        scale: int = 0,
    ) -> None:
        if not isinstance(n_patches, (int, np.integer)) or n_patches < 0:
            raise EmaeError(f"n_patches must be a non-negative integer, got {n_patches!r}")
        self.images = _LazyImages(sources, scale)
        self.masks = None if masks is None else _LazyImages(masks, 0)
        self.patch_size, self.n_patches, self.seed = patch_size, int(n_patches), seed
        self.min_valid_fraction, self.is_valid = min_valid_fraction, is_valid
        self.transform = transform
        self._built: tuple[int, PatchSampler] | None = None
        self._sample(0, 0)  # check sources, masks and arguments here rather than in a worker

    def __len__(self) -> int:
        return self.n_patches

    def _sampler(self) -> PatchSampler:
        """The sampler over this process's images, built once per process."""
        if self._built is None or self._built[0] != os.getpid():
            sampler = PatchSampler(
                self.images, self.patch_size, self.masks, self.min_valid_fraction, self.is_valid
            )
            self._built = (os.getpid(), sampler)
        return self._built[1]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_built": None}

    def _sample(self, index: int, n: int = 1) -> tuple[list[PatchLocation], np.ndarray]:
        if n and not 0 <= index < self.n_patches:
            raise IndexError(f"index {index} out of range for {self.n_patches} patches")
        return draw_patches(self._sampler(), n, seed=self.seed, start=index)

    def location(self, index: int) -> PatchLocation:
        """Where item ``index`` comes from."""
        return self._sample(index)[0][0]

    def __getitem__(self, index: int) -> torch.Tensor:
        """Patch ``index`` as a float32 tensor of shape ``(1, patch_size, patch_size)``."""
        return _to_tensor(self._sample(index)[1][0], self.transform)
