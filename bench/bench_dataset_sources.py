"""Cost of one training item when patches are drawn from many source files.

Compares, in one run, :class:`emae.data.dataset.RandomPatchDataset` (the sampler over all sources is
built once per process) with calling :func:`emae.data.sampling.sample_patches` for each item (the
sampler rebuilt every time), for the same items.

    python bench/bench_dataset_sources.py [--sources 2000] [--items 256] [--dir TMP]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from emae.data.dataset import RandomPatchDataset
from emae.data.sampling import sample_patches
from emae.io import open_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=2000, help="number of .npy images")
    parser.add_argument("--size", type=int, default=128, help="side of each image")
    parser.add_argument("--patch", type=int, default=64, help="patch side")
    parser.add_argument("--items", type=int, default=256, help="items drawn")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the images")
    args = parser.parse_args()

    folder = args.dir or Path(tempfile.mkdtemp(prefix="emae-bench-sources-"))
    rng = np.random.default_rng(0)
    paths = []
    for i in range(args.sources):
        path = folder / f"{i:06d}.npy"
        if not path.exists():
            np.save(path, rng.integers(1, 255, (args.size, args.size), dtype=np.uint8))
        paths.append(str(path))

    dataset = RandomPatchDataset(paths, args.patch, args.items, seed=0)
    start = time.perf_counter()
    ours = [dataset[i] for i in range(args.items)]
    t_ours = (time.perf_counter() - start) / args.items

    images = [open_image(p) for p in paths]
    start = time.perf_counter()
    reference = [
        sample_patches(images, 1, args.patch, seed=0, start=i)[1][0] for i in range(args.items)
    ]
    t_ref = (time.perf_counter() - start) / args.items
    assert all(np.array_equal(a[0].numpy(), b) for a, b in zip(ours, reference, strict=True))

    print(f"sources        {args.sources} images of {args.size}x{args.size}, patch {args.patch}")
    print(f"dataset item   {t_ours * 1e3:.3f} ms (sampler built once per process)")
    print(f"rebuilt/item   {t_ref * 1e3:.3f} ms (sample_patches per item)")
    print(f"ratio          {t_ref / t_ours:.1f}x")


if __name__ == "__main__":
    main()
