"""Benchmark: pixel AUROC of synthetic artifacts drawn on real EM (ISBI 2012), per artifact type.

Trains the default autoencoder (:func:`emae.commands.pretrain.pretrain`, default
:class:`PretrainConfig`,
optionally fewer ``--steps``) on the ISBI 2012 slices except a held-out set: the last
``--holdout`` train images and the last ``--holdout`` test images (default 5 + 5: train 25-29,
test 25-29). Then, for every kind in :data:`emae.synth.artifacts.ARTIFACT_TYPES`, it draws
``--per-slice`` seeded instances of that kind onto each held-out slice (one after another with
:func:`emae.synth.artifacts.inject`, masks united) and reports the pixel AUROC (artifact mask
against all other pixels of the same slices) of

- the detector saved in the model folder (:meth:`AutoencoderDetector.from_bundle`), and
- every score of :data:`emae.anomaly.scores.SCORES`, refitted with
  :func:`emae.train.autoencoder.fit_detector`
  on the training images.

"overall" pools the pixels of all kinds; "mean" is the mean of the per-kind AUROCs.

Usage::

    python bench/bench_isbi_artifacts.py [--data DATA] [--out runs/bench/isbi]
                                         [--steps 2000] [--holdout 5] [--per-slice 3]
                                         [--seed 0] [--reuse] [--threads N]

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
from sklearn.metrics import roc_auc_score

from emae.anomaly.detector import AutoencoderDetector
from emae.anomaly.scores import SCORES
from emae.commands.pretrain import pretrain
from emae.folders.autoencoder import load_bundle
from emae.synth.artifacts import ARTIFACT_TYPES, as_unit_float, inject
from emae.train.autoencoder import fit_detector
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


def pixel_aurocs(maps: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> dict[str, float]:
    """AUROC per kind, pooled over all kinds ("overall") and the mean of the kinds ("mean")."""
    out = {k: float(roc_auc_score(masks[k].ravel(), maps[k].ravel())) for k in maps}
    pooled_y = np.concatenate([masks[k].ravel() for k in maps])
    pooled_s = np.concatenate([maps[k].ravel() for k in maps])
    per_kind = list(out.values())
    out["overall"] = float(roc_auc_score(pooled_y, pooled_s))
    out["mean"] = float(np.mean(per_kind))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="Shared data folder.")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "isbi")
    parser.add_argument("--steps", type=int, default=None, help="Training steps (default 2000).")
    parser.add_argument("--holdout", type=int, default=5, help="Held out from train and test.")
    parser.add_argument("--per-slice", type=int, default=3, help="Artifacts per held-out slice.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the artifacts.")
    parser.add_argument("--reuse", action="store_true", help="Reuse an existing model folder.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")

    train_paths, held_paths = split(args.data, args.holdout)
    config = PretrainConfig() if args.steps is None else PretrainConfig(steps=args.steps)
    model_dir = args.out / "model"
    args.out.mkdir(parents=True, exist_ok=True)
    held = ", ".join(str(p.relative_to(args.data)) for p in held_paths)
    print(f"training on {len(train_paths)} slices; held out: {held}")

    if args.reuse and (model_dir / "config.json").exists():
        summary = json.loads((model_dir / "training.json").read_text())
        print(f"reusing {model_dir}")
    else:
        began = time.perf_counter()
        summary = pretrain(train_paths, model_dir, config, overwrite=True, progress=False)
        summary["wall_s"] = time.perf_counter() - began
    train_info = {
        "steps": summary["steps_done"],
        "loop_seconds": summary["seconds"],
        "wall_seconds_incl_scoring_fit": summary.get("wall_s"),
        "samples_per_s": summary["samples_per_s"],
        "precision": summary["precision"],
        "best_val": summary["best_val"],
    }
    print(
        f"training: {summary['steps_done']} steps in {summary['seconds']:.0f} s "
        f"({summary['samples_per_s']:.0f} patches/s, {summary['precision']}), "
        f"best val loss {summary['best_val']:.5f}"
    )

    slices = [np.asarray(PILImage.open(p)) for p in held_paths]
    sets = {k: corrupted_set(slices, k, args.per_slice, args.seed) for k in ARTIFACT_TYPES}
    masks = {k: m for k, (_, m) in sets.items()}
    fractions = {k: float(m.mean()) for k, m in masks.items()}

    bundle = load_bundle(model_dir)
    detectors: dict[str, AutoencoderDetector] = {}
    detectors[f"bundle ({bundle.scoring['score']}/{bundle.scoring['reduce']})"] = (
        AutoencoderDetector.from_bundle(model_dir, batch_size=4)
    )
    fit_seconds: dict[str, float] = {}
    for score in SCORES:
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

    results: dict[str, dict[str, float]] = {}
    map_seconds: dict[str, float] = {}
    for name, detector in detectors.items():
        began = time.perf_counter()
        maps = {k: detector.anomaly_map(images) for k, (images, _) in sets.items()}
        map_seconds[name] = time.perf_counter() - began
        results[name] = pixel_aurocs(maps, masks)
        print(f"{name}: overall {results[name]['overall']:.3f} ({map_seconds[name]:.0f} s)")

    names = list(results)
    print()
    print("| artifact | masked px | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for k in (*ARTIFACT_TYPES, "overall", "mean"):
        frac = f"{100 * fractions[k]:.1f}%" if k in fractions else ""
        row = " | ".join(f"{results[n][k]:.3f}" for n in names)
        label = f"**{k}**" if k in ("overall", "mean") else k
        print(f"| {label} | {frac} | {row} |")

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
        "pixel_auroc": results,
        "fit_seconds": fit_seconds,
        "map_seconds": map_seconds,
    }
    (args.out / "results.json").write_text(json.dumps(record, indent=2))
    print(f"\nwrote {args.out / 'results.json'}")
    print(f"command: {record['command']}")


if __name__ == "__main__":
    main()
