"""Benchmark: image-level one-class anomaly on the nanofibre SEM micrographs, by source group.

The nanofibre data (shared data, ``nanofiber_sem``) holds 1,003 images cut from 27 source
micrographs ("groups"), each group of one class: NonDefective (9 groups), SlightlyDefective and
Defective. Defects are beads along the fibres, a property of the whole image.

Protocol (group-aware, so no micrograph is both trained on and scored): the 9 NonDefective
groups are split into ``--folds`` folds. For each fold, the default autoencoder
(:class:`PretrainConfig` defaults, ``--steps``) is trained with
:func:`emae.commands.pretrain.pretrain` on the NonDefective images of the other groups; its
saved detector (the default score) then scores the held-out NonDefective images and every
Slightly/Defective image (or a seeded sample of ``--defects`` of them). Reported: the image
AUROC of "any defect" against NonDefective, for each reduction of the map (mean, p99, max).
Peers in the same run, fitted on the same training images: the local-statistics and the
filter-Gaussian baselines, and PCA (``--model pca``). One image-level statistic beside the maps,
``conv-ae/image-gaussian``: the trained encoder's ``"levels"`` vector of each whole image (mean
and standard deviation of every encoder level, :func:`emae.latent.vectors.patch_vectors`), its
squared Mahalanobis distance to a Gaussian (Ledoit-Wolf shrinkage) of the training images'
vectors.

Usage::

    python bench/bench_nanofiber_oneclass.py [--data DATA] [--out runs/bench/nanofiber-oneclass]
                                             [--folds 3] [--steps 1000] [--defects N]
                                             [--reuse] [--threads N]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage
from sklearn.metrics import roc_auc_score

from emae.anomaly.detector import AutoencoderDetector
from emae.anomaly.filter_gaussian import FilterGaussianDetector
from emae.anomaly.local_stats import LocalStatisticsDetector
from emae.anomaly.scores import REDUCTIONS, patch_scores
from emae.anomaly.statistics import shrunk_covariance
from emae.commands.pretrain import pretrain
from emae.data.sampling import sample_patches
from emae.folders.autoencoder import load_bundle
from emae.io import open_image
from emae.latent.vectors import patch_vectors
from emae.train.autoencoder import SCORING_SEED_OFFSET
from emae.train.config import PretrainConfig

REPO = Path(__file__).resolve().parents[1]


def default_data() -> Path:
    return Path(os.environ.get("EMAE_DATA", REPO.parent / "shared" / "data"))


def load_folds(data: Path, n_folds: int) -> tuple[Path, list[dict], list[list[str]]]:
    """The data folder, the rows of its labels CSV and the NonDefective groups in folds."""
    root = data / "nanofiber_sem"
    with (root / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    normal_groups = sorted({r["group"] for r in rows if r["label"] == "NonDefective"})
    return root, rows, [normal_groups[i::n_folds] for i in range(n_folds)]


def fold_split(
    root: Path, rows: list[dict], held: list[str], fold: int, defects: int | None
) -> tuple[list[Path], list[dict], np.ndarray]:
    """Training images (NonDefective, groups not ``held``), test rows (the held groups'
    NonDefective images, then every defect image or a sample of ``defects`` seeded by
    ``fold``) and the test labels, True for any defect."""
    normal = [r for r in rows if r["label"] == "NonDefective"]
    train = [root / r["image"] for r in normal if r["group"] not in held]
    bad = [r for r in rows if r["label"] != "NonDefective"]
    if defects is not None and defects < len(bad):
        pick = np.random.default_rng(fold).choice(len(bad), defects, replace=False)
        bad = [bad[j] for j in sorted(pick)]
    test = [r for r in normal if r["group"] in held] + bad
    return train, test, np.array([r["label"] != "NonDefective" for r in test])


def gaussian_distance(fit: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of ``test`` rows ``(M, D)`` to a Ledoit-Wolf Gaussian of
    ``fit`` rows ``(N, D)``: ``(M,)`` float64."""
    covariance, _ = shrunk_covariance(fit)
    d = test - fit.mean(axis=0)
    return np.einsum("nd,de,ne->n", d, np.linalg.inv(covariance), d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="Shared data folder.")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "nanofiber-oneclass")
    parser.add_argument("--folds", type=int, default=3, help="Folds of NonDefective groups.")
    parser.add_argument("--steps", type=int, default=1000, help="Training steps per fold.")
    parser.add_argument("--defects", type=int, default=None, help="Defect images per fold.")
    parser.add_argument("--reuse", action="store_true", help="Reuse existing model folders.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root, rows, folds = load_folds(args.data, args.folds)
    args.out.mkdir(parents=True, exist_ok=True)
    config = PretrainConfig(steps=args.steps)
    groups = sorted(g for fold in folds for g in fold)
    print(f"torch threads: {torch.get_num_threads()}; NonDefective groups: {groups}")

    results: dict[str, list[float]] = {}
    timings = []
    for i, held in enumerate(folds):
        train, test, y = fold_split(root, rows, held, i, args.defects)
        images = np.stack([np.asarray(PILImage.open(root / r["image"])) for r in test])
        began = time.perf_counter()
        detectors = {}
        for model in ("conv-ae", "pca"):
            folder = args.out / f"fold{i}-{model}"
            cfg = config if model == "conv-ae" else PretrainConfig(model="pca")
            if not (args.reuse and (folder / "config.json").exists()):
                pretrain(train, folder, cfg, overwrite=True, progress=False)
            detectors[model] = AutoencoderDetector.from_bundle(folder, batch_size=8)
        train_s = time.perf_counter() - began
        normalizer = load_bundle(args.out / f"fold{i}-conv-ae").normalizer
        _, patches = sample_patches(
            [open_image(str(p)) for p in train],
            config.score_patches,
            config.patch_size,
            seed=config.seed + SCORING_SEED_OFFSET,
        )
        detectors["local-stats"] = LocalStatisticsDetector(normalizer).fit(patches)
        detectors["filter-gaussian"] = FilterGaussianDetector(normalizer).fit(patches)
        began = time.perf_counter()
        for name, detector in detectors.items():
            maps = detector.anomaly_map(images)
            for reduce in REDUCTIONS:
                auroc = float(roc_auc_score(y, patch_scores(maps, reduce=reduce)))
                results.setdefault(f"{name}/{reduce}", []).append(auroc)
        # The image-level statistic: whole images cropped to the encoder's multiple of 8.
        bundle = load_bundle(args.out / f"fold{i}-conv-ae")
        h, w = (images.shape[1] // 8) * 8, (images.shape[2] // 8) * 8
        train_images = np.stack([np.asarray(PILImage.open(p))[:h, :w] for p in train])
        fit = patch_vectors(bundle.model, bundle.normalizer, train_images, batch_size=8)
        scored = patch_vectors(bundle.model, bundle.normalizer, images[:, :h, :w], batch_size=8)
        distance = gaussian_distance(fit, scored)
        results.setdefault("conv-ae/image-gaussian", []).append(float(roc_auc_score(y, distance)))
        timings.append({"train_s": train_s, "score_s": time.perf_counter() - began})
        line = ", ".join(f"{k} {v[-1]:.3f}" for k, v in results.items())
        print(f"fold {i} (held out {held}; {len(test)} test images): {line}", flush=True)

    print("\n| method/reduce | " + " | ".join(f"fold {i}" for i in range(len(folds))) + " | mean |")
    print("|---|" + "---|" * (len(folds) + 1))
    for name, values in results.items():
        cells = " | ".join(f"{v:.3f}" for v in values)
        print(f"| {name} | {cells} | {np.mean(values):.3f} |")
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.date.today().isoformat(),
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "folds": folds,
        "defects_per_fold": args.defects,
        "config": config.model_dump(mode="json"),
        "image_auroc": results,
        "timings": timings,
    }
    (args.out / "results.json").write_text(json.dumps(record, indent=2))
    print(f"\nwrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
