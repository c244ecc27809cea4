"""Benchmark: the phases of ``emae detect`` after the chunks, on 1 and 2 workers.

On a generated ``Z x SIDE x SIDE`` uint8 zarr volume (synthetic tissue, chunks of 1024), with
an autoencoder folder (``--model``; made here when missing: the default ``conv-ae`` trained for
``--steps`` steps on the volume, whose forward pass costs what the default model's does
whatever the training length), runs ``emae detect`` (1024-pixel chunks, one tile per chunk,
bf16, one torch thread per process) in a subprocess per configuration, one at a time, in
``--rounds`` alternating rounds:

- this checkout in one process (``--workers 0``: no Dask; its section tasks are timed), and on
  a local Dask cluster of 1 and of 2 one-thread workers;
- optionally (``--baseline-src DIR``: the ``src`` folder of another checkout, e.g. a git
  worktree of an earlier commit) the same with that code, in the same rounds.

For each it reports the chunks' time (start of the work to the last chunk), the time after the
last chunk (this checkout splits it into section tasks still running and reports; for the
baseline it is the wall time of ``detect`` minus its ``seconds``), their ratio, MP/s, the
number of detections and of files in the done-state, and the whole run's MP/s over the bf16
FLOP bound (a two-thread bf16 matmul over the model's convolution FLOPs per pixel, measured
first). From the best round of each configuration: two workers over one, whole run; and a
projection to a 2 TB volume of 4096 x 4096 sections on 100 workers from the measured costs:
chunks and section tasks (worker-seconds per chunk and per section, from the one-process run)
spread over the workers, and after the last chunk the last section's tasks plus the reports
(seconds per section in the driver, from the two-worker run).

Usage::

    python bench/bench_detect_phases.py [--volume 32 2048] [--workers 0,1,2] [--rounds 2]
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
spent = {"finish_section": 0.0, "label_section": 0.0}
try:  # in this process (workers == 0), the section tasks are timed
    import emae.volume.run as run

    def timed(fn):
        def call(*args):
            began = time.perf_counter()
            try:
                return fn(*args)
            finally:
                spent[fn.__name__] += time.perf_counter() - began
        return call

    run.finish_section, run.label_section = timed(run.finish_section), timed(run.label_section)
except ImportError:
    spent = None
shutil.rmtree(out, ignore_errors=True)
parallel = {"workers": workers} if workers else {"scheduler": "synchronous"}
began = time.perf_counter()
summary = detect(model, source, out, threads=1, precision="bf16", device="cpu", progress=False,
                 **parallel)
summary["wall_seconds"] = time.perf_counter() - began
summary["section_task_seconds"] = spent if not workers else None
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


def _bound(model: Path) -> dict[str, float]:
    """The bf16 FLOP bound of the model on this CPU: the best two-thread 2048 x 2048 bf16
    matmul rate over the model's convolution FLOPs per pixel (bench_detect.py's ``bound``)."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_detect import _flops_per_pixel, _matmul_flops
    from emae.folders.autoencoder import load_bundle

    torch.set_num_threads(2)
    flops = _flops_per_pixel(load_bundle(model).model)
    rate = max(_matmul_flops(torch.bfloat16) for _ in range(2))
    torch.set_num_threads(1)
    print(f"bound: {flops / 1e3:.1f} kFLOP/pixel, bf16 matmul {rate / 1e9:.0f} GFLOP/s", flush=True)
    return {"flops_per_pixel": flops, "bf16_flops": rate, "bf16_mp_per_s": rate / flops / 1e6}


