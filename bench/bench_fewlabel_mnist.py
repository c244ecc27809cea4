"""Benchmark: MNIST with 100 labels: pretrain on the 60,000 training digits without labels, then
train the classifier on 10 labels per digit and report the error on the 10,000 test digits.

The semi-supervised protocol of Kingma et al. 2014 (test error with 100 labels: M1+TSVM 11.82%,
M1+M2 3.33%). The autoencoder (:func:`emae.commands.pretrain.pretrain`, 28 x 28 patches = whole
digits,
channels (32, 64), spatial latent) trains on all 60,000 training images, labels unread. 100
labels (10 per class, seeded) then train, with :func:`emae.classify.training.train_classifier`:

``head``           the pretrained encoder, frozen, + 1x1-conv head
``head-finetune``  the same with the encoder fine-tuned at a tenth of the head's rate
``cnn-scratch``    the same architecture from random weights on the 100 labels only
``latent-logreg``  logistic regression on the frozen pooled latents
``head-finetune-shift``  head-finetune with shift augmentation, ``--semi-steps`` steps
``head-semi``      the same, semi-supervised: every step also trains on 3 unlabeled digits per
                   labeled one through FixMatch's pseudo-labels (:mod:`emae.classify.semi`); the
                   unlabeled digits are the 60,000 training images, as in the protocol

``head-semi`` is the semi-supervised method the target is about, fixed before any test error
was seen; ``head-finetune-shift`` differs from it only by the unlabeled digits, so the pair
measures what they add. Both use FixMatch's published settings where emae's defaults differ
(no label smoothing, which would cap the confidence a pseudo-label needs) and
``orientation="fixed"`` (shifts, never flips or turns).

Between ``head`` and ``head-finetune`` one is chosen before the test set is read, by 5-fold
stratified cross-validation accuracy on the 100 labels; both test errors are printed. Digits
are not invariant to flips and rotations (6 vs 9), so the classifier runs without the dihedral
augmentation and without the cached features of 8 flips/turns (``augment=False``,
``cache_features=False``), a choice made from the task, not from any result.

Images are stored as uint16 ``pixel + 1``: emae's default patch check rejects patches that are
more than half 0 (padding), which is every MNIST digit; the percentile normalization is affine,
so the offset changes nothing else. Test and labeled images get the same offset.

Usage::

    python bench/bench_fewlabel_mnist.py [--data DATA] [--pretrain-steps 3000]
        [--batch-size 64] [--latent-channels 32] [--steps 300] [--per-class 10]
        [--semi-steps 3000] [--work DIR] [--threads N] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench_fewlabel_sample import header
from bench_mnist_oneclass import default_data, read_idx

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WORK = REPO / "runs" / "bench" / "fewlabel_mnist"
OFFSET = 1
PUBLISHED = {"M1+TSVM (Kingma et al. 2014)": 11.82, "M1+M2 (Kingma et al. 2014)": 3.33}


def pick_labels(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` random indices of every class, sorted."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(y == k), per_class, replace=False) for k in range(10)]
    return np.sort(np.concatenate(picks))


SEMI = ("head-finetune-shift", "head-semi")


def fit(method: str, x, y, classes, encoder: Path, steps: int, seed: int, unlabeled=None):
    """One fitted classifier: ``predict_proba(images) -> (N, 10)``; ``steps`` of the semi
    methods are ``--semi-steps``."""
    from emae.classify.config import FinetuneConfig
    from emae.classify.training import train_classifier

    if method in SEMI:
        config = FinetuneConfig(
            view="image",  # the digit itself, through the encoder
            freeze="finetune",
            steps=steps,
            augment=True,
            orientation="fixed",
            cache_features=False,
            patch_size=28,
            label_smoothing=0.0,
            seed=seed,
        )
        pool = unlabeled if method == "head-semi" else None
        fitted, summary = train_classifier(x, y, classes, config, encoder=encoder, unlabeled=pool)
        if pool is not None:
            used = [round(h["pseudo_labeled"], 2) for h in summary["history"]]
            print(f"{method:14s} pseudo-labeled share of the unlabeled batch, per 50 steps: {used}")
        return fitted
    if method == "latent-logreg":
        from emae.classify.baselines import LatentClassifier

        return LatentClassifier(encoder, kind="logreg").fit(x, y)
    config = FinetuneConfig(
        view="image",
        freeze="finetune" if method == "head-finetune" else "frozen",
        steps=steps,
        augment=False,
        cache_features=False,
        patch_size=28,
        scratch_channels=(32, 64),
        seed=seed,
    )
    fitted, _ = train_classifier(
        x, y, classes, config, encoder=None if method == "cnn-scratch" else encoder
    )
    return fitted


def cv_accuracy(method: str, x, y, classes, encoder: Path, steps: int, seed: int) -> list[float]:
    """5-fold stratified accuracy of ``method`` on the labeled set alone."""
    from sklearn.model_selection import StratifiedKFold

    scores = []
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    for train, test in folds.split(x, y):
        model = fit(method, x[train], y[train], classes, encoder, steps, seed)
        scores.append(float((model.predict_proba(x[test]).argmax(1) == y[test]).mean()))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="Shared data folder.")
    parser.add_argument("--pretrain-steps", type=int, default=3000, help="Autoencoder steps.")
    parser.add_argument("--batch-size", type=int, default=64, help="Autoencoder batch.")
    parser.add_argument("--latent-channels", type=int, default=32, help="Spatial latent channels.")
    parser.add_argument("--steps", type=int, default=300, help="Classifier training steps.")
    parser.add_argument("--per-class", type=int, default=10, help="Labels per digit.")
    parser.add_argument("--semi-steps", type=int, default=3000, help="Steps of the semi rows.")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="Stack, model, results.")
    parser.add_argument("--threads", type=int, help="torch CPU threads.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of labels, folds and fits.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    from emae.commands.pretrain import pretrain
    from emae.folders.files import is_bundle
    from emae.train.config import PretrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    info = header(sys.argv)
    began = time.perf_counter()
    mnist = args.data / "mnist"
    x_train = read_idx(mnist / "train-images-idx3-ubyte.gz")
    y_train = read_idx(mnist / "train-labels-idx1-ubyte.gz").astype(np.int64)
    x_test = read_idx(mnist / "t10k-images-idx3-ubyte.gz").astype(np.uint16) + OFFSET
    y_test = read_idx(mnist / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    args.work.mkdir(parents=True, exist_ok=True)
    stack = args.work / "train_images.npy"
    if not stack.is_file():
        np.save(stack, x_train.astype(np.uint16) + OFFSET)  # images only: labels never written
    config = PretrainConfig(
        patch_size=28,
        channels=(32, 64),
        latent="spatial",
        latent_channels=args.latent_channels,
        steps=args.pretrain_steps,
        batch_size=args.batch_size,
    )
    info["pretrain_config"] = config.model_dump(mode="json")
    encoder = args.work / f"encoder-l{args.latent_channels}-s{args.pretrain_steps}"
    if not is_bundle(encoder):
        resume = encoder.with_name(encoder.name + ".training").exists()
        start = time.perf_counter()
        pretrain([stack], encoder, config, resume=resume)
        info["pretrain_seconds"] = time.perf_counter() - start
    training = json.loads((encoder / "training.json").read_text())
    print(
        f"encoder        {encoder}: {training['steps_done']} steps of {args.batch_size} on 60000 "
        f"unlabeled digits, {training['seconds']:.0f} s, final val loss {training['best_val']:.4f}"
    )

    picked = pick_labels(y_train, args.per_class, args.seed)
    x = x_train[picked].astype(np.uint16) + OFFSET
    y = y_train[picked]
    classes = tuple(str(k) for k in range(10))
    print(f"labels         {len(picked)} ({args.per_class} per digit, seed {args.seed})")

    cv = {}
    for method in ("head", "head-finetune"):
        start = time.perf_counter()
        cv[method] = cv_accuracy(method, x, y, classes, encoder, args.steps, args.seed)
        print(
            f"5-fold CV on the {len(y)} labels, {method:14s} accuracy "
            f"{np.mean(cv[method]):.3f} ± {np.std(cv[method]):.3f} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    chosen = max(cv, key=lambda m: np.mean(cv[m]))
    print(f"chosen by CV   {chosen} (before reading the test labels)")

    rows = []
    unlabeled = x_train.astype(np.uint16) + OFFSET
    for method in ("head", "head-finetune", "cnn-scratch", "latent-logreg", *SEMI):
        start = time.perf_counter()
        steps = args.semi_steps if method in SEMI else args.steps
        model = fit(method, x, y, classes, encoder, steps, args.seed, unlabeled)
        fit_s = time.perf_counter() - start
        error = float((model.predict_proba(x_test).argmax(1) != y_test).mean())
        rows.append({"method": method, "test_error": error, "fit_seconds": fit_s})
        print(f"{method:14s} test error {100 * error:.2f}% (fit {fit_s:.0f} s)", flush=True)

    lines = ["| method | test error (10k) | fit s |", "|---|---|---|"]
    for r in rows:
        mark = " (chosen by CV)" if r["method"] == chosen else ""
        lines.append(
            f"| {r['method']}{mark} | {100 * r['test_error']:.2f}% | {r['fit_seconds']:.0f} |"
        )
    for name, error in PUBLISHED.items():
        lines.append(f"| {name}, published | {error:.2f}% | |")
    table = "\n".join(lines)
    semi_error = next(r["test_error"] for r in rows if r["method"] == "head-semi")
    verdict = "met" if semi_error < 0.05 else "NOT met"
    print("\n" + table)
    print(f"\ntarget < 5% test error, 100 labels: {verdict} (head-semi {100 * semi_error:.2f}%)")
    seconds = time.perf_counter() - began
    print(f"total {seconds / 60:.1f} min; load at end {[round(v, 2) for v in os.getloadavg()]}")
    record = {
        **info,
        "labeled_indices": picked.tolist(),
        "cv_accuracy": cv,
        "chosen": chosen,
        "rows": rows,
        "table": table,
        "total_seconds": seconds,
        "load_at_end": [round(v, 2) for v in os.getloadavg()],
    }
    name = f"results-l{args.latent_channels}-s{args.pretrain_steps}-c{args.steps}"
    out = args.work / f"{name}-semi{args.semi_steps}.json"
    out.write_text(json.dumps(record, indent=2))
    print(f"results in {out}")


if __name__ == "__main__":
    main()
