"""Benchmark: the cost of each vector of ``emae embed`` (levels, latent, code, residual).

With an autoencoder folder (``--model``) and an image or volume (``--input``), ``emae embed
--stride S`` in this process once per vector, the vectors alternating in ``--rounds`` rounds
(best of each): patches per second, with the model's anomaly score per patch as by default (or
without it, ``--no-anomaly``), at the default precision (``auto``). Prints one JSON line per run
and writes them all to ``WORK/vectors.json``.

Usage::

    python bench/bench_embed_vectors.py --model runs/ae --input DATA/unlabeled/volume.tif \\
        [--vectors levels,latent,code,residual] [--stride 32] [--rounds 2] [--no-anomaly]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from bench_latent import cpu_flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--vectors", default="levels,latent,code,residual")
    parser.add_argument("--stride", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-anomaly", action="store_true")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_embed_vectors"))
    args = parser.parse_args()

    from emae.commands.embed import embed

    args.work.mkdir(parents=True, exist_ok=True)
    runs = []
    for round_ in range(args.rounds):
        for vector in args.vectors.split(","):
            out = args.work / f"{vector}.parquet"
            began = time.perf_counter()
            summary = embed(
                args.model, [args.input], out, stride=args.stride, vector=vector,
                anomaly=not args.no_anomaly, overwrite=True, progress=False,
            )  # fmt: skip
            seconds = time.perf_counter() - began
            run = {
                "round": round_,
                "vector": vector,
                "rows": summary["rows"],
                "dims": summary["dims"],
                "seconds": round(seconds, 2),
                "patches_per_s": round(summary["rows"] / seconds, 1),
            }
            print(json.dumps(run), flush=True)
            runs.append(run)
    best = {
        v: max(r["patches_per_s"] for r in runs if r["vector"] == v)
        for v in args.vectors.split(",")
    }
    record = {
        "machine": platform.processor() or platform.machine(),
        "cpu_flags": cpu_flags(),
        "torch_threads": torch.get_num_threads(),
        "anomaly": not args.no_anomaly,
        "runs": runs,
        "best_patches_per_s": best,
    }
    print(json.dumps({"best_patches_per_s": best}), flush=True)
    (args.work / "vectors.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
