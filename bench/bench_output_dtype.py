"""Benchmark: what float32 anomaly maps cost against float16, in bytes and detect throughput.

emae writes anomaly maps as float32 because viewers (neuroglancer's zarr source, the Java
readers behind Fiji, BigDataViewer and MoBIE) do not read float16. This measures the price on
one volume: ``emae detect`` (one process, synchronous scheduler, ``--threads`` torch threads)
on a synthetic ``Z x SIDE x SIDE`` uint8 volume, with the anomaly map stored as float16 (the
former dtype) and as float32, in alternating rounds. Per dtype: the best and median seconds,
megapixels per second, the bytes of the store's level 0 and of the whole store, and the largest
difference between the two maps.

The model is the default ``conv-ae`` architecture trained for ``--steps`` steps on the volume:
the forward pass costs what the default model's does, whatever the training length.

Usage::

    python bench/bench_output_dtype.py [--volume 8 1024] [--rounds 3] [--work runs/bench_dtype]

Prints each figure as it is measured and a JSON summary (also written to WORK/dtype.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

import emae.io.map_store
import emae.volume.chunks
from emae.commands.detect import detect
from emae.commands.pretrain import pretrain
from emae.io import write_ome_zarr
from emae.synth.tissue import make_volume, to_uint8
from emae.train.config import PretrainConfig


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _run(model: Path, volume: Path, out: Path, dtype: Any, threads: int) -> float:
    emae.io.map_store.ANOMALY_DTYPE = dtype
    emae.volume.chunks.ANOMALY_DTYPE = dtype
    if out.exists():
        shutil.rmtree(out)
    began = time.perf_counter()
    detect(model, volume, out, scheduler="synchronous", threads=threads, progress=False)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volume", type=int, nargs=2, default=(8, 1024), metavar=("Z", "SIDE"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_dtype"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    z, side = args.volume
    volume = work / "volume.zarr"
    if not volume.exists():
        write_ome_zarr(volume, to_uint8(make_volume((z, side, side), seed=0)), axes="ZYX")
    model = work / "model"
    if not model.exists():
        pretrain([volume], model, PretrainConfig(steps=args.steps), progress=False)
    pixels = z * side * side
    times: dict[str, list[float]] = {"float16": [], "float32": []}
    for r in range(args.rounds):
        for name in times:
            seconds = _run(model, volume, work / f"{name}.zarr", np.dtype(name), args.threads)
            times[name].append(seconds)
            print(f"round {r}: {name} {seconds:.1f} s ({pixels / 1e6 / seconds:.2f} MP/s)")
    maps = {n: zarr.open_array(str(work / f"{n}.zarr" / "0"), mode="r")[:] for n in times}
    results: dict[str, Any] = {
        "volume": [z, side, side],
        "rounds": args.rounds,
        "threads": args.threads,
        "max_abs_difference": float(
            np.abs(maps["float16"].astype(np.float32) - maps["float32"]).max()
        ),
    }
    for name, seconds in times.items():
        store = work / f"{name}.zarr"
        results[name] = {
            "best_s": min(seconds),
            "median_s": statistics.median(seconds),
            "mp_per_s_best": pixels / 1e6 / min(seconds),
            "level0_bytes": _bytes(store / "0"),
            "store_bytes": _bytes(store),
        }
    f16, f32 = results["float16"], results["float32"]
    results["float32_over_float16"] = {
        "level0_bytes": f32["level0_bytes"] / f16["level0_bytes"],
        "store_bytes": f32["store_bytes"] / f16["store_bytes"],
        "best_s": f32["best_s"] / f16["best_s"],
        "median_s": f32["median_s"] / f16["median_s"],
    }
    print(json.dumps(results, indent=2))
    (work / "dtype.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
