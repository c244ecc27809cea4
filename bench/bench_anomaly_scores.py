"""Benchmark: pixel AUROC of every model and anomaly score on the ``emae sample-data`` test set.

Writes the default sample dataset (or uses ``--data``), trains each model of ``--models`` with
:func:`emae.commands.pretrain.pretrain` on ``unlabeled/volume.tif`` (the default
:class:`~emae.train.config.PretrainConfig`, only ``--steps`` changed), fits an
:class:`~emae.anomaly.detector.AutoencoderDetector` for every score of
:data:`emae.anomaly.scores.SCORES`
with :func:`emae.train.autoencoder.fit_detector`, and the non-learned
:class:`~emae.anomaly.local_stats.LocalStatisticsDetector` on the same 512 random patches. Each
detector's anomaly maps of all test sections are scored against the masks (mask > 0 =
artifact): pixel AUROC and average precision overall, and AUROC of each artifact class against
the clean pixels.

Usage::

    python bench/bench_anomaly_scores.py [--models conv-ae,denoising-ae,vae,beta-vae,pca]
        [--steps N] [--data DIR] [--work runs/bench_anomaly_scores] [--out FILE]

A model may carry its own number of steps, ``--models conv-ae,vae:500``; ``--steps`` (default:
the config's 2000) applies to the others. Trained models are kept in
``WORK/models/<model>-s<steps>`` with their scores (``.scores.json``) and reused by later runs
(delete them, or pass ``--rescore``, to recompute); an interrupted training resumes. Prints the
training times, the machine load, and a Markdown table; writes everything as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from emae.anomaly.local_stats import LocalStatisticsDetector
from emae.anomaly.pixel_metrics import pixel_metrics
from emae.anomaly.scores import SCORES
from emae.commands.pretrain import pretrain
from emae.data.sampling import sample_patches
from emae.folders.autoencoder import load_bundle
from emae.io import open_image
from emae.models import available_models
from emae.synth.sample_data import write_sample_data
from emae.train.autoencoder import SCORING_SEED_OFFSET, fit_detector
from emae.train.config import PretrainConfig

DEFAULT_MODELS = "conv-ae,denoising-ae,vae,beta-vae,pca"
DEFAULT_WORK = Path("runs/bench_anomaly_scores")


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def load_test_set(data: Path) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Test sections ``(Z, H, W)`` uint8, their class masks ``(Z, H, W)`` and the class names."""
    images, masks = open_image(data / "test" / "images"), open_image(data / "test" / "masks")
    x = np.stack([images.section(z) for z in range(images.n_sections)])
    y = np.stack([masks.section(z) for z in range(masks.n_sections)])
    classes = {int(k): v for k, v in json.loads((data / "classes.json").read_text()).items()}
    return x, y, classes


def evaluate(maps: np.ndarray, mask: np.ndarray, classes: dict[int, str]) -> dict[str, Any]:
    """Pixel AUROC, AP and AUPRO of ``maps`` against ``mask > 0``, and AUROC per artifact class."""
    s, m = maps.ravel().astype(np.float64), mask.ravel()
    overall = pixel_metrics(maps, mask > 0)
    result: dict[str, Any] = {
        "auroc": overall["auroc"],
        "ap": overall["ap"],
        "aupro": overall["aupro"],
        "auroc_per_class": {},
    }
    clean = m == 0
    for index, name in classes.items():
        if index == 0:
            continue
        inside = m == index
        if not inside.any():
            result["auroc_per_class"][name] = None
            continue
        keep = clean | inside
        result["auroc_per_class"][name] = float(roc_auc_score(inside[keep], s[keep]))
    return result


def train(model: str, volume: Path, work: Path, steps: int | None) -> dict[str, Any]:
    """Train (or reuse) one model folder; its timing record."""
    config = (
        PretrainConfig(model=model) if steps is None else PretrainConfig(model=model, steps=steps)
    )
    out = work / "models" / f"{model}-s{config.steps}"
    record_path = out.with_name(out.name + ".bench.json")
    if (out / "config.json").is_file() and record_path.is_file():
        record = json.loads(record_path.read_text())
        record["cached"] = True
        print(f"{model}: reusing {out} (trained in {record['seconds']:.0f} s)", flush=True)
        return record
    out.parent.mkdir(parents=True, exist_ok=True)
    resume = (out.with_name(out.name + ".training") / "config.json").is_file()
    load_start = os.getloadavg()
    began = time.perf_counter()
    summary = pretrain([volume], out, config, resume=resume, progress=False)
    wall = time.perf_counter() - began
    record = {
        "model": model,
        "folder": str(out),
        "steps": config.steps,
        "batch_size": config.batch_size,
        "patch_size": config.patch_size,
        "seconds": summary["seconds"],
        "wall_seconds": wall,
        "patches_per_s": summary["samples_per_s"],
        "best_val": summary["best_val"],
        "device": summary["device"],
        "precision": summary["precision"],
        "resumed": resume,
        "loadavg_start": list(load_start),
        "loadavg_end": list(os.getloadavg()),
        "torch_threads": torch.get_num_threads(),
    }
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    record["cached"] = False
    print(
        f"{model}: trained {config.steps} steps in {summary['seconds']:.0f} s "
        f"(wall {wall:.0f} s incl. normalization and scoring), "
        f"{summary['samples_per_s']:.0f} patches/s, load {load_start[0]:.2f} -> "
        f"{record['loadavg_end'][0]:.2f}",
        flush=True,
    )
    return record