def _reports_cost(store: Path, model: Path, z: int) -> dict[str, float]:
    """The reports of a finished store written again in this process (on a copy), with and
    without the QC figure, best of 2: seconds per section without it, and the figure's."""
    import shutil

    import emae.volume.qc as qc
    from emae.commands.detect import _mapper
    from emae.volume.run import write_outputs

    copy = store.with_name("reports-copy.zarr")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(store, copy)
    mapper, _ = _mapper(model)
    build, draw = qc.qc_figure, qc.write_figure
    seconds = {}
    for name, figure in (("with", (build, draw)), ("without", (lambda *a: None,) * 2)):
        qc.qc_figure, qc.write_figure = figure
        best = float("inf")
        for _ in range(2):
            began = time.perf_counter()
            write_outputs(copy, list(range(z)), mapper)
            best = min(best, time.perf_counter() - began)
        seconds[name] = best
    qc.qc_figure, qc.write_figure = build, draw
    shutil.rmtree(copy)
    return {
        "per_section": seconds["without"] / z,
        "figure": seconds["with"] - seconds["without"],
    }


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
    parser.add_argument("--workers", default="0,1,2", help="0: in one process, no Dask.")
    parser.add_argument("--rounds", type=int, default=1, help="Alternating rounds.")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--baseline-src", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_phases"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    z, side = args.volume
    volume = _volume(args.work / f"volume-{z}x{side}.zarr", (z, side, side))
    model = args.model or _model(args.work / f"model-{args.steps}", volume, args.steps)
    bound = _bound(model)
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
        "bound": bound,
        "runs": {},
    }
    codes = [("this", None)] + ([("baseline", args.baseline_src)] if args.baseline_src else [])
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in range(args.rounds):
        for workers in (int(w) for w in args.workers.split(",")):
            for code, src in codes:
                name = f"{code}-w{workers}"
                s = _run(src, model, volume, args.work / f"{name}.zarr", workers)
                tail = s.get("post_chunk_seconds", s["wall_seconds"] - s["seconds"])
                row = {
                    "round": r,
                    "chunks_seconds": s["seconds"],
                    "startup_seconds": s["startup_seconds"],
                    "post_chunk_seconds": tail,
                    "post_over_chunks": tail / s["seconds"],
                    "phases": s.get("phases"),
                    "section_task_seconds": s.get("section_task_seconds"),
                    "wall_seconds": s["wall_seconds"],
                    "mp_per_s_chunks": pixels / 1e6 / s["seconds"],
                    "mp_per_s_whole": pixels / 1e6 / s["wall_seconds"],
                    "whole_over_bound": pixels / 1e6 / s["wall_seconds"] / bound["bf16_mp_per_s"],
                    "detections": s["detections"],
                    "done_files": s["done_files"],
                }
                runs.setdefault(name, []).append(row)
                print(name, json.dumps(row), flush=True)
    results["runs"] = runs
    best = {name: min(rows, key=lambda row: row["wall_seconds"]) for name, rows in runs.items()}
    results["best"] = best
    for code, _ in codes:
        one, two = best.get(f"{code}-w1"), best.get(f"{code}-w2")
        if one and two:
            results[f"{code}_two_workers_over_one_whole_run"] = (
                one["wall_seconds"] / two["wall_seconds"]
            )
    sync, two = best.get("this-w0"), best.get("this-w2")
    if sync and two and sync["section_task_seconds"]:
        sections_2tb = round(2e12 / 4096**2)
        chunks_2tb = sections_2tb * 16
        spent = sync["section_task_seconds"]
        per_section = (spent["finish_section"] + spent["label_section"]) / z  # worker-seconds
        per_chunk = (sync["chunks_seconds"] - sum(spent.values())) / chunks  # worker-seconds
        reports = _reports_cost(args.work / "this-w2.zarr", model, z)
        results["reports_cost"] = reports
        chunks_h = chunks_2tb * per_chunk / 100 / 3600
        sections_h = sections_2tb * per_section / 100 / 3600
        # After the last chunk: the last section's two tasks, then the reports.
        tail_h = (per_section + sections_2tb * reports["per_section"] + reports["figure"]) / 3600
        results["projection_2tb_100_workers"] = {
            "sections": sections_2tb,
            "chunks": chunks_2tb,
            "chunk_worker_seconds": per_chunk,
            "section_task_worker_seconds": per_section,
            "reports_seconds_per_section": reports["per_section"],
            "chunks_hours": chunks_h,
            "section_tasks_hours_during_chunks": sections_h,
            "after_last_chunk_hours": tail_h,
            "after_last_chunk_over_chunks": tail_h / chunks_h,
        }
    print(json.dumps(results, indent=2))
    (args.work / "phases.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
