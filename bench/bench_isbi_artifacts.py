"""Benchmark: pixel AUROC of synthetic artifacts drawn on real EM (ISBI 2012), per artifact type.

Trains the default autoencoder (:func:`emae.commands.pretrain.pretrain`, default
:class:`PretrainConfig`,
optionally fewer ``--steps``) on the ISBI 2012 slices except a held-out set: the last
``--holdout`` train images and the last ``--holdout`` test images (default 5 + 5: train 25-29,
test 25-29). Then, for every kind in :data:`emae.synth.artifacts.ARTIFACT_TYPES`, it draws
``--per-slice`` seeded instances of that kind onto each held-out slice (one after another with
:func:`emae.synth.artifacts.inject`, masks united) and reports the pixel AUROC (artifact mask
against all other pixels of the same slices) of

- the detector saved in the model folder (:meth:`AutoencoderDetector.from_bundle`),
- every score of :data:`emae.anomaly.scores.SCORES` (or those of ``--scores``), refitted with
  :func:`emae.train.autoencoder.fit_detector` on the training images, and
- the peers, fitted on the same random training patches: PCA (``emae pretrain --model pca``,
  a linear autoencoder, with the default score), the local-statistics baseline
  (:class:`~emae.anomaly.local_stats.LocalStatisticsDetector`) and a PaDiM-style Gaussian on
  ilastik's multi-scale filter features
  (:class:`~emae.anomaly.filter_gaussian.FilterGaussianDetector`).

For each it reports, per kind and pooled, the pixel AUROC, the average precision and the AUPRO
up to 30% FPR (:func:`emae.anomaly.pixel_metrics.pixel_metrics`), and the megapixels per
second of its maps. "overall" pools the pixels of all kinds; "mean" is the mean of the
per-kind figures. No method is trained on drawn artifacts: every kind is unseen.

Usage::

    python bench/bench_isbi_artifacts.py [--data DATA] [--out runs/bench/isbi]
                                         [--steps 2000] [--holdout 5] [--per-slice 3]
                                         [--seed 0] [--reuse] [--threads N]
                                         [--scores typicality,...] [--no-peers]
                                         [--windows 2/6,1/16,...]

``--windows`` adds one column per typicality window pair ``smooth/aggregate`` (pixels), refitted
like the scores (``AutoencoderDetector(score_params=...)``): the sweep the default was chosen by.

``--data`` defaults to ``$EMAE_DATA`` or ``../shared/data`` next to the repository. The model
folder, its training folder and ``results.json`` go under ``--out`` (``runs/`` is gitignored).
``--reuse`` skips training when the model folder already exists.
"""

from __future__ import annotations

import argparse
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

from emae.anomaly.base import AnomalyDetector
from emae.anomaly.detector import AutoencoderDetector
from emae.anomaly.filter_gaussian import FilterGaussianDetector
from emae.anomaly.local_stats import LocalStatisticsDetector
from emae.anomaly.pixel_metrics import pixel_metrics
from emae.anomaly.scores import SCORES
from emae.commands.pretrain import pretrain
from emae.data.sampling import sample_patches
from emae.folders.autoencoder import load_bundle
from emae.io import open_image
from emae.synth.artifacts import ARTIFACT_TYPES, as_unit_float, inject
from emae.train.autoencoder import SCORING_SEED_OFFSET, fit_detector, patch_check
from emae.train.config import PretrainConfig

REPO = Path(__file__).resolve().parents[1]


def default_data() -> Path:
    return Path(os.environ.get("EMAE_DATA", REPO.parent / "shared" / "data"))


def split(data: Path, holdout: int) -> tuple[list[Path], list[Path]]:
    """Training and held-out slice paths: the last ``holdout`` of train and of test are held out."""
    root = data / "isbi2012"
    train = sorted((root / "train" / "image").glob("*.png"), key=lambda p: int(p.stem))
    test = sorted((root / "test").glob("*.png"), key=lambda p: int(p.stem))
    if len(train) <= holdout or len(test) <= holdout:
        raise SystemExit(f"{root}: expected more than {holdout} train and test images")
    return train[:-holdout] + test[:-holdout], train[-holdout:] + test[-holdout:]


