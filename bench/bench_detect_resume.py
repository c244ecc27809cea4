"""Benchmark: a killed ``emae detect`` run resumes to exactly the uninterrupted result.

Runs ``emae detect`` (the CLI, in its own process group) on ``--volume`` with ``--workers`` local
Dask workers, kills the whole group with SIGKILL after ``--kill-after`` seconds (the command,
its scheduler and its workers: no handler runs), counts what the done-state holds, runs the
same command again, and compares the result with an uninterrupted run of the same command
(``--reference``, made here when it does not exist): every level of the anomaly map and of the
anomaly label image section by section, and the two CSV reports row by row.

Usage::

    python bench/bench_detect_resume.py --model RUN --volume VOLUME.zarr --work DIR
        [--workers 2] [--kill-after 200] [--reference DIR/reference.zarr]

Prints what it measured and a JSON summary (also written to ``WORK/resume.json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import zarr


def _command(model: Path, volume: Path, out: Path, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "emae",
        "-q",
        "detect",
        str(model),
        str(volume),
        "--out",
        str(out),
        "--workers",
        str(workers),
        "--precision",
        "bf16",
        "--device",
        "cpu",
        "--threads",
        "1",
    ]


def _run(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - began


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def _compare(a: Path, b: Path) -> dict[str, Any]:
    """Whether every map and label level and both reports of two stores are identical."""
    found: dict[str, Any] = {}
    for image in ("", "labels/anomaly/"):
        group = zarr.open_group(str(a / image), mode="r") if image else zarr.open_group(str(a))
        for level in sorted(group.array_keys()):
            x = zarr.open_array(str(a / image / level), mode="r")
            y = zarr.open_array(str(b / image / level), mode="r")
            same = x.shape == y.shape and all(
                np.array_equal(np.asarray(x[z]), np.asarray(y[z])) for z in range(x.shape[0])
            )
            found[f"{image or 'map/'}{level}"] = same
    for suffix in ("_detections.csv", "_qc.csv"):
        ra = _rows(a.with_name(a.stem + suffix))
        rb = _rows(b.with_name(b.stem + suffix))
        found[suffix] = {"rows": len(ra) - 1, "identical": ra == rb}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--volume", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-after", type=float, default=200.0)
    parser.add_argument("--reference", type=Path, default=None)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    reference = args.reference or args.work / "reference.zarr"
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if not reference.exists():
        results["reference_seconds"] = _run(
            _command(args.model, args.volume, reference, args.workers)
        )
    out = args.work / "killed.zarr"
    shutil.rmtree(out, ignore_errors=True)
    command = _command(args.model, args.volume, out, args.workers)
    proc = subprocess.Popen(command, start_new_session=True)
    time.sleep(args.kill_after)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(5)  # the killed group's processes are gone
    done = out / "emae_done"
    results["killed_after_seconds"] = args.kill_after
    results["killed_exit"] = proc.returncode
    results["done_state_files_when_killed"] = sum(1 for p in done.rglob("*") if p.is_file())
    results["finished_sections_when_killed"] = sum(1 for p in done.glob("z*.npz"))
    print(json.dumps(results), flush=True)
    results["resume_seconds"] = _run(command)
    results["done_state_files_at_the_end"] = sum(1 for p in done.rglob("*") if p.is_file())
    results["comparison"] = _compare(reference, out)
    results["identical"] = all(
        v if isinstance(v, bool) else v["identical"] for v in results["comparison"].values()
    )
    print(json.dumps(results, indent=2))
    (args.work / "resume.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
