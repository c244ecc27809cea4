"""Benchmark: sample random patches from a large chunked zarr without loading it.

Creates (or reuses) a ``size x size`` uint8 zarr v3 array filled chunk by chunk with smooth
texture and a band of zero padding, then, in a fresh subprocess, draws ``n`` patches with
:func:`emae.data.sampling.sample_patches` (default padding check) and reports peak resident memory,
wall time and patches per second next to the size of the full array.

Usage::

    python bench/bench_sampling.py [--size 20000] [--n 10000] [--patch 64] [--chunk 1024]
                                   [--dir TMP] [--seed 0]

Without ``--dir`` the array lives in a temporary folder that is removed afterwards; with it the
array is kept and reused by later runs with the same size and chunks.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PADDING_FRACTION = 0.05  # left band of zeros, like the padding of an aligned stack


def _max_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _chunk_pixels(y0: int, x0: int, shape: tuple[int, int], size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, y0, x0])
    y = np.arange(y0, y0 + shape[0], dtype=np.float32)[:, None]
    x = np.arange(x0, x0 + shape[1], dtype=np.float32)[None, :]
    smooth = 128 + 60 * np.sin(y / 97.0) * np.cos(x / 131.0)
    pixels = smooth + rng.integers(0, 30, shape, dtype=np.uint8)
    pixels[:, : max(0, int(PADDING_FRACTION * size) - x0)] = 0
    return np.clip(pixels, 1, 254).astype(np.uint8) * (pixels > 0)


def make_array(path: Path, size: int, chunk: int, seed: int) -> None:
    """Create the benchmark array at ``path`` unless a complete one with these settings exists."""
    import zarr

    if path.exists():
        array = zarr.open_array(path, mode="r")
        if (
            array.shape == (size, size)
            and array.chunks == (chunk, chunk)
            and array.attrs.get("complete")
        ):
            print(f"reusing {path}")
            return
        shutil.rmtree(path)
    start = time.perf_counter()
    array = zarr.create_array(path, shape=(size, size), chunks=(chunk, chunk), dtype="uint8")
    for y0 in range(0, size, chunk):
        for x0 in range(0, size, chunk):
            shape = (min(chunk, size - y0), min(chunk, size - x0))
            array[y0 : y0 + shape[0], x0 : x0 + shape[1]] = _chunk_pixels(y0, x0, shape, size, seed)
    array.attrs["complete"] = True
    print(f"created {path} in {time.perf_counter() - start:.1f} s")


def measure(path: str, n: int, patch: int, seed: int) -> dict[str, float]:
    """Sample ``n`` patches from ``path`` in this process; timings and peak memory."""
    from emae.data.sampling import random_locations, sample_patches
    from emae.io.readers import open_image

    baseline = _max_rss_bytes()
    image = open_image(path)
    start = time.perf_counter()
    random_locations([image], n, patch, seed=seed, is_valid=None)
    plan_s = time.perf_counter() - start
    start = time.perf_counter()
    locations, patches = sample_patches([image], n, patch, seed=seed)
    sample_s = time.perf_counter() - start
    assert patches.shape == (n, patch, patch) and len(locations) == n
    return {
        "baseline_rss": baseline,
        "peak_rss": _max_rss_bytes(),
        "plan_s": plan_s,
        "sample_s": sample_s,
        "patches_bytes": patches.nbytes,
        "array_bytes": image.shape[0] * image.shape[1] * image.dtype.itemsize,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000, help="Side of the square array.")
    parser.add_argument("--n", type=int, default=10000, help="Patches to sample.")
    parser.add_argument("--patch", type=int, default=64, help="Side of the patches.")
    parser.add_argument("--chunk", type=int, default=1024, help="Side of the zarr chunks.")
    parser.add_argument("--dir", type=Path, help="Keep (and reuse) the array in this folder.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the content and sampling.")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.n, args.patch, args.seed)))
        return
    folder = args.dir or Path(tempfile.mkdtemp(prefix="emae-bench-"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"bench_{args.size}_c{args.chunk}.zarr"
        make_array(path, args.size, args.chunk, args.seed)
        command = [sys.executable, str(Path(__file__).resolve()), "--measure", str(path)]
        command += ["--n", str(args.n), "--patch", str(args.patch), "--seed", str(args.seed)]
        result = subprocess.run(command, check=True, capture_output=True, text=True)
        r = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        if args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    mib = 2**20
    print(
        f"array          {args.size}x{args.size} uint8, chunks {args.chunk}: "
        f"{r['array_bytes'] / mib:.0f} MiB in full"
    )
    print(
        f"patches        {args.n} x {args.patch}x{args.patch}: {r['patches_bytes'] / mib:.0f} MiB"
    )
    print(f"baseline RSS   {r['baseline_rss'] / mib:.0f} MiB (after imports)")
    print(f"peak RSS       {r['peak_rss'] / mib:.0f} MiB")
    print(f"plan only      {r['plan_s']:.2f} s (locations, no pixel reads)")
    print(
        f"sample         {r['sample_s']:.2f} s, {args.n / r['sample_s']:.0f} patches/s "
        "(read + padding check)"
    )


if __name__ == "__main__":
    main()
