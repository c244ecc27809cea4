"""Benchmark: the discriminative score on real EM (ISBI 2012), with artifact kinds held out.

A segmenter trained on drawn artifacts (:class:`emae.anomaly.discriminative.DiscriminativeHead`)
is evaluated on the same drawn artifacts as ``bench_isbi_artifacts.py`` (same held-out slices,
same seeds, same masks). Finding a kind it was trained on tests the drawing as much as the
method, so the kinds are split into groups of similar ones (``--splits``); for each group a
head is trained on every *other* kind, and the group's kinds are scored by that head only.
The "held out" column therefore holds, for every kind, the figure of a head that never saw
it, nor a kind like it. A head trained on all kinds (what ``emae pretrain --score
discriminative`` gives a user) is reported beside it, as "all kinds (seen)".

Each head is measured as the score gives it (the default ``combine=True``: the head's logit
plus the autoencoder's typicality map, each standardized on normal patches kept out of the
head's training, "head + typicality") and alone (``combine=False``, the same fitted head,
"head").

Every figure is the pixel AUROC, AP and AUPRO of
:func:`emae.anomaly.pixel_metrics.pixel_metrics`, per kind, pooled ("overall") and averaged
("mean"), with "oracle |change|" (the absolute difference from the clean slice: how far any
map could go, since part of a drawn mask can be left unchanged). Pooling the held-out column
mixes maps of five heads, each standardized on its own normal patches.

Usage::

    python bench/bench_isbi_discriminative.py [--data DATA] [--model runs/bench/isbi/model]
        [--out runs/bench/isbi-discriminative] [--steps 800] [--crop 128] [--threads N]
        [--splits ring+horseshoe,scratch+seam,...] [--no-all] [--channels 16,32,64,128]

``--model`` is the conv-ae folder that ``bench_isbi_artifacts.py`` trains (the default conv-ae
on ISBI slices train 0-24 and test 0-24).
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

from bench_isbi_artifacts import REPO, corrupted_set, default_data, metrics_by_kind, split
from emae.anomaly.detector import AutoencoderDetector
from emae.data.sampling import sample_patches
from emae.folders.autoencoder import load_bundle
from emae.io import open_image
from emae.synth.artifacts import ARTIFACT_TYPES
from emae.train.autoencoder import SCORING_SEED_OFFSET
from emae.train.config import PretrainConfig

SPLITS = "ring+horseshoe,scratch+seam,fold+stripes,charging+defocus,dust+tile"


def evaluate(map_fn, sets: dict, kinds: list[str]) -> tuple[dict, float]:
    """Maps of ``kinds``' corrupted sets, and the megapixels per second."""
    began = time.perf_counter()
    maps = {k: map_fn(sets[k][0]) for k in kinds}
    pixels = sum(sets[k][0].size for k in kinds)
    return maps, pixels / (time.perf_counter() - began) / 1e6


def both_maps(detector: AutoencoderDetector, sets: dict, kinds: list[str]) -> tuple[dict, dict]:
    """The score's maps (segmenter + typicality, the default) and the segmenter's alone
    (``combine=False`` on the same fitted head), each with its megapixels per second."""
    combined, rate = evaluate(detector.anomaly_map, sets, kinds)
    detector.stats_.combine = False
    alone, rate_alone = evaluate(detector.anomaly_map, sets, kinds)
    detector.stats_.combine = True
    return {"head + typicality": combined, "head": alone}, {
        "head + typicality": rate,
        "head": rate_alone,
    }


