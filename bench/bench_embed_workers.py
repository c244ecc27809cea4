"""Benchmark: ``emae embed`` in one process against its parts on Dask workers.

With an autoencoder folder (``--model``) and an image or volume (``--input``, e.g. the sample
data's ``unlabeled/volume.tif``), runs ``emae embed --stride S`` as a command, each in its own
process, in ``--rounds`` alternating rounds: in the starting process (torch on all cores), on
one local worker, and on two local workers of one torch thread each. Prints the wall time, the
patches per second (the command's own figure, which counts the cluster's start) and the start-up,
and checks that every configuration wrote the same vectors (within float rounding).

Usage::

    python bench/bench_embed_workers.py --model runs/ae --input DATA/unlabeled/volume.tif \\
        [--stride 32] [--rounds 2] [--precision fp32] [--work runs/bench_embed_workers]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

CONFIGS = {
    "one process": [],
    "1 worker x 1 thread": ["--workers", "1", "--threads", "1"],
    "2 workers x 1 thread": ["--workers", "2", "--threads", "1"],
}


def run(args: argparse.Namespace, name: str, flags: list[str]) -> dict[str, Any]:
    out = args.work / (name.replace(" ", "-") + ".parquet")
    command = [sys.executable, "-m", "emae", "embed", str(args.model), str(args.input)]
    command += ["--out", str(out), "--stride", str(args.stride), "--precision", args.precision]
    command += ["--overwrite", "-q", *flags]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    summary = json.loads((out / "_emae_done.json").read_text())
    return {
        "wall_s": round(wall, 1),
        "seconds": summary["seconds"],
        "startup_s": summary["startup_seconds"],
        "rows": summary["rows"],
        "patches_per_s": summary["patches_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--stride", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="fp32", help="Of every configuration.")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_embed_workers"))
    args = parser.parse_args()
    from emae.io.embedding import read_embedding

    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for r in range(args.rounds):
        for name, flags in CONFIGS.items():
            figures = run(args, name, flags)
            best = results.setdefault(name, figures)
            if figures["wall_s"] < best["wall_s"]:
                results[name] = figures
            print(r, name, json.dumps(figures), flush=True)
    reference = read_embedding(args.work / "one-process.parquet")[1]
    for name in CONFIGS:
        vectors = read_embedding(args.work / (name.replace(" ", "-") + ".parquet"))[1]
        results[name]["largest_difference"] = float(np.abs(vectors - reference).max())
    base = results["1 worker x 1 thread"]["wall_s"]
    results["2 workers over 1, wall"] = round(base / results["2 workers x 1 thread"]["wall_s"], 2)
    (args.work / "embed-workers.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
