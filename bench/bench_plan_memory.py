"""Benchmark: what planning a large run costs the process that drives ``emae detect``.

For a volume of ``--sections`` sections of ``--side`` x ``--side`` pixels in chunks of
``--chunk`` (default: 2 TB of uint8, 119,209 sections of 4096 x 4096, 1.9 M chunks), runs in a
fresh process on this checkout's code, and with ``--baseline-src DIR`` on another checkout's:
the chunk plan (``plan_sections``), what a done-state of nothing finished leaves to do
(``DoneState.todo``), its length, and the first 64 chunks (what the runner submits first).
Prints the seconds and the growth of the resident memory (``ru_maxrss``) of each.

Usage::

    python bench/bench_plan_memory.py [--baseline-src /tmp/emae-old/src]
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
    print(json.dumps(results))


if __name__ == "__main__":
    main()
