"""Patch datasets: item content, worker processes and resumable random streams."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import tifffile
import torch
import zarr
from torch.utils.data import DataLoader

from emae.data.dataset import PatchDataset, RandomPatchDataset
from emae.data.sampling import grid_locations, random_locations, sample_patches
from emae.errors import EmaeError
from emae.io.readers import open_image


def _scale(patch: np.ndarray) -> np.ndarray:
    return (patch / 255.0).astype(np.float32)


@pytest.fixture
def sources(tmp_path) -> tuple[list[str], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    stack = rng.integers(1, 255, (3, 96, 80), dtype=np.uint8)
    plane = rng.integers(1, 255, (70, 90), dtype=np.uint8)
    array = zarr.create_array(
        tmp_path / "s.zarr", shape=stack.shape, chunks=(1, 32, 32), dtype="u1"
    )
    array[:] = stack
    tifffile.imwrite(tmp_path / "p.tif", plane, tile=(32, 32), compression="zlib")
    return [str(tmp_path / "s.zarr"), str(tmp_path / "p.tif")], [stack, plane]


def _all(dataset, workers: int) -> torch.Tensor:
    return torch.cat(list(DataLoader(dataset, batch_size=7, num_workers=workers)))


def test_patch_dataset_items_match_the_pixels(sources):
    paths, arrays = sources
    locs = grid_locations(open_image(paths[1]), 32, stride=16, source_index=1)
    locs += grid_locations(open_image(paths[0]), 32, source_index=0)
    dataset = PatchDataset(paths, locs, 32)
    assert len(dataset) == len(locs)
    for i in (0, len(locs) - 1):
        item, (s, z, y, x) = dataset[i], locs[i]
        assert item.shape == (1, 32, 32) and item.dtype == torch.float32
        section = arrays[s] if arrays[s].ndim == 2 else arrays[s][z]
        np.testing.assert_array_equal(item[0].numpy(), section[y : y + 32, x : x + 32])


def test_two_workers_yield_what_one_process_yields(sources):
    paths, _ = sources
    locs = random_locations([open_image(p) for p in paths], 40, 24, seed=1)
    for dataset in (
        PatchDataset(paths, locs, 24, transform=_scale),
        RandomPatchDataset(paths, 24, 40, seed=5, transform=_scale),
    ):
        in_process = _all(dataset, 0)
        assert in_process.shape == (40, 1, 24, 24) and float(in_process.max()) <= 1.0
        assert torch.equal(_all(dataset, 2), in_process)


def test_random_items_are_the_seeded_samples_and_resume_exactly(sources):
    paths, _ = sources
    images = [open_image(p) for p in paths]
    dataset = RandomPatchDataset(paths, 16, 1000, seed=9)
    locs, patches = sample_patches(images, 12, 16, seed=9)
    assert [dataset.location(i) for i in range(12)] == locs
    np.testing.assert_array_equal(dataset[11][0].numpy(), patches[11])
    resumed = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(resumed[700], dataset[700])
    assert not torch.equal(RandomPatchDataset(paths, 16, 1000, seed=10)[700], dataset[700])
    with pytest.raises(IndexError):
        dataset[1000]


def test_dataset_errors_are_raised_early(sources):
    paths, _ = sources
    with pytest.raises(EmaeError, match="patch_size must be <= image size"):
        RandomPatchDataset(paths, 80, 10, seed=0)
    with pytest.raises(EmaeError, match="one mask"):
        RandomPatchDataset(paths, 16, 10, seed=0, masks=[None])
    with pytest.raises(EmaeError, match="names source 2, but there are 2 sources"):
        PatchDataset(paths, [(2, 0, 0, 0)], 16)
    with pytest.raises(EmaeError, match=r"transform must return an array of shape \(16, 16\)"):
        PatchDataset(paths, [(1, 0, 0, 0)], 16, transform=lambda p: p[:8])[0]


def test_masks_can_be_paths(sources, tmp_path):
    paths, _ = sources
    mask = np.zeros((35, 45), np.uint8)
    mask[:, 25:] = 1  # right part of the plane, at half resolution
    tifffile.imwrite(tmp_path / "mask.tif", mask)
    dataset = RandomPatchDataset(paths, 16, 30, seed=0, masks=[None, str(tmp_path / "mask.tif")])
    locs = [dataset.location(i) for i in range(30)]
    assert all(loc.x >= 50 for loc in locs if loc.source_index == 1)


def test_random_dataset_builds_its_sampler_once_and_pickles_without_it(tmp_path, monkeypatch):
    from emae.data import dataset as dataset_module

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.npy")
        np.save(paths[-1], np.random.default_rng(i).integers(1, 255, (40, 40), dtype=np.uint8))
    built = []
    original = dataset_module.PatchSampler

    def counting(*args, **kwargs):
        built.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(dataset_module, "PatchSampler", counting)
    ds = dataset_module.RandomPatchDataset([str(p) for p in paths], 16, 20, seed=1)
    items = [ds[i] for i in range(20)]
    assert len(built) == 1
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._built is None
    for i in (0, 7, 19):
        assert torch.equal(clone[i], items[i])
