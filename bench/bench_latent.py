"""Benchmark: the latent map (emae embed + emae map) against UMAP + HDBSCAN on other features.

Parts (``--parts``, each writes ``WORK/<part>.json``):

``clusters``   Clustering quality against labels the clustering never saw: ARI and NMI over all
               rows (rows in no cluster count as one more cluster), purity of the clustered rows
               and their share. Three datasets: the 10,000 MNIST test digits, the 1,003
               nanofibre SEM images (3 classes, whole images at 64 x 64) and the labeled patches
               of the sample data (11 classes, 64 x 64). Methods, with the same UMAP
               (n_neighbors 15, min_dist 0, seed 0 or each of ``--seeds``) and HDBSCAN
               (min_cluster_size 1% of rows): ``emae-levels``, ``emae-latent``, ``emae-code``
               and ``emae-residual`` (emae's LatentMap, as shipped, on the four vectors of emae
               embed), and the peers ``pixels`` (UMAP on raw pixels scaled to 0..1),
               ``pca-pixels`` (UMAP on the first 50 principal components of the pixels) and
               ``handcrafted`` (UMAP on the standardized 74 features of the SVM baseline).
               Each also with k-means (k = the number of classes) on the same UMAP instead of
               HDBSCAN, which measures how well the map separates the classes without HDBSCAN's
               choice of how many clusters there are.
``novelty``    Maps fitted without one class, applied to data with it: AUROC of the novelty score
               for the held-out class and the share of it flagged at the map's own threshold,
               with the share of known rows flagged (the false-positive rate). MNIST: every digit
               held out in turn; fit on one half of the test digits, apply to the other half.
               Sample data: scratch and ring held out (fixed before any run); fit on the labeled
               patches of half the sections, apply to the other half. Every representation goes
               through the same LatentMap.
``fidelity``   Placement of new rows: a map fitted on 5,000 MNIST digits places the other
               5,000; compared with UMAP's own ``transform`` of the same fit (median distance as
               a share of the map's extent, and agreement of the cluster of the nearest fitted
               row) and with a refit on all 10,000 (share of each new row's 15 nearest fitted
               rows in the map that are also its 15 nearest in the refit; and the ARI between
               the clusters emae assigns the new rows and the refit's clusters of them).
``throughput`` emae embed on a generated uint8 volume of ``--volume-gb`` GB (the sample data's
               sections tiled), then emae map fitting 20,000 rows and placing all of them,
               then emae map --apply of the whole embedding as new data: patches per second and
               peak RSS of each command (in its own process).

Encoders are trained once into ``WORK`` with emae's defaults where a dataset allows them: MNIST
(28 x 28 digits, channels 32, 64; ``--mnist-steps``), nanofibre (the 64 x 64 whole images;
``--nanofiber-steps``), sample data (the unlabeled volume; ``--sample-steps``).

Usage::

    python bench/bench_latent.py [--data DATA] [--work runs/bench/latent] [--threads N]
        [--parts clusters,novelty,fidelity,throughput]
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WORK = REPO / "runs" / "bench" / "latent"
NOVEL_SAMPLE_CLASSES = ("scratch", "ring")
OFFSET = 1  # MNIST stored as uint16 pixel + 1, as in bench_fewlabel_mnist.py


def cpu_flags() -> list[str]:
    flags = open("/proc/cpuinfo").read().split()
    return sorted({f for f in flags if f in ("avx512f", "avx512_bf16", "amx_bf16", "avx2")})


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


# ---------------------------------------------------------------- data and encoders


def mnist(args: argparse.Namespace) -> dict[str, Any]:
    """MNIST test digits as a labels CSV over one .npy stack, and an encoder trained on the 60,000
    training digits (labels never read)."""
    from emae.commands.pretrain import pretrain
    from emae.folders.files import is_bundle
    from emae.train.config import PretrainConfig

    root = args.data / "mnist"
    work = args.work / "mnist"
    work.mkdir(parents=True, exist_ok=True)
    test = read_idx(root / "t10k-images-idx3-ubyte.gz")
    y = read_idx(root / "t10k-labels-idx1-ubyte.gz")
    stack = work / "test.npy"
    if not stack.is_file():
        np.save(stack, test.astype(np.uint16) + OFFSET)
    train = work / "train.npy"
    if not train.is_file():
        np.save(train, read_idx(root / "train-images-idx3-ubyte.gz").astype(np.uint16) + OFFSET)
    labels = work / "labels.csv"
    if not labels.is_file():
        rows = ["image,x,y,z,label"] + [f"test.npy,14,14,{i},{d}" for i, d in enumerate(y)]
        labels.write_text("\n".join(rows) + "\n")
    encoder = work / f"encoder-vec32-s{args.mnist_steps}"
    if not is_bundle(encoder):
        began = time.perf_counter()
        resume = (encoder.parent / (encoder.name + ".training")).exists()
        # 28 x 28 digits: a 2-level encoder (28 = 4 x 7), the channels of bench_fewlabel_mnist.py,
        # and a vector latent of 32 (digits are shapes: a compact code of the whole patch)
        config = PretrainConfig(
            patch_size=28, channels=(32, 64), steps=args.mnist_steps, batch_size=64,
            latent="vector", latent_dim=32,
        )  # fmt: skip
        pretrain([train], encoder, config, resume=resume)
        print(f"pretrained {encoder} in {time.perf_counter() - began:.0f} s", flush=True)
    return {"labels": labels, "encoder": encoder, "pixels": test, "y": y.astype(str)}


def nanofiber(args: argparse.Namespace) -> dict[str, Any]:
    from bench_fewlabel_nanofiber import whole_stack
    from emae.commands.pretrain import pretrain
    from emae.data.labels import load_labels
    from emae.folders.files import is_bundle
    from emae.train.config import PretrainConfig

    labels = args.data / "nanofiber_sem" / "labels.csv"
    work = args.work / "nanofiber"
    work.mkdir(parents=True, exist_ok=True)
    stack = whole_stack(labels, 64, work / "whole_64.npy")
    encoder = work / f"encoder-s{args.nanofiber_steps}"
    if not is_bundle(encoder):
        began = time.perf_counter()
        pretrain([stack], encoder, PretrainConfig(patch_size=64, steps=args.nanofiber_steps))
        print(f"pretrained {encoder} in {time.perf_counter() - began:.0f} s", flush=True)
    labeled = load_labels(labels, patch_size=64)
    pixels = np.load(stack)
    return {
        "labels": labels,
        "encoder": encoder,
        "pixels": pixels,
        "y": np.array([s.label for s in labeled.samples]),
        "input": "whole",
    }


def sample(args: argparse.Namespace) -> dict[str, Any]:
    from emae.commands.pretrain import pretrain
    from emae.data.labels import load_labels, read_labeled_patches
    from emae.folders.files import is_bundle
    from emae.synth.sample_data import SampleDataConfig, write_sample_data
    from emae.train.config import PretrainConfig

    data = args.work / "sample_data"
    if not (data / "labels.csv").is_file():
        write_sample_data(data, SampleDataConfig(seed=0))
    encoder = args.work / f"sample-encoder-s{args.sample_steps}"
    if not is_bundle(encoder):
        began = time.perf_counter()
        resume = (encoder.parent / (encoder.name + ".training")).exists()
        pretrain([data / "unlabeled" / "volume.tif"], encoder,
                 PretrainConfig(steps=args.sample_steps), resume=resume)  # fmt: skip
        print(f"pretrained {encoder} in {time.perf_counter() - began:.0f} s", flush=True)
    labeled = load_labels(data / "labels.csv", patch_size=64)
    pixels, _ = read_labeled_patches(labeled, 64)
    return {
        "labels": data / "labels.csv",
        "encoder": encoder,
        "pixels": pixels,
        "y": np.array([s.label for s in labeled.samples]),
        "groups": np.array([s.group for s in labeled.samples]),
        "data": data,
    }


def emae_vectors(ds: dict[str, Any], vector: str, work: Path) -> np.ndarray:
    """emae embed of the labels CSV (rows in CSV order)."""
    from emae.commands.embed import embed
    from emae.io.embedding import read_embedding

    work.mkdir(parents=True, exist_ok=True)
    out = work / f"embedding-{vector}-{Path(ds['encoder']).name}.parquet"
    embed(ds["encoder"], [], out, labels=ds["labels"], vector=vector,
          input=ds.get("input", "surrounding"), anomaly=False, progress=False)  # fmt: skip
    frame, vectors = read_embedding(out)
    assert list(frame.label) == list(ds["y"]), "embedding rows out of CSV order"
    return vectors


def peer_features(ds: dict[str, Any], name: str) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from emae.classify.features import handcrafted_features

    pixels = np.asarray(ds["pixels"], dtype=np.float64)
    flat = pixels.reshape(len(pixels), -1)
    flat = (flat - flat.min()) / max(np.ptp(flat), 1e-12)
    if name == "pixels":
        return flat.astype(np.float32)
    if name == "pca-pixels":
        return PCA(50, random_state=0).fit_transform(flat).astype(np.float32)
    unit = pixels.reshape(pixels.shape)
    unit = (unit - unit.min()) / max(np.ptp(unit), 1e-12)
    return StandardScaler().fit_transform(handcrafted_features(unit)).astype(np.float32)


# ---------------------------------------------------------------- metrics


def umap_clusters(x: np.ndarray, k: int | None = None, seed: int = 0) -> np.ndarray:
    """The peers' pipeline: UMAP (15 neighbours, min_dist 0) then HDBSCAN (1% of rows,
    min_samples 10), the settings of emae's LatentMap; or k-means with ``k`` clusters."""
    import umap
    from sklearn.cluster import HDBSCAN, KMeans

    coords = umap.UMAP(n_neighbors=15, min_dist=0.0, random_state=seed, n_jobs=1).fit_transform(x)
    if k is not None:
        return KMeans(k, n_init=10, random_state=seed).fit_predict(coords)
    size = max(5, round(0.01 * len(x)))
    return HDBSCAN(min_cluster_size=size, min_samples=10, copy=True).fit_predict(coords)


