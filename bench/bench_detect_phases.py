"""Benchmark: the phases of ``emae detect`` after the chunks, on 1 and 2 workers.

On a generated ``Z x SIDE x SIDE`` uint8 zarr volume (synthetic tissue, chunks of 1024), with
an autoencoder folder (``--model``; made here when missing: the default ``conv-ae`` trained for
``--steps`` steps on the volume, whose forward pass costs what the default model's does
whatever the training length), runs ``emae detect`` (1024-pixel chunks, one tile per chunk,
bf16) in a subprocess per configuration, one at a time:

- this checkout, on a local Dask cluster of 1 and of 2 one-thread workers;
- optionally (``--baseline-src DIR``: the ``src`` folder of another checkout, e.g. a git
  worktree of an earlier commit) the same with that code, in the same run.

For each it reports the chunks' time (start of the work to the last chunk), the time after the
last chunk (this checkout splits it into sections finishing, labels and reports; for the
baseline it is the wall time of ``detect`` minus its ``seconds``), their ratio, MP/s, the
number of detections and of files in the done-state. From this checkout's 2-worker run it
projects the tail of a 2 TB volume of 4096 x 4096 sections on 100 workers: labels scale with
sections / workers (measured worker-seconds per section), the reports with sections
(measured driver seconds per section), against the chunks at the measured per-chunk cost.

Usage::

    python bench/bench_detect_phases.py [--volume 32 2048] [--workers 1,2]
        [--baseline-src /tmp/emae-old/src] [--work runs/bench_phases]

Prints each figure as it is measured and a JSON summary (also written to WORK/phases.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_RUN = """
import json, shutil, sys, time
from pathlib import Path
from emae.commands.detect import detect
model, source, out, workers = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
shutil.rmtree(out, ignore_errors=True)
began = time.perf_counter()
summary = detect(model, source, out, workers=workers, threads=1, precision="bf16",
                 device="cpu", progress=False)
summary["wall_seconds"] = time.perf_counter() - began
print("SUMMARY " + json.dumps(summary))
"""


def _volume(path: Path, shape: tuple[int, int, int]) -> Path:
    """A ``"ZYX"`` uint8 zarr volume of synthetic tissue (8 distinct sections, repeated)."""
    import numpy as np
    import zarr

    from emae.io.atomic import atomic_dir
    from emae.synth.tissue import make_volume, to_uint8

    if path.exists():
        return path
    z, h, w = shape
    sections = to_uint8(make_volume((min(z, 8), h, w), seed=0))
    with atomic_dir(path) as tmp:
        array = zarr.create_array(
            str(tmp), shape=shape, chunks=(1, 1024, 1024), dtype="uint8", fill_value=0
        )
        for k in range(z):
            array[k] = np.asarray(sections[k % len(sections)])
    return path


def _model(path: Path, volume: Path, steps: int) -> Path:
    from emae.commands.pretrain import pretrain
    from emae.train.config import PretrainConfig

    if not path.exists():
        pretrain([volume], path, PretrainConfig(steps=steps), progress=False)
    return path


def _files(store: Path) -> int:
    done = store / "emae_done"
    return sum(1 for p in done.rglob("*") if p.is_file()) if done.is_dir() else 0


def _run(src: Path | None, model: Path, volume: Path, out: Path, workers: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    command = [sys.executable, "-c", _RUN, str(model), str(volume), str(out), str(workers)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"detect failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("SUMMARY "))
    summary = json.loads(line.removeprefix("SUMMARY "))
    summary["done_files"] = _files(out)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volume", type=int, nargs=2, default=(32, 2048), metavar=("Z", "SIDE"))
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--baseline-src", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_phases"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    z, side = args.volume
    volume = _volume(args.work / f"volume-{z}x{side}.zarr", (z, side, side))
    model = args.model or _model(args.work / f"model-{args.steps}", volume, args.steps)
    pixels = z * side * side
    chunks = z * math.ceil(side / 1024) ** 2
    results: dict[str, Any] = {
        "volume": [z, side, side],
        "chunks": chunks,
        "model": str(model),
        "cpu_flags": sorted(
            f for f in Path("/proc/cpuinfo").read_text().split() if f.startswith(("avx512", "amx"))
        ),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "runs": {},
    }
    codes = [("this", None)] + ([("baseline", args.baseline_src)] if args.baseline_src else [])
    for workers in (int(w) for w in args.workers.split(",")):
        for code, src in codes:
            name = f"{code}-w{workers}"
            s = _run(src, model, volume, args.work / f"{name}.zarr", workers)
            tail = s.get("post_chunk_seconds", s["wall_seconds"] - s["seconds"])
            row = {
                "chunks_seconds": s["seconds"],
                "startup_seconds": s["startup_seconds"],
                "post_chunk_seconds": tail,
                "post_over_chunks": tail / s["seconds"],
                "phases": s.get("phases"),
                "wall_seconds": s["wall_seconds"],
                "mp_per_s_chunks": pixels / 1e6 / s["seconds"],
                "mp_per_s_whole": pixels / 1e6 / s["wall_seconds"],
                "detections": s["detections"],
                "done_files": s["done_files"],
            }
            results["runs"][name] = row
            print(name, json.dumps(row), flush=True)
    two = results["runs"].get("this-w2")
    if two is not None and two["phases"]:
        sections_2tb = round(2e12 / 4096**2)
        chunks_2tb = sections_2tb * 16
        per_chunk = 2 * (two["chunks_seconds"] - two["startup_seconds"]) / chunks  # worker-s
        per_section_labels = 2 * two["phases"]["labels"] / z  # worker-seconds per section
        per_section_reports = two["phases"]["reports"] / z  # driver seconds per section
        chunks_s = chunks_2tb * per_chunk / 100
        tail_s = sections_2tb * per_section_labels / 100 + sections_2tb * per_section_reports
        results["projection_2tb_100_workers"] = {
            "sections": sections_2tb,
            "chunks": chunks_2tb,
            "chunk_worker_seconds": per_chunk,
            "labels_worker_seconds_per_section": per_section_labels,
            "reports_seconds_per_section": per_section_reports,
            "chunks_hours": chunks_s / 3600,
            "post_chunk_hours": tail_s / 3600,
            "post_over_chunks": tail_s / chunks_s,
        }
    print(json.dumps(results, indent=2))
    (args.work / "phases.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