def score_rows(
    record: dict[str, Any], volume: Path, x: np.ndarray, mask: np.ndarray, classes: dict
) -> list[dict[str, Any]]:
    """One row per score of a trained model."""
    bundle = load_bundle(record["folder"])
    config = PretrainConfig(**bundle.config)
    rows = []
    for score in SCORES:
        began = time.perf_counter()
        detector = fit_detector(
            bundle.model,
            bundle.normalizer,
            [str(volume)],
            config.model_copy(update={"score": score}),
        )
        maps = detector.anomaly_map(x)
        rows.append(
            {
                "model": record["model"],
                "steps": record["steps"],
                "score": score,
                **evaluate(maps, mask, classes),
                "seconds": time.perf_counter() - began,
            }
        )
        print(f"  {record['model']} / {score}: AUROC {rows[-1]['auroc']:.3f}", flush=True)
    return rows


def local_stats_row(
    volume: Path, x: np.ndarray, mask: np.ndarray, classes: dict, n_patches: int
) -> dict[str, Any]:
    """The non-learned baseline on the same random patches the learned detectors are fitted on."""
    config = PretrainConfig()
    began = time.perf_counter()
    _, patches = sample_patches(
        [open_image(volume)], n_patches, config.patch_size, seed=config.seed + SCORING_SEED_OFFSET
    )
    detector = LocalStatisticsDetector(seed=config.seed).fit(patches)
    maps = detector.anomaly_map(x)
    row = {
        "model": "local-stats",
        "steps": 0,
        "score": f"mean+std, sigma {detector.sigma:g}",
        **evaluate(maps, mask, classes),
        "seconds": time.perf_counter() - began,
    }
    print(f"  local statistics: AUROC {row['auroc']:.3f}", flush=True)
    return row


def parse_models(spec: str, steps: int | None) -> list[tuple[str, int | None]]:
    """``"conv-ae,vae:500"`` as ``[("conv-ae", steps), ("vae", 500)]``."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, n = item.partition(":")
        if name not in available_models():
            raise SystemExit(f"unknown model {name!r}; available: {', '.join(available_models())}")
        out.append((name, int(n) if n else steps))
    return out


def markdown(rows: list[dict[str, Any]], classes: dict[int, str]) -> str:
    names = [n for i, n in sorted(classes.items()) if i]
    lines = [
        "| model | steps | score | AUROC | AP | AUPRO | " + " | ".join(names) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(names),
    ]
    for r in rows:
        per = [r["auroc_per_class"][n] for n in names]
        cells = [r["model"], str(r["steps"] or "-"), r["score"], f"{r['auroc']:.3f}"]
        aupro = f"{r['aupro']:.3f}" if "aupro" in r else "n/a"
        cells += [f"{r['ap']:.3f}", aupro, *("n/a" if v is None else f"{v:.3f}" for v in per)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS, help="Models, `name[:steps]`.")
    parser.add_argument("--steps", type=int, help="Training steps (default: the config's).")
    parser.add_argument("--data", type=Path, help="An existing `emae sample-data` folder.")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="Data and model cache.")
    parser.add_argument(
        "--out", type=Path, help="JSON results (default: WORK/anomaly_scores.json)."
    )
    parser.add_argument("--local-patches", type=int, default=512, help="Patches for local-stats.")
    parser.add_argument("--rescore", action="store_true", help="Recompute cached AUROCs.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    models = parse_models(args.models, args.steps)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    started = datetime.datetime.now().astimezone()
    load_start = os.getloadavg()

    args.work.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        data = args.work / "sample-data"
        if not (data / "manifest.json").is_file():
            began = time.perf_counter()
            write_sample_data(data)
            print(f"wrote sample data to {data} in {time.perf_counter() - began:.0f} s")
    volume = data / "unlabeled" / "volume.tif"
    x, mask, classes = load_test_set(data)
    pixels = {name: int((mask == i).sum()) for i, name in classes.items()}
    print(f"test set: {x.shape} sections, pixels per class {pixels}", flush=True)

    trainings, rows = [], []
    for model, steps in models:
        record = train(model, volume, args.work, steps)
        trainings.append(record)
        cached = Path(record["folder"] + ".scores.json")
        if cached.is_file() and not args.rescore:
            rows += json.loads(cached.read_text())
            print(f"  {model}: reusing the scores in {cached}", flush=True)
            continue
        rows += (new := score_rows(record, volume, x, mask, classes))
        cached.write_text(json.dumps(new, indent=2) + "\n")
    rows.append(local_stats_row(volume, x, mask, classes, args.local_patches))
    load_end = os.getloadavg()

    machine = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    print()
    print("| model | steps | training s | patches/s | best val loss | load avg start -> end |")
    print("|---|---|---|---|---|---|")
    for t in trainings:
        print(
            f"| {t['model']} | {t['steps']} | {t['seconds']:.0f} | {t['patches_per_s']:.0f} | "
            f"{t['best_val']:.5f} | {t['loadavg_start'][0]:.2f} -> {t['loadavg_end'][0]:.2f}"
            f"{' (cached)' if t['cached'] else ''} |"
        )
    print()
    print(markdown(rows, classes))
    print()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}")
    print(
        f"date: {started:%Y-%m-%d %H:%M %Z}; load average (1 min) {load_start[0]:.2f} at start, "
        f"{load_end[0]:.2f} at end"
    )
    print(f"command: {command}")

    out = args.out or args.work / "anomaly_scores.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "command": command,
        "date": started.isoformat(timespec="seconds"),
        "machine": machine,
        "loadavg_start": list(load_start),
        "loadavg_end": list(load_end),
        "data": str(data),
        "test_shape": list(x.shape),
        "test_pixels_per_class": pixels,
        "training": trainings,
        "rows": rows,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
