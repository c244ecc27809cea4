"""Benchmark: what planning a large run costs the process that drives ``emae detect``.

For a volume of ``--sections`` sections of ``--side`` x ``--side`` pixels in chunks of
``--chunk`` (default: 2 TB of uint8, 119,209 sections of 4096 x 4096, 1.9 M chunks), runs in a
fresh process on this checkout's code, and with ``--baseline-src DIR`` on another checkout's:
the chunk plan (``plan_sections``), what a done-state of nothing finished leaves to do
(``DoneState.todo``), its length, and the first 64 chunks (what the runner submits first).
Prints the seconds and the growth of the resident memory (``ru_maxrss``) of each.

With ``--resume-sections N``, also what a resumed run pays before its first task: a store of N
finished and painted sections (manifests of 10 detections, marks, written here with emae's own
writers), then the detections counted as the code before did (every finished section's
manifest read) against where numbering goes on now (the last painted mark,
``emae.volume.run._numbered``), in this process.

Usage::

    python bench/bench_plan_memory.py [--baseline-src /tmp/emae-old/src] [--resume-sections N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = """
import itertools, json, resource, sys, time
try:
    from emae.volume.plan import plan_sections
except ImportError:  # code from before emae.volume.plan
    from emae.volume.chunks import plan_sections
from emae.volume.done import DoneState
n, side, chunk = (int(a) for a in sys.argv[1:4])
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
before, start = rss(), time.perf_counter()
sections = plan_sections((n, side, side), chunk)
todo = DoneState(set(), {}).todo(sections)
count = len(todo)
first = list(itertools.islice(iter(todo), 64))
print(json.dumps({"chunks": count, "seconds": round(time.perf_counter() - start, 2),
                  "rss_growth_mib": round(rss() - before), "first": first[0].name}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", type=int, default=119_209)
    parser.add_argument("--side", type=int, default=4096)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--baseline-src", type=Path)
    parser.add_argument("--resume-sections", type=int, default=0)
    args = parser.parse_args()
    import emae

    codes = {"now": Path(emae.__file__).resolve().parents[1]}
    if args.baseline_src:
        codes["before"] = args.baseline_src
    results = {}
    for name, src in codes.items():
        command = [sys.executable, "-c", PROBE, str(args.sections), str(args.side)]
        command.append(str(args.chunk))
        env = {**os.environ, "PYTHONPATH": str(src)}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(name, json.dumps(results[name]), flush=True)
    if args.resume_sections:
        results["resume"] = resume(args.resume_sections)
        print("resume", json.dumps(results["resume"]), flush=True)
    print(json.dumps(results))


def resume(n: int) -> dict[str, float]:
    """Seconds to number on after ``n`` painted sections: every manifest read, or one mark."""
    import tempfile
    import time

    import numpy as np

    from emae.volume.done import Manifest, read_manifest, scan, write_manifest, write_painted
    from emae.volume.run import _numbered
    from emae.volume.sections import TABLE

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "emae_done").mkdir()
        tiles = [{"z": 0, "y0": 0, "x0": 0, "height": 1024, "width": 1024}]
        for z in range(n):
            rows = np.ones((10, len(TABLE)))
            write_manifest(tmp, z, Manifest([{**tiles[0], "z": z}], rows, np.zeros((0, 3)), []))
            write_painted(tmp, z, 1 + 10 * z, 10)
        state = scan(tmp)
        start = time.perf_counter()
        counts = {z: len(read_manifest(tmp, z, pieces=False).detections) for z in range(n)}
        every = time.perf_counter() - start
        start = time.perf_counter()
        order = iter(range(1, n))
        numbering = _numbered(0, order, state, tmp)
        one = time.perf_counter() - start
        assert numbering["first_id"] == 1 + sum(counts.values()) and numbering["next"] is None
    return {"sections": n, "every_manifest_s": round(every, 3), "last_mark_s": round(one, 4)}


if __name__ == "__main__":
    main()