def corrupted_set(
    slices: list[np.ndarray], kind: str, per_slice: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every slice with ``per_slice`` artifacts of ``kind``: raw-unit images and masks.

    Returns ``(N, H, W)`` float32 in the units of the uint8 source (0-255) and ``(N, H, W)``
    bool.
    """
    images, masks = [], []
    kind_index = ARTIFACT_TYPES.index(kind)
    for i, raw in enumerate(slices):
        rng = np.random.default_rng([seed, kind_index, i])
        image = as_unit_float(raw)
        mask = np.zeros(raw.shape, bool)
        for _ in range(per_slice):
            image, drawn = inject(image, kind, seed=rng)
            mask |= drawn
        images.append(image * 255.0)
        masks.append(mask)
    return np.stack(images).astype(np.float32), np.stack(masks)


def metrics_by_kind(
    maps: dict[str, np.ndarray], masks: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """AUROC, AP and AUPRO per kind, pooled over all kinds ("overall"), and their means ("mean")."""
    out = {k: pixel_metrics(maps[k], masks[k]) for k in maps}
    kinds = list(out)
    out["overall"] = pixel_metrics(
        np.concatenate([maps[k] for k in kinds]), np.concatenate([masks[k] for k in kinds])
    )
    out["mean"] = {m: float(np.mean([out[k][m] for k in kinds])) for m in ("auroc", "ap", "aupro")}
    return out


def train_model(
    train_paths: list[Path], out: Path, config: PretrainConfig, reuse: bool
) -> dict[str, object]:
    """Train (or reuse) a model folder; its training figures."""
    if reuse and (out / "config.json").exists():
        print(f"reusing {out}")
        summary = json.loads((out / "training.json").read_text())
    else:
        began = time.perf_counter()
        summary = pretrain(train_paths, out, config, overwrite=True, progress=False)
        summary["wall_s"] = time.perf_counter() - began
    return {
        "steps": summary["steps_done"],
        "loop_seconds": summary["seconds"],
        "wall_seconds_incl_scoring_fit": summary.get("wall_s"),
        "samples_per_s": summary["samples_per_s"],
        "precision": summary["precision"],
        "best_val": summary["best_val"],
    }


def table(results: dict[str, dict[str, dict[str, float]]], metric: str, fractions: dict) -> str:
    """One markdown table: a row per kind, a column per method."""
    names = list(results)
    lines = [
        f"| {metric} | masked px | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for k in (*ARTIFACT_TYPES, "overall", "mean"):
        frac = f"{100 * fractions[k]:.1f}%" if k in fractions else ""
        row = " | ".join(f"{results[n][k][metric]:.3f}" for n in names)
        label = f"**{k}**" if k in ("overall", "mean") else k
        lines.append(f"| {label} | {frac} | {row} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="Shared data folder.")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "isbi")
    parser.add_argument("--steps", type=int, default=None, help="Training steps (default 2000).")
    parser.add_argument("--holdout", type=int, default=5, help="Held out from train and test.")
    parser.add_argument("--per-slice", type=int, default=3, help="Artifacts per held-out slice.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the artifacts.")
    parser.add_argument("--reuse", action="store_true", help="Reuse existing model folders.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    parser.add_argument("--scores", default=",".join(SCORES), help="Scores to refit.")
    parser.add_argument("--no-peers", action="store_true", help="Skip PCA and the baselines.")
    parser.add_argument("--windows", default="", help="Typicality smooth/aggregate pairs.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    scores = [s for s in args.scores.split(",") if s]
    unknown = sorted(set(scores) - set(SCORES))
    if unknown:
        raise SystemExit(f"unknown scores {unknown}; known: {', '.join(SCORES)}")

    train_paths, held_paths = split(args.data, args.holdout)
    config = PretrainConfig() if args.steps is None else PretrainConfig(steps=args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    held = ", ".join(str(p.relative_to(args.data)) for p in held_paths)
    print(f"training on {len(train_paths)} slices; held out: {held}")
    model_dir = args.out / "model"
    train_info = {"default": train_model(train_paths, model_dir, config, args.reuse)}
    print(f"training: {train_info['default']}")

    slices = [np.asarray(PILImage.open(p)) for p in held_paths]
    sets = {k: corrupted_set(slices, k, args.per_slice, args.seed) for k in ARTIFACT_TYPES}
    masks = {k: m for k, (_, m) in sets.items()}
    fractions = {k: float(m.mean()) for k, m in masks.items()}

    bundle = load_bundle(model_dir)
    detectors: dict[str, AnomalyDetector] = {}
    detectors[f"bundle ({bundle.scoring['score']}/{bundle.scoring['reduce']})"] = (
        AutoencoderDetector.from_bundle(model_dir, batch_size=4)
    )
    fit_seconds: dict[str, float] = {}
    for score in scores:
        began = time.perf_counter()
        detector = fit_detector(
            bundle.model,
            bundle.normalizer,
            [str(p) for p in train_paths],
            config.model_copy(update={"score": score}),
        )
        fit_seconds[score] = time.perf_counter() - began
        detector.batch_size = 4
        detectors[score] = detector
    for pair in [w for w in args.windows.split(",") if w]:
        smooth, aggregate = (float(v) for v in pair.split("/"))
        name = f"typicality {smooth:g}/{aggregate:g}"
        began = time.perf_counter()
        _, patches = sample_patches(
            [open_image(str(p)) for p in train_paths],
            config.score_patches,
            config.patch_size,
            seed=config.seed + SCORING_SEED_OFFSET,
            is_valid=patch_check(config),
        )
        detectors[name] = AutoencoderDetector(
            bundle.model,
            bundle.normalizer,
            batch_size=4,
            seed=config.seed,
            score_params={"smooth_sigma": smooth, "aggregate_sigma": aggregate},
        ).fit(patches)
        fit_seconds[name] = time.perf_counter() - began
    if not args.no_peers:
        pca_config = PretrainConfig(model="pca")
        train_info["pca"] = train_model(train_paths, args.out / "pca", pca_config, args.reuse)
        detectors[f"PCA ({pca_config.score})"] = AutoencoderDetector.from_bundle(
            args.out / "pca", batch_size=4
        )
        # The baselines fit on the same draw of training patches as fit_detector.
        _, patches = sample_patches(
            [open_image(str(p)) for p in train_paths],
            config.score_patches,
            config.patch_size,
            seed=config.seed + SCORING_SEED_OFFSET,
        )
        for name, peer in (
            ("local-stats", LocalStatisticsDetector(bundle.normalizer)),
            ("filter-gaussian", FilterGaussianDetector(bundle.normalizer)),
        ):
            began = time.perf_counter()
            detectors[name] = peer.fit(patches)
            fit_seconds[name] = time.perf_counter() - began

    results: dict[str, dict[str, dict[str, float]]] = {}
    megapixels_per_s: dict[str, float] = {}
    pixels = sum(images.size for images, _ in sets.values())
    for name, detector in detectors.items():
        began = time.perf_counter()
        maps = {k: detector.anomaly_map(images) for k, (images, _) in sets.items()}
        seconds = time.perf_counter() - began
        megapixels_per_s[name] = pixels / seconds / 1e6
        results[name] = metrics_by_kind(maps, masks)
        overall = results[name]["overall"]
        print(
            f"{name}: overall AUROC {overall['auroc']:.3f}, AP {overall['ap']:.3f}, "
            f"AUPRO {overall['aupro']:.3f} ({megapixels_per_s[name]:.2f} MP/s)",
            flush=True,
        )

    for metric in ("auroc", "ap", "aupro"):
        print()
        print(table(results, metric, fractions))
    print("\n| method | maps, MP/s |\n|---|---|")
    for name, rate in megapixels_per_s.items():
        print(f"| {name} | {rate:.2f} |")

    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.date.today().isoformat(),
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "config": config.model_dump(mode="json"),
        "train_slices": [str(p) for p in train_paths],
        "held_out_slices": [str(p) for p in held_paths],
        "per_slice": args.per_slice,
        "seed": args.seed,
        "training": train_info,
        "mask_fraction": fractions,
        "metrics": results,
        "pixel_auroc": {n: {k: v["auroc"] for k, v in r.items()} for n, r in results.items()},
        "fit_seconds": fit_seconds,
        "map_megapixels_per_s": megapixels_per_s,
    }
    (args.out / "results.json").write_text(json.dumps(record, indent=2))
    print(f"\nwrote {args.out / 'results.json'}")
    print(f"command: {record['command']}")


if __name__ == "__main__":
    main()
