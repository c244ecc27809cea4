"""Benchmark: few-label defect classification of nanofibre SEM images, cross-validated by source.

Data: ``nanofiber_sem`` of the shared data folder (Yardimci & Ersoy 2025, The Visual Computer,
"Automated Defect Classification of Electrospun Polyacrylonitrile Nanofibers via Deep Learning
of SEM Images"; public repository cagriyardimci/Nanofiber_SEM_Dataset): 1003 images of 350 x 512,
classes NonDefective / SlightlyDefective / Defective, ``group`` = the source micrograph (27).

The class is a property of the whole micrograph, so the classifier sees each image whole
(:mod:`emae.data.objects` variant ``"whole"``: reflect-padded to 512 x 512, resized to ``P x P``).
So that encoder and head see the same scale, the autoencoder is pretrained, without labels, on
exactly those ``P x P`` images of all 1003 images (written as a ``"ZYX"`` ``.npy`` stack in the
work folder; the labels are never read for it). Then :func:`emae.commands.compare.compare` runs the
frozen head, a CNN from scratch, an RBF SVM on handcrafted features and latent logistic
regression on group-aware stratified folds (the ``group`` column) and nested label budgets.
``--methods head-semi`` trains semi-supervised on the same stack as unlabeled images (as the
encoder's pretraining, every image without its label).

``--encoder-from images`` measures instead the path a new user takes on the command line,
``emae pretrain train/*/*.png`` then ``emae finetune --input whole``: the encoder is pretrained
with the CLI's settings (``PretrainConfig()``, 2000 steps unless ``--pretrain-steps`` says
otherwise) on random 64 x 64 patches of the stored 350 x 512 images, at their own scale, while
the classifier sees each image whole, 8x smaller. ``--classifier-steps-default`` trains the
classifier with the CLI's 400 steps instead of ``--steps``.

Usage::

    python bench/bench_fewlabel_nanofiber.py [--data DATA] [--patch 64] [--pretrain-steps 300]
        [--steps 200] [--folds 5] [--budgets 5,10,25,50,all] [--work DIR] [--threads N]
        [--encoder-from stack|images]

``DATA`` is the shared data folder (default ``$EMAE_DATA`` or ``../shared/data``). Everything
written goes to ``--work`` (default ``runs/bench/fewlabel_nanofiber``, gitignored); the
comparison resumes an interrupted run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench_fewlabel_sample import header, parse_budgets, report, summary_from_results

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WORK = REPO / "runs" / "bench" / "fewlabel_nanofiber"
CITATION = (
    "Yardimci & Ersoy 2025, The Visual Computer, Automated Defect Classification of "
    "Electrospun Polyacrylonitrile Nanofibers via Deep Learning of SEM Images"
)


def default_data() -> Path:
    return Path(os.environ.get("EMAE_DATA", REPO.parent / "shared" / "data"))


def whole_stack(labels_csv: Path, patch: int, path: Path) -> Path:
    """The ``"whole"`` inputs of every image of ``labels_csv`` as a ``(N, P, P)`` stack in the
    images' own dtype (resized values rounded), so that the encoder's normalization is that of
    the labeled images and ``compare`` accepts it.

    Only the image paths of the CSV are used (the same function ``compare`` calls to build the
    classifier's inputs), never the labels.
    """
    from emae.data.labels import load_labels
    from emae.data.objects import labeled_dtype, object_patches

    if path.is_file():
        return path
    began = time.perf_counter()
    labeled = load_labels(labels_csv, patch_size=patch)
    images, _ = object_patches(labeled, patch, "whole")
    dtype = labeled_dtype(labeled)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        images = np.clip(np.rint(images), info.min, info.max)
    np.save(path.with_suffix(".tmp.npy"), images.astype(dtype))
    path.with_suffix(".tmp.npy").rename(path)
    seconds = time.perf_counter() - began
    print(f"wrote {images.shape} whole-image stack to {path} in {seconds:.0f} s")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="Shared data folder.")
    parser.add_argument("--patch", type=int, default=64, help="Side P of the whole-image input.")
    parser.add_argument("--pretrain-steps", type=int, default=300, help="Autoencoder steps.")
    parser.add_argument("--steps", type=int, default=200, help="Classifier training steps.")
    parser.add_argument("--folds", type=int, default=5, help="Cross-validation folds.")
    parser.add_argument("--budgets", default="5,10,25,50,all", help="Labels per class.")
    parser.add_argument("--methods", default="head,cnn-scratch,svm-features,latent-logreg")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="Stack, model, results.")
    parser.add_argument("--threads", type=int, help="torch CPU threads.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of folds, subsets and fits.")
    parser.add_argument(
        "--encoder-from",
        choices=("stack", "images"),
        default="stack",
        help="Pretrain on the whole images at the classifier's size (stack, the default) or on "
        "patches of the stored images as `emae pretrain` does (images).",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="Summarize the fits finished so far; no fits."
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    from emae.classify.config import FinetuneConfig
    from emae.commands.compare import compare
    from emae.commands.pretrain import pretrain
    from emae.folders.files import is_bundle
    from emae.train.config import PretrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    info = header(sys.argv)
    print(f"data           {CITATION}")
    began = time.perf_counter()
    labels = args.data / "nanofiber_sem" / "labels.csv"
    args.work.mkdir(parents=True, exist_ok=True)
    stack = whole_stack(labels, args.patch, args.work / f"whole_{args.patch}.npy")
    if args.encoder_from == "stack":
        encoder = args.work / f"encoder-p{args.patch}-s{args.pretrain_steps}"
        pretrain_config = PretrainConfig(patch_size=args.patch, steps=args.pretrain_steps)
        sources = [stack]
        seen = f"all {np.load(stack).shape[0]} images as {args.patch}x{args.patch} whole images"
    else:  # the command line's path: `emae pretrain train/*/*.png`, its defaults
        encoder = args.work / f"encoder-images-s{args.pretrain_steps}"
        pretrain_config = PretrainConfig(steps=args.pretrain_steps)
        sources = sorted(str(p) for p in (args.data / "nanofiber_sem" / "train").glob("*/*.png"))
        seen = f"random {pretrain_config.patch_size}-px patches of all {len(sources)} stored images"
    info["pretrain_config"] = pretrain_config.model_dump(mode="json")
    if not is_bundle(encoder):
        resume = encoder.with_name(encoder.name + ".training").exists()
        start = time.perf_counter()
        pretrain(sources, encoder, pretrain_config, resume=resume)
        info["pretrain_seconds"] = time.perf_counter() - start
        print(f"pretrained {encoder} in {info['pretrain_seconds']:.0f} s")
    print(
        f"encoder        {encoder}: PretrainConfig(patch_size={pretrain_config.patch_size}, "
        f"steps={args.pretrain_steps}), other fields default, on {seen}, no labels"
    )
    config = FinetuneConfig(steps=args.steps, input="whole", patch_size=args.patch)
    info["finetune_config"] = config.model_dump(mode="json")
    print(
        f"classifier     FinetuneConfig(steps={args.steps}, input='whole', "
        f"patch_size={args.patch}), other fields default"
    )
    out = args.work / f"compare-p{args.patch}-s{args.steps}-f{args.folds}"
    if args.encoder_from == "images":
        out = out.with_name(f"{out.name}-{encoder.name}")
    if args.report_only:
        report(summary_from_results(out), out, info, time.perf_counter() - began)
        return
    summary = compare(
        labels,
        out,
        encoder=encoder,
        unlabeled=[stack] if "head-semi" in args.methods.split(",") else (),
        methods=args.methods.split(","),
        folds=args.folds,
        budgets=parse_budgets(args.budgets),
        config=config,
        seed=args.seed,
        progress=True,
    )
    print(f"results in {out}")
    report(summary, out, info, time.perf_counter() - began)


if __name__ == "__main__":
    main()