def fmt(metrics: dict) -> str:
    return f"AUROC {metrics['auroc']:.3f}, AP {metrics['ap']:.3f}, AUPRO {metrics['aupro']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--model", type=Path, default=REPO / "runs" / "bench" / "isbi" / "model")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "isbi-discriminative")
    parser.add_argument("--steps", type=int, default=800, help="Training steps of each head.")
    parser.add_argument("--crop", type=int, default=128, help="Training crop side, pixels.")
    parser.add_argument("--holdout", type=int, default=5)
    parser.add_argument("--per-slice", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--splits", default=SPLITS, help="Groups of kinds held out together.")
    parser.add_argument("--no-all", action="store_true", help="Skip the head on all kinds.")
    parser.add_argument("--channels", default="16,32,64,128", help="The head's U-Net channels.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    groups = [g.split("+") for g in args.splits.split(",") if g]
    flat = [k for g in groups for k in g]
    if sorted(flat) != sorted(set(flat)) or set(flat) - set(ARTIFACT_TYPES):
        raise SystemExit(f"--splits must name distinct kinds of {', '.join(ARTIFACT_TYPES)}")
    args.out.mkdir(parents=True, exist_ok=True)

    train_paths, held_paths = split(args.data, args.holdout)
    slices = [np.asarray(PILImage.open(p)) for p in held_paths]
    sets = {k: corrupted_set(slices, k, args.per_slice, args.seed) for k in ARTIFACT_TYPES}
    masks = {k: m for k, (_, m) in sets.items()}
    bundle = load_bundle(args.model)
    config = PretrainConfig()
    images = [open_image(str(p)) for p in train_paths]
    # The patches fit_detector draws for the discriminative score (crop-sized).
    _, patches = sample_patches(
        images, config.score_patches, args.crop, seed=config.seed + SCORING_SEED_OFFSET
    )

    # The ceiling of any map: how much each pixel was changed by the drawing. Where a dark
    # scratch crosses a dark membrane, masked pixels barely change, and no map can find them.
    clean = np.stack([s.astype(np.float32) for s in slices])
    oracle = {k: np.abs(images - clean) for k, (images, _) in sets.items()}
    results_oracle = metrics_by_kind(oracle, masks)
    print(f"oracle |change|: {fmt(results_oracle['overall'])}", flush=True)

    typicality = AutoencoderDetector.from_bundle(args.model, batch_size=4)
    typ_maps, typ_rate = evaluate(typicality.anomaly_map, sets, list(ARTIFACT_TYPES))
    results = {
        "oracle |change|": results_oracle,
        "typicality (bundle)": metrics_by_kind(typ_maps, masks),
    }
    rates = {"typicality (bundle)": typ_rate}
    print(f"typicality: {fmt(results['typicality (bundle)']['overall'])}", flush=True)

    def train(kinds: tuple[str, ...]) -> tuple[AutoencoderDetector, float]:
        began = time.perf_counter()
        detector = AutoencoderDetector(
            bundle.model,
            bundle.normalizer,
            score="discriminative",
            batch_size=4,
            seed=config.seed,
            precision="auto",
            score_params={
                "kinds": kinds,
                "steps": args.steps,
                "crop": args.crop,
                "channels": tuple(int(c) for c in args.channels.split(",")),
            },
        ).fit(patches)
        return detector, time.perf_counter() - began

    held: dict[str, dict] = {"head": {}, "head + typicality": {}}
    fit_seconds, losses = {}, {}
    for group in groups:
        name = "-".join(group)
        kinds = tuple(k for k in ARTIFACT_TYPES if k not in group)
        detector, fit_seconds[name] = train(kinds)
        losses[name] = float(np.mean(detector.stats_.losses_[-100:]))
        maps, _ = both_maps(detector, sets, group)
        for variant, found in maps.items():
            held[variant].update(found)
        for k in group:
            line = ", ".join(
                f"{v} {metrics_by_kind({k: m[k]}, {k: masks[k]})[k]['auroc']:.3f}"
                for v, m in held.items()
            )
            print(f"held out {k} ({fit_seconds[name]:.0f} s fit): {line}", flush=True)
    for variant, maps in held.items():
        order = {k: maps[k] for k in ARTIFACT_TYPES if k in maps}
        if order:  # --splits "" measures the head on all kinds only
            results[f"{variant}, kind held out"] = metrics_by_kind(order, masks)

    if not args.no_all:
        detector, fit_seconds["all"] = train(ARTIFACT_TYPES)
        losses["all"] = float(np.mean(detector.stats_.losses_[-100:]))
        maps, found_rates = both_maps(detector, sets, list(ARTIFACT_TYPES))
        for variant in ("head + typicality", "head"):
            results[f"{variant}, all kinds (seen)"] = metrics_by_kind(maps[variant], masks)
            rates[f"{variant}, all kinds (seen)"] = found_rates[variant]
        print(f"all kinds: {fmt(results['head + typicality, all kinds (seen)']['overall'])}")

    for metric in ("auroc", "ap", "aupro"):
        names = list(results)
        print(f"\n| {metric} | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for k in (*ARTIFACT_TYPES, "overall", "mean"):
            row = " | ".join(f"{results[n][k][metric]:.3f}" for n in names)
            print(f"| {k} | {row} |")
    print(f"\nfit seconds: {fit_seconds}\nmaps MP/s: {rates}\nfinal losses: {losses}")
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "model": str(args.model),
        "splits": groups,
        "steps": args.steps,
        "crop": args.crop,
        "channels": args.channels,
        "metrics": results,
        "fit_seconds": fit_seconds,
        "map_megapixels_per_s": rates,
        "final_losses": losses,
    }
    (args.out / "results.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
