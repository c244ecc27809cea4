"""Benchmark: whole-image classes with an encoder pretrained at the images' own scale.

``emae pretrain train/*/*.png`` trains the encoder on random 64 x 64 patches of the stored
350 x 512 nanofibre micrographs, at their own pixel size; ``emae finetune --input whole``
then shows the classifier each image padded to 512 x 512 and resized to 64 x 64, 8x smaller
than anything the encoder saw. This benchmark measures, on the group-aware folds and label
budgets of ``bench_fewlabel_nanofiber.py`` (same seeds, so the same training subsets), three
ways to present a whole image to that encoder:

``resized``
    what ``emae finetune --input whole`` does: the whole image at 64 x 64; the encoder is
    fine-tuned with the head (``freeze="finetune"``, as ``head-finetune``);
``tiles``
    the image at its own scale as a grid of 64 x 64 tiles (6 x 8 = 48 per image, the last
    row and column aligned to the border); every tile carries its image's label for training
    (fine-tuned as above) and an image's class probabilities are the mean over its tiles;
``native``
    the whole image at its own scale, reflect-padded to 512 x 512, through the frozen encoder;
    the head reads the mean and std of every encoder level over the whole image (fine-tuning
    at 512 x 512 costs 64x per step and was not run).

Data: ``nanofiber_sem`` of the shared data folder (Yardimci & Ersoy 2025, The Visual Computer).

Usage::

    python bench/bench_fewlabel_nanofiber_scale.py --encoder RUN [--data DATA] [--steps 100]
        [--folds 5] [--budgets 5,25] [--methods resized,tiles,native] [--threads N] [--out F]

``RUN`` is an encoder pretrained on the stored images (``bench_fewlabel_nanofiber.py
--encoder-from images`` writes one). Per-fold scores go to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench_fewlabel_nanofiber import CITATION, default_data
from bench_fewlabel_sample import header, parse_budgets

TILE = 64
NATIVE = 512


def image_tiles(labeled, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """``(M, tile, tile)`` tiles of every image at its own scale and ``(M,)`` their image."""
    from emae.io.readers import open_image

    tiles, owner = [], []
    for i, sample in enumerate(labeled.samples):
        image = open_image(sample.image).section(0)
        h, w = image.shape
        ys = np.round(np.linspace(0, h - tile, int(np.ceil(h / tile)))).astype(int)
        xs = np.round(np.linspace(0, w - tile, int(np.ceil(w / tile)))).astype(int)
        tiles += [image[y : y + tile, x : x + tile] for y in ys for x in xs]
        owner += [i] * (len(ys) * len(xs))
    return np.stack(tiles), np.asarray(owner)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", type=Path, required=True, help="Pretrained model folder.")
    parser.add_argument("--data", type=Path, default=default_data(), help="Shared data folder.")
    parser.add_argument("--steps", type=int, default=100, help="Classifier training steps.")
    parser.add_argument("--folds", type=int, default=5, help="Cross-validation folds.")
    parser.add_argument("--budgets", default="5,25", help="Labels per class.")
    parser.add_argument("--methods", default="resized,tiles,native")
    parser.add_argument("--threads", type=int, help="torch CPU threads.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of folds, subsets and fits.")
    parser.add_argument("--out", type=Path, help="JSON file of the per-fold scores.")
    args = parser.parse_args()
    import torch

    from emae.classify.config import FinetuneConfig
    from emae.classify.estimator import PatchClassifier
    from emae.classify.metrics import classification_metrics
    from emae.data.folds import budget_subset, make_folds
    from emae.data.labels import load_labels
    from emae.data.objects import labeled_dtype, object_patches

    if args.threads:
        torch.set_num_threads(args.threads)
    info = header(sys.argv)
    print(f"data           {CITATION}")
    began = time.perf_counter()
    labeled = load_labels(args.data / "nanofiber_sem" / "labels.csv", patch_size=TILE)
    dtype = str(labeled_dtype(labeled))
    methods = args.methods.split(",")
    inputs: dict[str, np.ndarray] = {}
    inputs["resized"], y = object_patches(labeled, TILE, "whole")
    if "tiles" in methods:
        inputs["tiles"], owner = image_tiles(labeled, TILE)
        print(f"tiles          {inputs['tiles'].shape} at the images' own scale")
    if "native" in methods:
        inputs["native"], _ = object_patches(labeled, NATIVE, "whole")  # padded, not resized
    groups = [s.group for s in labeled.samples]
    splits = make_folds(y, groups, args.folds, args.seed, classes=labeled.classes)
    scores: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    for fold, (train, test) in enumerate(splits):
        for budget in parse_budgets(args.budgets):
            subset = budget_subset(y, train, budget, args.seed + fold)
            name = "all" if budget is None else str(budget)
            for method in methods:
                start = time.perf_counter()
                config = FinetuneConfig(
                    steps=args.steps,
                    input="whole",
                    view="image",
                    patch_size=NATIVE if method == "native" else TILE,
                    freeze="frozen" if method == "native" else "finetune",
                    seed=args.seed,
                )
                clf = PatchClassifier(
                    args.encoder,
                    config,
                    classes=range(len(labeled.classes)),
                    class_names=labeled.classes,
                    source_dtype=dtype,
                )
                x = inputs[method]
                if method == "tiles":
                    mine = np.isin(owner, subset)
                    clf.fit(x[mine], y[owner[mine]])
                    theirs = np.isin(owner, test)
                    per_tile, of = clf.predict_proba(x[theirs]), owner[theirs]
                    proba = np.stack([per_tile[of == i].mean(axis=0) for i in test])
                else:
                    clf.fit(x[subset], y[subset])
                    proba = clf.predict_proba(x[test])
                f1 = classification_metrics(y[test], proba, labeled.classes)["macro_f1"]
                scores[method].setdefault(name, []).append(float(f1))
                seconds = time.perf_counter() - start
                print(f"fold {fold}, {name}/class, {method}: macro-F1 {f1:.3f} ({seconds:.0f} s)")
    print("\nmacro-F1, mean ± std over folds (per fold):")
    for method, by in scores.items():
        for name, values in by.items():
            v = np.asarray(values)
            spread = f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"
            print(f"  {method:8s} {name:>4s}: {spread}  {np.round(v, 3)}")
    for method in methods[1:]:
        for name, values in scores[method].items():
            d = np.asarray(values) - np.asarray(scores[methods[0]][name])
            print(
                f"  {method} - {methods[0]} at {name}: {d.mean():+.3f} ± {d.std(ddof=1):.3f}, "
                f"ahead in {int((d > 0).sum())} of {len(d)} folds"
            )
    print(f"total {(time.perf_counter() - began) / 60:.1f} min")
    if args.out:
        args.out.write_text(json.dumps({**info, "scores": scores}, indent=2))


if __name__ == "__main__":
    main()
