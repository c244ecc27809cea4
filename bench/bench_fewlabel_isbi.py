"""Benchmark: few-label artifact classification on real serial-section TEM (ISBI 2012).

The autoencoder is pretrained on the 30 ``train`` slices of the shared ISBI 2012 data (the
default :class:`~emae.train.config.PretrainConfig`). The labels are drawn on the other 30
slices (``test``): on each, ``--per-slice`` artifacts of random kinds
(:func:`emae.synth.sample_data.annotate_section`, the sample data's generator, so every kind
has a known centre) and ``--clean`` clean patch centres, grouped by slice. Then
:func:`emae.commands.compare.compare` runs the methods on the same group-aware folds (test
folds are held-out slices) and nested label budgets, and the script prints macro-F1 per method
and budget, and fold by fold how far each method that uses the autoencoder is from the CNN
from scratch.

Usage::

    python bench/bench_fewlabel_isbi.py [--data ../shared/data] [--work runs/bench/fewlabel_isbi]
        [--methods cnn-residual,head,cnn-scratch,svm-features] [--budgets 5,10,all]
        [--per-slice 8] [--clean 8] [--steps 200] [--pretrain-steps 2000] [--threads N]

Without the shared data the script says so and stops. The drawn slices, the labels CSV, the
autoencoder and the comparison live in ``--work`` and are reused when present.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EMAE_DATA", REPO.parent / "shared" / "data"))


def slices(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"), key=lambda p: int(p.stem))


def draw_labels(test: list[Path], work: Path, per_slice: int, clean: int, seed: int) -> Path:
    """Artifacts drawn on the test slices, with a labels CSV; the CSV's path."""
    from PIL import Image

    from emae.data.labels import LabeledSample, write_labels
    from emae.io.writers import write_tiff
    from emae.synth.artifacts import ARTIFACT_TYPES, as_unit_float
    from emae.synth.sample_data import annotate_section

    csv = work / "labels.csv"
    if csv.is_file():
        return csv
    rng = np.random.default_rng(seed)
    drawn, samples = [], []
    # Every kind equally often over the slices, in a seeded order.
    kinds = [ARTIFACT_TYPES[i % len(ARTIFACT_TYPES)] for i in range(per_slice * len(test))]
    rng.shuffle(kinds)
    for z, path in enumerate(test):
        image = as_unit_float(np.asarray(Image.open(path)))
        mine = kinds[z * per_slice : (z + 1) * per_slice]
        section, labels = annotate_section(image, mine, clean, rng, margin=48)
        drawn.append(np.clip(np.round(section * 255), 0, 255).astype(np.uint8))
        samples += [
            LabeledSample("slices.tif", x=x, y=y, z=z, label=k, group=f"slice{z:02d}")
            for k, y, x in labels
        ]
    write_tiff(work / "slices.tif", np.stack(drawn), axes="ZYX")
    write_labels(csv, samples)
    return csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench" / "fewlabel_isbi")
    parser.add_argument("--methods", default="cnn-residual,head,cnn-scratch,svm-features")
    parser.add_argument("--budgets", default="5,10,all")
    parser.add_argument("--per-slice", type=int, default=8, help="Artifacts drawn per slice.")
    parser.add_argument("--clean", type=int, default=8, help="Clean centres per slice.")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200, help="Classifier steps per fit.")
    parser.add_argument("--pretrain-steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    root = args.data / "isbi2012"
    if not (root / "train" / "image").is_dir():
        raise SystemExit(f"{root}: ISBI 2012 data not found (see ../shared/data/README.md)")
    import torch

    from emae.classify.config import FinetuneConfig
    from emae.commands.compare import compare
    from emae.commands.pretrain import pretrain
    from emae.data.folds import parse_budgets
    from emae.train.config import PretrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    began = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    csv = draw_labels(slices(root / "test"), args.work, args.per_slice, args.clean, args.seed)
    encoder = args.work / "encoder"
    if not (encoder / "config.json").is_file():
        start = time.perf_counter()
        pretrain(
            [str(p) for p in slices(root / "train" / "image")],
            encoder,
            PretrainConfig(steps=args.pretrain_steps, seed=args.seed),
            overwrite=True,
            progress=False,
        )
        print(f"pretrained {encoder} in {time.perf_counter() - start:.0f} s")
    methods = args.methods.split(",")
    out = args.work / f"compare-s{args.steps}-seed{args.seed}"
    summary = compare(
        csv,
        out,
        encoder=encoder,
        methods=methods,
        folds=args.folds,
        budgets=parse_budgets(args.budgets),
        config=FinetuneConfig(steps=args.steps),
        seed=args.seed,
        progress=True,
    )
    print(f"command   {' '.join(sys.argv)}")
    print(f"labels    {summary['class_counts']}")
    budgets = list(next(iter(summary["methods"].values())))
    print("| method | " + " | ".join(f"{b} / class" for b in budgets) + " |")
    for method, by in summary["methods"].items():
        cells = [
            f"{by[b]['macro_f1']['mean']:.3f} ± {by[b]['macro_f1']['std']:.3f}" for b in budgets
        ]
        print(f"| {method} | " + " | ".join(cells) + " |")
    from emae.report.comparison import pretraining_verdicts

    for title, text in pretraining_verdicts(out, summary["methods"], budgets):
        print(f"{title}: {text}")
    per_fold = {}
    for path in sorted((out / "results").glob("*.json")):
        row = json.loads(path.read_text())
        per_fold.setdefault((row["method"], row["budget"]), []).append(row["seconds"])
    print(
        "mean seconds per fit: "
        + ", ".join(f"{m} {b}: {np.mean(v):.0f}" for (m, b), v in sorted(per_fold.items()))
    )
    print(f"total {(time.perf_counter() - began) / 60:.1f} min")


if __name__ == "__main__":
    main()