def cluster_scores(y: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    clustered = clusters >= 0
    purity = 0.0
    for c in np.unique(clusters[clustered]):
        _, counts = np.unique(y[clusters == c], return_counts=True)
        purity += counts.max()
    return {
        "ari": round(float(adjusted_rand_score(y, clusters)), 4),
        "nmi": round(float(normalized_mutual_info_score(y, clusters)), 4),
        "purity": round(float(purity / max(clustered.sum(), 1)), 4),
        "clustered_share": round(float(clustered.mean()), 4),
        "clusters": len(np.unique(clusters[clustered])),
    }


EMAE_VECTORS = ("levels", "latent", "code", "residual")


def representations(ds: dict[str, Any], work: Path) -> dict[str, np.ndarray]:
    reps = {f"emae-{v}": emae_vectors(ds, v, work) for v in EMAE_VECTORS}
    for name in ("pixels", "pca-pixels", "handcrafted"):
        reps[name] = peer_features(ds, name)
    return reps


# ---------------------------------------------------------------- parts


def part_clusters(args: argparse.Namespace, datasets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from emae.latent.map import LatentMap

    out: dict[str, Any] = {}
    for name, ds in datasets.items():
        reps = representations(ds, args.work / name)
        rows = {}
        k = len(set(ds["y"]))
        runs = [(m, x, None) for m, x in reps.items() if not m.startswith("emae")]
        for method, x in reps.items():
            if method.startswith("emae"):  # emae's LatentMap with both scalings
                runs += [(f"{method}/{scaling}", x, scaling) for scaling in ("column", "global")]
        for method, x, scaling in runs:
            for clusterer in ("hdbscan", "kmeans"):
                per_seed = {}
                for seed in args.seeds:
                    began = time.perf_counter()
                    if scaling is not None:
                        fitted = LatentMap(
                            scaling=scaling, clusterer=clusterer, n_clusters=k, seed=seed
                        )
                        clusters = fitted.fit(x).labels_
                    else:
                        clusters = umap_clusters(x, k if clusterer == "kmeans" else None, seed)
                    per_seed[seed] = {
                        **cluster_scores(ds["y"], clusters),
                        "seconds": round(time.perf_counter() - began, 1),
                    }
                key = f"{method} {clusterer}"
                rows[key] = {  # the first seed's figures, and every seed's
                    **per_seed[args.seeds[0]],
                    "dims": int(x.shape[1]),
                    "seeds": {str(seed): r for seed, r in per_seed.items()},
                }
                print(name, key, rows[key], flush=True)
        out[name] = {"rows": len(ds["y"]), "classes": len(set(ds["y"])), "methods": rows}
    return out


def _novelty_case(
    x: np.ndarray, fit_rows: np.ndarray, new_rows: np.ndarray, novel: np.ndarray
) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    from emae.latent.map import LatentMap

    fitted = LatentMap().fit(x[fit_rows])
    placed = fitted.place(x[new_rows])
    is_novel = novel[new_rows]
    threshold = np.quantile(placed["novelty"][~is_novel], 0.95)
    return {
        "auroc": float(roc_auc_score(is_novel, placed["novelty"])),
        "flagged": float(placed["novel"][is_novel].mean()),
        "known_flagged": float(placed["novel"][~is_novel].mean()),
        "flagged_at_5pct_fpr": float((placed["novelty"][is_novel] > threshold).mean()),
    }


def part_novelty(args: argparse.Namespace, datasets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "mnist" in datasets:
        ds = datasets["mnist"]
        reps = representations(ds, args.work / "mnist")
        half = np.random.default_rng(0).permutation(len(ds["y"])) < len(ds["y"]) // 2
        table: dict[str, Any] = {}
        for method, x in reps.items():
            cases = {}
            for digit in map(str, range(10)):
                novel = ds["y"] == digit
                fit_rows = np.flatnonzero(half & ~novel)
                cases[digit] = _novelty_case(x, fit_rows, np.flatnonzero(~half), novel)
            table[method] = {
                "per_digit_auroc": {d: round(c["auroc"], 4) for d, c in cases.items()},
                **{k: round(float(np.mean([c[k] for c in cases.values()])), 4)
                   for k in ("auroc", "flagged", "known_flagged", "flagged_at_5pct_fpr")},
            }  # fmt: skip
            print("mnist novelty", method, table[method], flush=True)
        out["mnist"] = table
    if "sample" in datasets:
        ds = datasets["sample"]
        reps = representations(ds, args.work / "sample")
        groups = np.unique(ds["groups"])
        first = np.isin(ds["groups"], groups[::2])
        novel = np.isin(ds["y"], NOVEL_SAMPLE_CLASSES)
        table = {}
        for method, x in reps.items():
            rows = np.flatnonzero(first & ~novel), np.flatnonzero(~first)
            case = _novelty_case(x, *rows, novel)
            table[method] = {k: round(v, 4) for k, v in case.items()}
            print("sample novelty", method, table[method], flush=True)
        out["sample"] = {"held_out": list(NOVEL_SAMPLE_CLASSES), "methods": table}
    return out


def part_fidelity(args: argparse.Namespace, datasets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    import umap
    from sklearn.cluster import HDBSCAN
    from sklearn.neighbors import NearestNeighbors

    from emae.latent.map import LatentMap

    ds = datasets["mnist"]
    x = emae_vectors(ds, "code", args.work / "mnist")
    order = np.random.default_rng(1).permutation(len(x))
    a, b = order[: len(x) // 2], order[len(x) // 2 :]
    fitted = LatentMap().fit(x[a])
    began = time.perf_counter()
    placed = fitted.place(x[b])
    place_seconds = time.perf_counter() - began
    # UMAP's own transform of the same fit (same data, parameters and seed as LatentMap.fit)
    own = umap.UMAP(n_neighbors=15, min_dist=0.0, random_state=0, n_jobs=1).fit(fitted.vectors_)
    same_fit = np.allclose(own.embedding_, fitted.embedding_, atol=1e-4)
    umap_placed = own.transform(fitted.reduce(x[b]))
    extent = float(np.ptp(fitted.embedding_, axis=0).max())
    nearest = NearestNeighbors(n_neighbors=1).fit(fitted.embedding_)
    umap_cluster = fitted.labels_[nearest.kneighbors(umap_placed)[1][:, 0]]
    emae_cluster = fitted.labels_[nearest.kneighbors(placed["coords"])[1][:, 0]]
    # a refit on all rows: neighbourhoods of the new rows among the fitted ones
    refit = umap.UMAP(n_neighbors=15, min_dist=0.0, random_state=0, n_jobs=1).fit_transform(
        fitted.reduce(x[np.concatenate([a, b])])
    )
    refit_a, refit_b = refit[: len(a)], refit[len(a) :]
    k = 15
    in_map = NearestNeighbors(n_neighbors=k).fit(fitted.embedding_).kneighbors(placed["coords"])[1]
    in_refit = NearestNeighbors(n_neighbors=k).fit(refit_a).kneighbors(refit_b)[1]
    in_umap = NearestNeighbors(n_neighbors=k).fit(fitted.embedding_).kneighbors(umap_placed)[1]
    recall = np.mean([len(set(p) & set(q)) / k for p, q in zip(in_map, in_refit, strict=True)])
    recall_umap = np.mean(
        [len(set(p) & set(q)) / k for p, q in zip(in_umap, in_refit, strict=True)]
    )
    refit_clusters = HDBSCAN(
        min_cluster_size=max(5, round(0.01 * len(refit))), min_samples=10, copy=True
    ).fit_predict(refit)
    new_refit = refit_clusters[len(a) :]
    median = float(np.median(np.linalg.norm(placed["coords"] - umap_placed, axis=1)))
    out = {
        "fitted_rows": len(a),
        "new_rows": len(b),
        "umap_refit_reproduces_fit": bool(same_fit),
        "median_distance_to_umap_transform_share_of_extent": round(median / extent, 4),
        "cluster_agreement_with_umap_transform": round(
            float((umap_cluster == emae_cluster).mean()), 4
        ),
        "knn15_recall_vs_refit_emae": round(float(recall), 4),
        "knn15_recall_vs_refit_umap_transform": round(float(recall_umap), 4),
        "ari_emae_clusters_vs_refit_clusters_new_rows": ari(new_refit, placed["cluster"]),
        "ari_new_rows_vs_digits_emae": ari(ds["y"][b], placed["cluster"]),
        "ari_new_rows_vs_digits_refit": ari(ds["y"][b], new_refit),
        "ari_fitted_rows_vs_digits": ari(ds["y"][a], fitted.labels_),
        "ari_new_rows_vs_digits_nearest_cluster_no_novelty": ari(ds["y"][b], emae_cluster),
        "novel_share_new_rows": round(float(placed["novel"].mean()), 4),
        "place_seconds": round(place_seconds, 3),
    }
    print("fidelity", out, flush=True)
    return out


def ari(a: np.ndarray, b: np.ndarray) -> float:
    from sklearn.metrics import adjusted_rand_score

    return round(float(adjusted_rand_score(a, b)), 4)


def part_throughput(
    args: argparse.Namespace, datasets: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    from bench_detect import _volume, run_sampled

    ds = datasets["sample"]
    side = 4096
    sections = max(1, round(args.volume_gb * 1e9 / side**2))
    volume = _volume(
        args.work / f"volume-{sections}x{side}.zarr", ds["data"], (sections, side, side), 1024
    )
    emae = [sys.executable, "-m", "emae"]
    out: dict[str, Any] = {
        "volume": [sections, side, side],
        "gigabytes": round(sections * side**2 / 1e9, 2),
    }
    emb = args.work / "volume-embedding.parquet"
    cases = {
        "embed": [*emae, "embed", str(ds["encoder"]), str(volume), "--out", str(emb),
                  "--stride", str(args.stride), "--overwrite", "-q"],
        "map": [*emae, "map", str(emb), "--out", str(args.work / "volume-map"),
                "--overwrite", "-q"],
        "apply": [*emae, "map", str(args.work / "volume-map"), "--apply", str(emb), "--out",
                  str(args.work / "volume-applied"), "--overwrite", "-q"],
    }  # fmt: skip
    for name, command in cases.items():
        began = time.perf_counter()
        result, peak = run_sampled(command)
        seconds = time.perf_counter() - began
        if result.returncode:
            raise SystemExit(f"{name} failed: {result.stderr[-2000:]}")
        out[name] = {"seconds": round(seconds, 1), "peak_rss_gb": round(peak / 1e9, 2),
                     "stdout": result.stdout.strip()}  # fmt: skip
        print(name, out[name], flush=True)
    done = json.loads((emb / "_emae_done.json").read_text())
    out["rows"] = done["rows"]
    out["embed"]["patches_per_s"] = round(done["rows"] / out["embed"]["seconds"], 1)
    out["apply"]["rows_per_s"] = round(done["rows"] / out["apply"]["seconds"], 1)
    return out


def tables(work: Path) -> None:
    """Print the markdown tables of docs/benchmarks.md from ``WORK/<part>.json``."""
    clusters = json.loads((work / "clusters.json").read_text())["results"]
    for name, ds in clusters.items():
        print(f"\n{name}: {ds['rows']} rows, {ds['classes']} classes\n")
        print("| features | clustering | ARI | NMI | purity | clustered | clusters |")
        print("|---|---|---|---|---|---|---|")
        for key, r in ds["methods"].items():
            method, clusterer = key.split(" ")
            seeds = list(r.get("seeds", {"": r}).values())

            def spread(name: str, fmt: str = ".3f", seeds: list[dict] = seeds) -> str:
                values = [s[name] for s in seeds]
                if len(values) == 1:
                    return format(values[0], fmt)
                low, high = format(min(values), fmt), format(max(values), fmt)
                return f"{np.mean(values):{fmt}} ({low}-{high})"

            cells = [method, clusterer, spread("ari"), spread("nmi"), spread("purity")]
            cells += [spread("clustered_share", ".1%"), spread("clusters", ".0f")]
            print("| " + " | ".join(cells) + " |")
    novelty = json.loads((work / "novelty.json").read_text())["results"]
    if "mnist" in novelty:
        print("\n| features | AUROC (mean of 10) | held-out flagged | known flagged | "
              "flagged at 5% FPR | worst digit |\n|---|---|---|---|---|---|")  # fmt: skip
        for method, r in novelty["mnist"].items():
            worst = min(r["per_digit_auroc"].items(), key=lambda kv: kv[1])
            print(f"| {method} | {r['auroc']:.3f} | {r['flagged']:.1%} | {r['known_flagged']:.1%}"
                  f" | {r['flagged_at_5pct_fpr']:.1%} | {worst[0]}: {worst[1]:.3f} |")  # fmt: skip
    if "sample" in novelty:
        print("\n| features | AUROC | held-out flagged | known flagged |\n|---|---|---|---|")
        for method, r in novelty["sample"]["methods"].items():
            print(
                f"| {method} | {r['auroc']:.3f} | {r['flagged']:.1%} | {r['known_flagged']:.1%} |"
            )
    for part in ("fidelity", "throughput"):
        if (work / f"{part}.json").is_file():
            print(
                f"\n{part}:",
                json.dumps(json.loads((work / f"{part}.json").read_text())["results"], indent=1),
            )


PARTS = {
    "clusters": part_clusters,
    "novelty": part_novelty,
    "fidelity": part_fidelity,
    "throughput": part_throughput,
}
NEEDS = {
    "clusters": ("mnist", "nanofiber", "sample"),
    "novelty": ("mnist", "sample"),
    "fidelity": ("mnist",),
    "throughput": ("sample",),
}
LOADERS = {"mnist": mnist, "nanofiber": nanofiber, "sample": sample}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("EMAE_DATA", REPO.parent / "shared" / "data")),
    )
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--parts", default="clusters,novelty,fidelity,throughput")
    parser.add_argument("--datasets", default="mnist,nanofiber,sample")
    parser.add_argument("--mnist-steps", type=int, default=3000)
    parser.add_argument("--nanofiber-steps", type=int, default=300)
    parser.add_argument("--sample-steps", type=int, default=2000)
    parser.add_argument("--volume-gb", type=float, default=1.0)
    parser.add_argument("--stride", type=int, default=96, help="Grid step of the throughput embed.")
    parser.add_argument(
        "--seeds", default="0", help="Map seeds of the clusters part (UMAP, k-means), e.g. 0,1,2."
    )
    parser.add_argument("--threads", type=int)
    parser.add_argument("--tables", action="store_true", help="Print the tables of WORK; no run.")
    args = parser.parse_args()
    args.seeds = [int(seed) for seed in args.seeds.split(",")]
    if args.tables:
        tables(args.work)
        return
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    wanted = args.datasets.split(",")
    info = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.date.today().isoformat(),
        "machine": platform.processor() or platform.machine(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    print(info, flush=True)
    datasets: dict[str, dict[str, Any]] = {}
    for part in args.parts.split(","):
        for name in NEEDS[part]:
            if name in wanted and name not in datasets:
                datasets[name] = LOADERS[name](args)
        began = time.perf_counter()
        result = PARTS[part](args, {k: v for k, v in datasets.items() if k in NEEDS[part]})
        record = {
            **info,
            "part": part,
            "seconds": round(time.perf_counter() - began, 1),
            "results": result,
        }
        (args.work / f"{part}.json").write_text(json.dumps(record, indent=2))
        print(f"wrote {args.work / f'{part}.json'}", flush=True)


if __name__ == "__main__":
    main()
