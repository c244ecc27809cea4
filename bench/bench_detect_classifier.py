"""Benchmark: a classifier's class maps in ``emae detect``: cost, precision, the code before.

With a classifier folder (``--model``, from ``emae finetune``; the autoencoder it was fine-tuned
from where its training summary says) and the sample data (``--data``), measures in one run:

1. ``tiles``: the two halves of detect's mapper on one ``--tile`` x ``--tile`` tile of sample
   sections: the autoencoder's anomaly map and the classifier's class maps, each in fp32 and in
   ``--precision``, alternating in ``--rounds`` rounds (best of each).
2. ``agreement``: the class maps of the 8 test sections in fp32 and in ``--precision``: the
   largest probability difference, the share of pixels whose most probable class is the same,
   and for each precision the pixel AUROC of every artifact class present (its probability
   against the section's mask of that class) and of "any artifact" (1 - p(clean)).
3. ``detect``: ``emae detect`` with the classifier on a generated ``"ZYX"`` uint8 volume
   (``--volume Z SIDE``, tiled from the sample sections), one process, ``--precision``.

Parts 1 and 3 run each measurement in a fresh subprocess; with ``--baseline-src DIR`` (the
``src`` of another checkout, e.g. a ``git worktree`` of an older commit) also on that code,
alternating with this one, so the ratio comes from one run on one machine. Older code that
does not know the classifier's precision maps classes in fp32 whatever ``--precision`` says,
as it did.

Usage::

    python bench/bench_detect_classifier.py --model runs/clf --data runs/sample-data \\
        [--baseline-src /tmp/emae-old/src] [--parts tiles,agreement,detect] [--work DIR]

Prints each figure as it is measured and a JSON summary (``WORK/detect-classifier.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench_detect import _log, _volume


def _tile(data: Path, side: int) -> np.ndarray:
    """One ``(1, side, side)`` uint8 tile of the unlabeled sample sections."""
    from emae.io import open_image

    section = np.asarray(open_image(str(data / "unlabeled" / "volume.tif"))[0])
    reps = -(-side // section.shape[0]), -(-side // section.shape[1])
    return np.tile(section, reps)[None, :side, :side].copy()


def _class_maps(mapper: Any, tiles: np.ndarray, precision: str) -> np.ndarray:
    """The classifier's maps as detect computes them (older code: fp32, no precision)."""
    if hasattr(mapper, "precision"):
        return mapper.classifier.probability_maps(tiles, precision)
    return mapper.classifier.probability_maps(tiles)


def time_tiles(
    model: str, data: Path, side: int, precision: str, repeats: int = 2
) -> dict[str, Any]:
    """Best seconds of each half of the mapper on one tile, per precision, of ``repeats``
    (the first pays for the kernels' creation)."""
    from emae.commands.detect import _mapper

    tiles = _tile(data, side)
    best: dict[str, float] = {}
    for _ in range(repeats):
        for p in ("fp32", precision):
            mapper, _ = _mapper(model, p)
            start = time.perf_counter()
            mapper.detector.anomaly_map(tiles)
            middle = time.perf_counter()
            _class_maps(mapper, tiles, p)
            end = time.perf_counter()
            for key, seconds in (
                (f"anomaly_{p}_s", middle - start),
                (f"classes_{p}_s", end - middle),
            ):
                best[key] = min(best.get(key, np.inf), seconds)
    best["megapixels"] = tiles.size / 1e6
    return best


