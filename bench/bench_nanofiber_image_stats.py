"""Benchmark: image-level statistics for one-class anomaly on whole nanofibre micrographs.

Same folds, data and models as ``bench_nanofiber_oneclass.py`` (the 9 NonDefective source
groups in 3 folds; per fold the default autoencoder, 1,000 steps, trained on the NonDefective
images of the other groups; a seeded sample of 200 Slightly/Defective images beside the
held-out NonDefective ones), but only image-level statistics, each fitted on the training
images and scored as image AUROC of "any defect" against NonDefective:

- ``levels-gauss``: the encoder's ``"levels"`` vector of the whole image (mean and standard
  deviation of every level, :func:`emae.latent.vectors.patch_vectors`), squared Mahalanobis
  distance to a Ledoit-Wolf Gaussian of the training images' vectors (the statistic of
  ``bench_nanofiber_oneclass.py``);
- ``levels-knn``: the same vectors, mean squared distance to the 5 nearest training vectors
  (standardized per dimension);
- ``half-gauss`` / ``full+half-gauss``: the vector of the image at half resolution (2 x 2
  means), alone and concatenated with the full-resolution one;
- ``patch-gauss/mean``, ``/p90``: vectors of the 64-px patches of a grid, a Gaussian of the
  training patches, the mean or 90th percentile of the image's patch distances;
- ``patch-meanstd-gauss``: mean and standard deviation of the image's patch vectors, Gaussian;
- ``filterbank-gauss``: no autoencoder; mean and standard deviation over the image of each
  channel of :func:`emae.anomaly.filter_bank.filter_features` (ilastik's features at 5
  scales), Gaussian.

Usage::

    python bench/bench_nanofiber_image_stats.py [--data DATA]
        [--out runs/bench/nanofiber-oneclass] [--threads N]

Model folders ``fold{i}-conv-ae`` in ``--out`` are reused when present (trained otherwise).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from bench_nanofiber_oneclass import REPO, default_data, fold_split, gaussian_distance, load_folds
from emae.anomaly.filter_bank import filter_features
from emae.commands.pretrain import pretrain
from emae.folders.autoencoder import load_bundle
from emae.latent.vectors import patch_vectors
from emae.train.config import PretrainConfig

FOLDS, DEFECTS, STEPS, PATCH = 3, 200, 1000, 64


def knn(fit: np.ndarray, test: np.ndarray, k: int = 5) -> np.ndarray:
    """Mean squared distance to the ``k`` nearest ``fit`` rows, dimensions standardized."""
    mean, std = fit.mean(axis=0), fit.std(axis=0) + 1e-6
    index = NearestNeighbors(n_neighbors=k).fit((fit - mean) / std)
    distances, _ = index.kneighbors((test - mean) / std)
    return (distances**2).mean(axis=1)


def grid(images: np.ndarray, p: int = PATCH) -> np.ndarray:
    """``(N, H, W)`` -> ``(N, G, p, p)``: the non-overlapping ``p``-px patches of each image."""
    n, h, w = images.shape
    tiles = images[:, : h // p * p, : w // p * p].reshape(n, h // p, p, w // p, p)
    return tiles.transpose(0, 1, 3, 2, 4).reshape(n, -1, p, p)


def half(images: np.ndarray) -> np.ndarray:
    """2 x 2 means, float32."""
    n, h, w = images.shape
    x = images[:, : h // 2 * 2, : w // 2 * 2].astype(np.float32)
    return x.reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4))


def crop8(images: np.ndarray) -> np.ndarray:
    """Cropped to multiples of 8 pixels (the encoder's down-sampling)."""
    return images[:, : images.shape[1] // 8 * 8, : images.shape[2] // 8 * 8]


def filter_stats(normalizer, images: np.ndarray) -> np.ndarray:
    """Mean and standard deviation over each image of every filter-bank channel."""
    out = []
    for start in range(0, len(images), 8):
        x = torch.from_numpy(normalizer(images[start : start + 8]).astype(np.float32))
        f = filter_features(x)
        out.append(torch.cat([f.mean(dim=(2, 3)), f.std(dim=(2, 3))], dim=1).numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="Shared data folder.")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "nanofiber-oneclass")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root, rows, folds = load_folds(args.data, FOLDS)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[float]] = {}
    seconds = []
    for i, held in enumerate(folds):
        train, test, y = fold_split(root, rows, held, i, DEFECTS)
        folder = args.out / f"fold{i}-conv-ae"
        if not (folder / "config.json").exists():
            pretrain(train, folder, PretrainConfig(steps=STEPS), overwrite=True, progress=False)
        bundle = load_bundle(folder)
        began = time.perf_counter()
        fit_images = np.stack([np.asarray(PILImage.open(p)) for p in train])
        test_images = np.stack([np.asarray(PILImage.open(root / r["image"])) for r in test])

        def vectors(images: np.ndarray, bundle=bundle) -> np.ndarray:
            return patch_vectors(bundle.model, bundle.normalizer, images, batch_size=8)

        full_fit, full_test = vectors(crop8(fit_images)), vectors(crop8(test_images))
        half_fit, half_test = vectors(crop8(half(fit_images))), vectors(crop8(half(test_images)))
        patches_fit, patches_test = grid(fit_images), grid(test_images)
        g = patches_fit.shape[1]
        pv_fit = vectors(patches_fit.reshape(-1, PATCH, PATCH)).reshape(len(train), g, -1)
        pv_test = vectors(patches_test.reshape(-1, PATCH, PATCH)).reshape(len(test), g, -1)
        dim = pv_fit.shape[-1]
        patch_d = gaussian_distance(pv_fit.reshape(-1, dim), pv_test.reshape(-1, dim)).reshape(
            len(test), g
        )
        scores = {
            "levels-gauss": gaussian_distance(full_fit, full_test),
            "levels-knn": knn(full_fit, full_test),
            "half-gauss": gaussian_distance(half_fit, half_test),
            "full+half-gauss": gaussian_distance(
                np.hstack([full_fit, half_fit]), np.hstack([full_test, half_test])
            ),
            "patch-gauss/mean": patch_d.mean(axis=1),
            "patch-gauss/p90": np.quantile(patch_d, 0.9, axis=1),
            "patch-meanstd-gauss": gaussian_distance(
                np.hstack([pv_fit.mean(axis=1), pv_fit.std(axis=1)]),
                np.hstack([pv_test.mean(axis=1), pv_test.std(axis=1)]),
            ),
            "filterbank-gauss": gaussian_distance(
                filter_stats(bundle.normalizer, crop8(fit_images)),
                filter_stats(bundle.normalizer, crop8(test_images)),
            ),
        }
        for name, score in scores.items():
            results.setdefault(name, []).append(float(roc_auc_score(y, score)))
        seconds.append(time.perf_counter() - began)
        line = ", ".join(f"{k} {v[-1]:.3f}" for k, v in results.items())
        print(f"fold {i} ({seconds[-1]:.0f} s): {line}", flush=True)

    print("\n| statistic | " + " | ".join(f"fold {i}" for i in range(FOLDS)) + " | mean |")
    print("|---|" + "---|" * (FOLDS + 1))
    for name, values in results.items():
        print(
            f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {np.mean(values):.3f} |"
        )
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "folds": folds,
        "auroc": results,
        "seconds_per_fold": seconds,
    }
    path = args.out / "image_stats.json"
    path.write_text(json.dumps(record, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
