"""Benchmark: ``emae embed`` in fp32 against bf16 autocast: speed, vectors, and the map's clusters.

With an autoencoder folder (``--model``) and the sample data (``--data``, from ``emae
sample-data``), in one run:

1. ``speed``: ``emae embed --stride S`` of the unlabeled volume in this process, fp32 and
   ``--precision`` alternating in ``--rounds`` rounds (best of each): patches per second;
2. ``vectors``: the largest difference between the two embeddings' vectors, relative to the
   vectors' spread, and the anomaly column's rank correlation;
3. ``clusters``: the labeled patches (``labels.csv``, 11 classes) embedded in each precision, a
   map fitted on each (``emae map`` defaults, seeded): NMI and ARI of its clusters against the
   labels the map never saw, and the ARI between the two maps' clusters, beside the ARI between
   two fp32 maps that differ only in their seed (how much the clusters move anyway).

Usage::

    python bench/bench_embed_precision.py --model runs/ae --data runs/sample-data \\
        [--precision auto] [--stride 32] [--rounds 2] [--work runs/bench_embed_precision]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--stride", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_embed_precision"))
    args = parser.parse_args()
    import pandas as pd
    from scipy.stats import spearmanr
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from emae.commands.embed import embed
    from emae.commands.latent_map import fit_map
    from emae.io.embedding import read_embedding

    args.work.mkdir(parents=True, exist_ok=True)
    volume = args.data / "unlabeled" / "volume.tif"
    precisions = ("fp32", args.precision)
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    speed: dict[str, float] = {}
    for _ in range(args.rounds):
        for p in precisions:
            out = args.work / f"grid-{p}.parquet"
            summary = embed(
                args.model, [volume], out, stride=args.stride, precision=p, overwrite=True,
                progress=False,
            )  # fmt: skip
            speed[p] = max(speed.get(p, 0.0), summary["patches_per_s"])
            print("speed", p, summary["patches_per_s"], flush=True)
    results["speed"] = {"rows": summary["rows"], "patches_per_s": speed}
    results["speed"]["speedup"] = round(speed[args.precision] / speed["fp32"], 2)
    (a, va), (b, vb) = (read_embedding(args.work / f"grid-{p}.parquet") for p in precisions)
    spread = float(np.percentile(va, 99) - np.percentile(va, 1))
    results["vectors"] = {
        "largest_difference": float(np.abs(va - vb).max()),
        "largest_over_spread": float(np.abs(va - vb).max() / spread),
        "median_relative": float(np.median(np.abs(va - vb) / (np.abs(va) + 1e-6))),
        "anomaly_spearman": float(spearmanr(a.anomaly, b.anomaly).statistic),
    }
    print("vectors", json.dumps(results["vectors"]), flush=True)
    clusters = {}
    for p in precisions:
        emb, folder = args.work / f"labels-{p}.parquet", args.work / f"map-{p}"
        embed(args.model, [], emb, labels=args.data / "labels.csv", precision=p, overwrite=True,
              progress=False)  # fmt: skip
        fit_map(emb, folder, overwrite=True)
        points = pd.read_parquet(folder / "points.parquet")
        clusters[p] = points.cluster.to_numpy()
        results.setdefault("clusters", {})[p] = {
            "nmi": round(float(normalized_mutual_info_score(points.label, clusters[p])), 4),
            "ari": round(float(adjusted_rand_score(points.label, clusters[p])), 4),
            "clusters": len(set(clusters[p]) - {-1}),
        }
    results["clusters"]["ari_between"] = round(
        float(adjusted_rand_score(clusters["fp32"], clusters[args.precision])), 4
    )
    # the reference: how much the same fp32 vectors' clusters move with the map's seed alone
    fit_map(args.work / "labels-fp32.parquet", args.work / "map-fp32-seed1", overwrite=True, seed=1)
    seed1 = pd.read_parquet(args.work / "map-fp32-seed1" / "points.parquet").cluster.to_numpy()
    results["clusters"]["ari_between_fp32_seeds"] = round(
        float(adjusted_rand_score(clusters["fp32"], seed1)), 4
    )
    print("clusters", json.dumps(results["clusters"]), flush=True)
    (args.work / "embed-precision.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
