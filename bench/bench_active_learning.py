"""Benchmark: how many labels active learning (``emae suggest``'s rule) needs, by simulation.

On the ``emae sample-data`` labels (or any labels CSV), for each group-aware fold: the reference
is the macro-F1 on the test fold of a classifier trained on at most 25 random labels per class
of the training fold. Then, starting from 1 random label per class, rounds add ``--step`` labels
from the rest of the training fold (their labels hidden until chosen), chosen either

``active``  by :mod:`emae.classify.suggest` as ``emae suggest`` chooses by default: each pick
            for the class labeled least so far (the labels, plus the predicted probabilities
            of the round's picks), the candidate with the highest probability of that class x
            the current classifier's uncertainty x distance in its features from the labeled
            and chosen patches,
``active-anomaly`` by ``active`` with the anomaly rank of the autoencoder's score as a weight
            too (``emae suggest --anomaly``),
``anomaly`` by the rule before selection by class (``emae suggest --no-by-class --anomaly``):
            uncertainty x anomaly rank of the autoencoder's score x distance,
``half``    by ``anomaly`` with the anomaly rank weighing by ``(1 + rank) / 2`` (``floor=0.5``)
            instead of the rank itself,
``balanced`` by ``half`` times the expected rarity of the candidate's class among the labels
            so far (``emae.classify.suggest.class_balance``), or
``random``  at random (seeded),

and each round's classifier is scored on the test fold. Printed: per fold and strategy, the
labels needed to reach the reference macro-F1 (``-`` if never within the reference's label
count), and their share of that count; the goal of the active rule is 50% or less.

One draw of 25 random labels per class scores up to about 0.1 macro-F1 above or below another,
so one draw is a noisy reference. With ``--reference-draws D`` (default 3) the reference is
also the mean over ``D`` seeded draws (the first is the single draw), the expected score of 25
random labels per class; labels needed are printed for both references, from the same curves.

Usage::

    python bench/bench_active_learning.py [--data DIR] [--encoder RUN] [--method head]
        [--steps 200] [--step 11] [--folds 5] [--reference 25] [--reference-draws 3]
        [--strategies active,active-anomaly,anomaly,half,balanced,random] [--seed S]
        [--threads N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "runs" / "bench_anomaly_scores" / "sample-data"
ENCODER = REPO / "runs" / "bench_anomaly_scores" / "models" / "conv-ae-s2000"
STRATEGIES = ("active", "active-anomaly", "anomaly", "half", "balanced", "random")


def cpu_flags() -> str:
    """The CPU model and its flags that matter for torch's speed."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if "model name" in ln),
                 platform.processor())  # fmt: skip
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                      if ln.startswith("flags")), []))  # fmt: skip
    keep = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model} ({' '.join(keep) or 'no avx2'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="Sample data folder.")
    parser.add_argument("--encoder", type=Path, default=ENCODER, help="Autoencoder folder.")
    parser.add_argument("--method", default="head", help="head, head-finetune or cnn-residual.")
    parser.add_argument("--steps", type=int, default=200, help="Classifier training steps.")
    parser.add_argument("--step", type=int, default=11, help="Labels added per round.")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--reference", type=int, default=25, help="Random labels per class.")
    parser.add_argument(
        "--reference-draws", type=int, default=3, help="Random draws the reference averages."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", type=Path, help="Write the results as JSON here.")
    parser.add_argument(
        "--strategies", default=",".join(STRATEGIES), help="Which strategies to simulate."
    )
    args = parser.parse_args()
    strategies = args.strategies.split(",")
    if set(strategies) - set(STRATEGIES):
        parser.error(f"strategies are {', '.join(STRATEGIES)}")

    import torch
    from sklearn.metrics import f1_score

    from emae.anomaly.detector import AutoencoderDetector
    from emae.classify.config import FinetuneConfig
    from emae.classify.suggest import priority, select_batch
    from emae.commands.compare import make_estimator
    from emae.data.folds import budget_subset, make_folds
    from emae.data.labels import load_labels, read_labeled_patches

    if args.threads:
        torch.set_num_threads(args.threads)
    began = time.perf_counter()
    config = FinetuneConfig(steps=args.steps)
    residual = args.method == "cnn-residual"
    size = config.resolved(pretrained=residual).input_size(64)
    labeled = load_labels(args.data / "labels.csv", patch_size=64)
    patches, y = read_labeled_patches(labeled, 64, (size - 64) // 2)
    groups = [s.group for s in labeled.samples]
    classes = labeled.classes
    detector = AutoencoderDetector.from_bundle(args.encoder)
    c = (size - 64) // 2
    anomaly = detector.anomaly_score(patches[:, c : size - c, c : size - c])
    splits = make_folds(y, groups, args.folds, args.seed, classes=classes)

    def fit(idx: np.ndarray):
        est = make_estimator(args.method, encoder=args.encoder, config=config, classes=classes)
        return est.fit(patches[idx], y[idx])

    def score(est, test: np.ndarray) -> float:
        return float(f1_score(y[test], est.predict(patches[test]), average="macro"))

    print(f"machine   {cpu_flags()}, {torch.get_num_threads()} torch threads")
    print(f"command   {' '.join(sys.argv)}")
    print(f"labels    {len(y)} ({dict(zip(classes, np.bincount(y).tolist(), strict=True))})")
    results = []
    for fold, (train, test) in enumerate(splits):
        rng = np.random.default_rng(args.seed + fold)
        draws = [
            budget_subset(y, train, args.reference, args.seed + fold + 1000 * d)
            for d in range(args.reference_draws)
        ]
        reference_idx = draws[0]
        draw_f1 = [score(fit(idx), test) for idx in draws]
        targets = {"one draw": draw_f1[0], "mean of draws": float(np.mean(draw_f1))}
        target = max(targets.values())
        start = budget_subset(y, train, 1, args.seed + 100 + fold)
        row = {
            "fold": fold,
            "reference_labels": len(reference_idx),
            "reference_f1": draw_f1[0],
            "reference_draws_f1": draw_f1,
        }
        print(
            f"fold {fold} reference: {len(reference_idx)} labels; macro-F1 of "
            f"{len(draws)} draws " + ", ".join(f"{f:.3f}" for f in draw_f1),
            flush=True,
        )
        for strategy in strategies:
            chosen = list(start)
            curve = []
            while True:
                idx = np.array(chosen)
                est = fit(idx)
                f1 = score(est, test)
                curve.append((len(idx), f1))
                rest = np.setdiff1d(train, idx)
                if f1 >= target or len(idx) >= len(reference_idx) or len(rest) == 0:
                    break
                k = min(args.step, len(rest))
                if strategy == "random":
                    chosen += rng.choice(rest, k, replace=False).tolist()
                    continue
                fitted = est.fitted_
                proba, vectors = fitted.proba_and_features(patches[rest])
                counts = np.bincount(y[idx], minlength=len(classes))  # labels per class so far
                labeled_vectors = fitted.features(patches[idx])
                if strategy.startswith("active"):
                    scores = anomaly[rest] if strategy == "active-anomaly" else None
                    weights = priority(proba, scores)
                    picks, _ = select_batch(
                        vectors, weights, k, labeled_vectors, proba=proba, counts=counts
                    )
                else:
                    balance = counts if strategy == "balanced" else None
                    floor = 0.0 if strategy == "anomaly" else 0.5
                    weights = priority(proba, anomaly[rest], balance, floor=floor)
                    picks, _ = select_batch(vectors, weights, k, labeled_vectors)
                chosen += rest[picks].tolist()
            needed = {
                name: next((n for n, f in curve if f >= value), None)
                for name, value in targets.items()
            }
            composition = np.bincount(y[np.array(chosen)], minlength=len(classes)).tolist()
            row[strategy] = {"curve": curve, "labels_needed": needed, "classes": composition}
            reached = ", ".join(
                f"{name} {targets[name]:.3f} with {'-' if n is None else n} labels"
                + ("" if n is None else f" ({n / len(reference_idx):.0%})")
                for name, n in needed.items()
            )
            print(
                f"fold {fold} {strategy:14s}: reached {reached}; labels per class at the end "
                f"{composition}; curve " + " ".join(f"{n}:{f:.3f}" for n, f in curve),
                flush=True,
            )
        results.append(row)
    for name in ("one draw", "mean of draws"):
        for strategy in strategies:
            shares = [
                r[strategy]["labels_needed"][name] / r["reference_labels"]
                if r[strategy]["labels_needed"][name] is not None
                else 1.0
                for r in results
            ]
            print(
                f"reference {name}, {strategy:14s}: labels needed / reference labels, mean over "
                f"folds {np.mean(shares):.0%} (per fold {', '.join(f'{s:.0%}' for s in shares)}; "
                "a fold that never reached the reference within its budget counts as 100%)"
            )
    print(f"total {(time.perf_counter() - began) / 60:.1f} min")
    if args.out:
        args.out.write_text(json.dumps({"args": sys.argv, "results": results}, indent=2))


if __name__ == "__main__":
    main()