def run_detect(model: str, source: Path, out: Path, precision: str) -> dict[str, Any]:
    """``emae detect`` in this process (synchronous scheduler) on a fresh output."""
    from emae.commands.detect import detect

    shutil.rmtree(out, ignore_errors=True)
    for suffix in ("_detections.csv", "_qc.csv", "_qc.png"):
        out.with_name(out.stem + suffix).unlink(missing_ok=True)
    start = time.perf_counter()
    summary = detect(
        model, str(source), out, precision=precision, scheduler="synchronous", progress=False
    )
    return {
        "seconds": summary["seconds"],
        "total_seconds": time.perf_counter() - start,
        "megapixels_per_s": summary["megapixels_per_s"],
        "detections": summary["detections"],
    }


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One measurement: ``{"kind": "tiles"|"detect", ...}`` -> its figures."""
    if job["kind"] == "tiles":
        return time_tiles(job["model"], Path(job["data"]), job["side"], job["precision"])
    return run_detect(job["model"], Path(job["source"]), Path(job["out"]), job["precision"])


def _on(code: str, args: argparse.Namespace, job: dict[str, Any]) -> dict[str, Any]:
    """``job`` run in a fresh subprocess on this checkout's code (``code="now"``) or on
    ``--baseline-src``, so that both pay the same start-up."""
    import emae

    src = Path(emae.__file__).resolve().parents[1] if code == "now" else args.baseline_src
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, __file__, "--job", json.dumps(job), "--threads", str(args.threads)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"the {code} code failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _codes(args: argparse.Namespace) -> list[str]:
    return ["now", "before"] if args.baseline_src else ["now"]


def part_tiles(args: argparse.Namespace, results: dict[str, Any]) -> None:
    job = {
        "kind": "tiles",
        "model": str(args.model),
        "data": str(args.data),
        "side": args.tile,
        "precision": args.precision,
    }
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for code in _codes(args):
            for key, value in _on(code, args, job).items():
                mine = best.setdefault(code, {})
                mine[key] = min(mine.get(key, np.inf), value)
    for code, values in best.items():
        mp = values["megapixels"]
        rates = {
            k.replace("_s", "_mp_per_s"): mp / v for k, v in values.items() if k.endswith("_s")
        }
        _log(results, "tiles", **{code: {**values, **rates}})
    if "before" in best:
        now, before = best["now"], best["before"]
        p = args.precision
        _log(
            results,
            "tiles",
            classes_speedup=before[f"classes_{p}_s"] / now[f"classes_{p}_s"],
            classes_fp32_speedup=before["classes_fp32_s"] / now["classes_fp32_s"],
            mapper_speedup=(before[f"anomaly_{p}_s"] + before[f"classes_{p}_s"])
            / (now[f"anomaly_{p}_s"] + now[f"classes_{p}_s"]),
        )


def part_agreement(args: argparse.Namespace, results: dict[str, Any]) -> None:
    from sklearn.metrics import roc_auc_score

    from emae.commands.detect import _mapper
    from emae.io import open_image

    images = np.asarray(open_image(str(args.data / "test" / "images"))[:])
    masks = np.asarray(open_image(str(args.data / "test" / "masks"))[:])
    names = json.loads((args.data / "classes.json").read_text())
    index = (
        {name: int(k) for k, name in names.items()}
        if isinstance(names, dict)
        else {name: k for k, name in enumerate(names)}
    )
    maps = {}
    for p in ("fp32", args.precision):
        mapper, _ = _mapper(str(args.model), p)
        maps[p] = np.concatenate([_class_maps(mapper, s[None], p) for s in images])
    exact, fast = maps["fp32"], maps[args.precision]
    classes = list(mapper.classes)
    values: dict[str, Any] = {
        "largest_difference": float(np.abs(fast - exact).max()),
        "same_class_share": float((fast.argmax(1) == exact.argmax(1)).mean()),
    }
    clean = classes.index(mapper.clean_class)
    for p, m in maps.items():
        auroc = {"any artifact": roc_auc_score((masks > 0).ravel(), 1 - m[:, clean].ravel())}
        for k, name in enumerate(classes):
            truth = masks == index.get(name, -1)
            if k != clean and truth.any():
                auroc[name] = roc_auc_score(truth.ravel(), m[:, k].ravel())
        values[f"auroc_{p}"] = {k: round(float(v), 4) for k, v in auroc.items()}
    _log(results, "agreement", **values)


def part_detect(args: argparse.Namespace, results: dict[str, Any]) -> None:
    z, side = args.volume
    source = _volume(args.work / f"volume-{z}x{side}.zarr", args.data, (z, side, side), 1024)
    for _ in range(args.rounds_detect):
        for code in _codes(args):
            job = {
                "kind": "detect",
                "model": str(args.model),
                "source": str(source),
                "out": str(args.work / f"detect-{code}.zarr"),
                "precision": args.precision,
            }
            _log(results, "detect", **{code: _on(code, args, job)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_detect_classifier"))
    parser.add_argument("--parts", default="tiles,agreement,detect")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--tile", type=int, default=1152)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rounds-detect", type=int, default=1)
    parser.add_argument("--volume", type=int, nargs=2, default=(4, 2048), metavar=("Z", "SIDE"))
    parser.add_argument("--baseline-src", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.job:  # one job of a baseline subprocess: its JSON on the last line
        print(json.dumps(run_job(json.loads(args.job)), default=float))
        return
    if args.model is None or args.data is None:
        parser.error("--model and --data are needed")
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "model": str(args.model),
        "precision": args.precision,
        "threads": args.threads,
        "baseline_src": str(args.baseline_src) if args.baseline_src else None,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    parts = {"tiles": part_tiles, "agreement": part_agreement, "detect": part_detect}
    for name in args.parts.split(","):
        parts[name](args, results)
    path = args.work / "detect-classifier.json"
    path.write_text(json.dumps(results, indent=2, default=float))
    print(json.dumps(results, default=float))


if __name__ == "__main__":
    main()
