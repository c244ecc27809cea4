"""Benchmark: the one-class MNIST protocol (train on one digit, AUROC on the full test set).

For each digit ``d``: train an autoencoder with :func:`emae.commands.pretrain.pretrain` on the
training images of digit ``d`` only (written as a ``"ZYX"`` ``.npy`` stack in the work folder),
rebuild the fitted detector from the model folder, refit it for every score of
:data:`emae.anomaly.scores.SCORES` (:func:`emae.train.autoencoder.fit_detector` on the same
digit-``d`` training stack), and score all 10,000 test images (anomaly = not ``d``). Reports the
image AUROC per digit and score (reduce ``mean`` and ``max``) next to Deep SVDD (Ruff et al. 2018).

One configuration for all digits, fixed before looking at test scores: 28 x 28 patches (the
whole image), channels (32, 64), a 32-dimensional vector latent (the size of Deep SVDD's
representation), otherwise the :class:`PretrainConfig` defaults. The headline score is the
library default (:data:`emae.anomaly.detector.DEFAULT_SCORE`, ``mean``); the other scores are
reported alongside, not chosen per digit.

The images are stored as uint16 ``pixel + 1``: emae's default patch check
(:func:`emae.data.validity.not_empty`) rejects patches that are more than half 0 or dtype-maximum
(padding), which is every MNIST digit. The percentile normalization is affine, so the offset
changes nothing else; test images get the same offset.

Usage::

    python bench/bench_mnist_oneclass.py [--data DATA] [--out runs/bench/mnist]
                                         [--digits 0 1 ... 9] [--steps 1000] [--reuse]
                                         [--threads N]
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

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from emae.anomaly.detector import AutoencoderDetector
from emae.anomaly.scores import SCORES, patch_scores
from emae.commands.pretrain import pretrain
from emae.folders.autoencoder import load_bundle
from emae.train.autoencoder import fit_detector
from emae.train.config import PretrainConfig

REPO = Path(__file__).resolve().parents[1]
#: Deep SVDD (one-class), Ruff et al. 2018, AUROC % for digits 0-9.
DEEP_SVDD = (98.0, 99.7, 91.7, 91.9, 94.9, 88.5, 98.3, 94.6, 93.9, 96.5)
REDUCES = ("mean", "max")
OFFSET = 1  # see the module docstring


def default_data() -> Path:
    return Path(os.environ.get("EMAE_DATA", REPO.parent / "shared" / "data"))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (``.gz``) as a uint8 array: images ``(N, 28, 28)`` or labels ``(N,)``."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise SystemExit(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def config_for(steps: int) -> PretrainConfig:
    return PretrainConfig(
        patch_size=28,
        channels=(32, 64),
        latent="vector",
        latent_dim=32,
        steps=steps,
        score_patches=2048,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="Shared data folder.")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "mnist")
    parser.add_argument("--digits", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--steps", type=int, default=1000, help="Training steps per digit.")
    parser.add_argument("--reuse", action="store_true", help="Reuse existing model folders.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    parser.add_argument("--scores", default=",".join(SCORES), help="Scores to fit and apply.")
    args = parser.parse_args()
    chosen = [s for s in args.scores.split(",") if s]
    if not chosen or set(chosen) - set(SCORES):
        raise SystemExit(f"--scores must name scores among {', '.join(SCORES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")

    mnist = args.data / "mnist"
    train_x = read_idx(mnist / "train-images-idx3-ubyte.gz")
    train_y = read_idx(mnist / "train-labels-idx1-ubyte.gz")
    test_x = read_idx(mnist / "t10k-images-idx3-ubyte.gz").astype(np.float32) + OFFSET
    test_y = read_idx(mnist / "t10k-labels-idx1-ubyte.gz")
    args.out.mkdir(parents=True, exist_ok=True)
    config = config_for(args.steps)
    print(f"config: {config.model_dump(mode='json')}")

    results: dict[int, dict] = {}
    for d in args.digits:
        stack = args.out / f"train_digit{d}.npy"
        np.save(stack, train_x[train_y == d].astype(np.uint16) + OFFSET)
        model_dir = args.out / f"digit{d}"
        began = time.perf_counter()
        if args.reuse and (model_dir / "config.json").exists():
            summary = json.loads((model_dir / "training.json").read_text())
        else:
            summary = pretrain([stack], model_dir, config, overwrite=True, progress=False)
        train_s = time.perf_counter() - began
        bundle = load_bundle(model_dir)
        anomalous = test_y != d
        aurocs: dict[str, float] = {}
        began = time.perf_counter()
        detectors = {}
        for score in sorted(set(chosen) | {bundle.scoring["score"]}, key=SCORES.index):
            detectors[score] = fit_detector(
                bundle.model,
                bundle.normalizer,
                [str(stack)],
                config.model_copy(update={"score": score}),
            )
        # The saved detector is the default one refitted here: check on a subset, not rescored.
        saved = AutoencoderDetector.from_bundle(model_dir).anomaly_score(test_x[:500])
        default = detectors[bundle.scoring["score"]].anomaly_score(test_x[:500])
        bundle_diff = float(np.abs(saved - default).max())
        for name, detector in detectors.items():
            maps = detector.anomaly_map(test_x)
            for reduce in REDUCES:
                scores = patch_scores(maps, reduce=reduce)
                aurocs[f"{name}/{reduce}"] = float(roc_auc_score(anomalous, scores))
        score_s = time.perf_counter() - began
        results[d] = {
            "n_train": int((train_y == d).sum()),
            "train_wall_s": train_s,
            "loop_s": summary["seconds"],
            "precision": summary["precision"],
            "best_val": summary["best_val"],
            "score_wall_s": score_s,
            "auroc": aurocs,
            "bundle_vs_refit_max_abs_diff": bundle_diff,
        }
        line = "  ".join(f"{s} {100 * aurocs[f'{s}/mean']:.1f}" for s in detectors)
        print(f"digit {d}: train {train_s:.0f} s, score {score_s:.0f} s | {line}", flush=True)

    names = [
        f"{s}/{r}"
        for r in REDUCES
        for s in SCORES
        if f"{s}/{r}" in results[args.digits[0]]["auroc"]
    ]
    print()
    print("| digit | Deep SVDD | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for d in args.digits:
        row = " | ".join(f"{100 * results[d]['auroc'][n]:.1f}" for n in names)
        print(f"| {d} | {DEEP_SVDD[d]:.1f} | {row} |")
    means = {n: float(np.mean([results[d]["auroc"][n] for d in args.digits])) for n in names}
    svdd = np.mean([DEEP_SVDD[d] for d in args.digits])
    row = " | ".join(f"**{100 * means[n]:.1f}**" for n in names)
    print(f"| **mean** | {svdd:.1f} | {row} |")

    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.date.today().isoformat(),
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "config": config.model_dump(mode="json"),
        "offset": OFFSET,
        "deep_svdd": dict(zip(range(10), DEEP_SVDD, strict=True)),
        "per_digit": results,
        "mean_auroc": means,
    }
    (args.out / "results.json").write_text(json.dumps(record, indent=2))
    print(f"\nwrote {args.out / 'results.json'}")
    print(f"command: {record['command']}")


if __name__ == "__main__":
    main()
