"""Benchmark: does the memory of ``emae map --apply`` grow with the embedding?

From the sample data (``--data``, from ``emae sample-data``) and an autoencoder folder
(``--model``): embeds the unlabeled volume (stride 64), fits a map on it, then writes large
embeddings of the same model by repeating those rows (``--rows``, e.g. 131072,524288; parts of
4,096 rows, as ``emae embed`` writes them), and runs ``emae map MAP --apply BIG`` on each in its
own process: seconds and peak RSS (``/usr/bin/time``). With ``--baseline-src DIR`` (another
checkout's ``src``) the same runs on that code, alternating, so both come from one session.

Usage::

    python bench/bench_map_memory.py --model runs/ae --data runs/sample-data \\
        --rows 131072,524288 [--baseline-src /tmp/emae-old/src] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PART_ROWS = 4096


def _large_embedding(small: Path, out: Path, rows: int) -> Path:
    """``rows`` rows of ``small`` repeated, in parts of 4,096, with its description."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from emae.io.embedding import DONE, META, part_path

    if (out / DONE).is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    table = pq.read_table(small)
    reps = -(-PART_ROWS // table.num_rows)
    block = pa.concat_tables([table] * reps).slice(0, PART_ROWS)
    n_parts = -(-rows // PART_ROWS)
    for k in range(n_parts):
        pq.write_table(block.slice(0, min(PART_ROWS, rows - k * PART_ROWS)), part_path(out, k))
    meta = json.loads((small / META).read_text())
    (out / META).write_text(json.dumps({**meta, "n_parts": n_parts}))
    (out / DONE).write_text(json.dumps({"rows": rows, "seconds": 0}))
    return out


def _apply(src: Path, map_folder: Path, embedding: Path, out: Path) -> dict[str, Any]:
    """``emae map MAP --apply EMB`` in its own process on the code in ``src``."""
    shutil.rmtree(out, ignore_errors=True)
    code = (
        "import sys; from emae.commands.latent_map import apply_map; "
        "apply_map(sys.argv[1], sys.argv[2], sys.argv[3])"
    )
    command = ["/usr/bin/time", "-v", sys.executable, "-c", code]
    command += [str(map_folder), str(embedding), str(out)]
    env = {**os.environ, "PYTHONPATH": str(src)}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"emae map --apply failed:\n{done.stderr[-3000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(peak_kb / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rows", default="131072,524288")
    parser.add_argument("--baseline-src", type=Path)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_map_memory"))
    args = parser.parse_args()
    import emae
    from emae.commands.embed import embed
    from emae.commands.latent_map import fit_map

    args.work.mkdir(parents=True, exist_ok=True)
    small, map_folder = args.work / "small.parquet", args.work / "map"
    if not (small / "_emae_done.json").is_file():
        volume = args.data / "unlabeled" / "volume.tif"
        embed(args.model, [volume], small, stride=64, progress=False)
    if not (map_folder / "config.json").is_file():
        fit_map(small, map_folder, overwrite=True)
    codes = {"now": Path(emae.__file__).resolve().parents[1]}
    if args.baseline_src:
        codes["before"] = args.baseline_src
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for rows in (int(r) for r in args.rows.split(",")):
        big = _large_embedding(small, args.work / f"big-{rows}.parquet", rows)
        for name, src in codes.items():
            figures = _apply(src, map_folder, big, args.work / f"applied-{name}-{rows}")
            results.setdefault(name, {})[rows] = figures
            print(name, rows, json.dumps(figures), flush=True)
    for name, by_rows in results.items():
        if name == "date" or len(by_rows) < 2:
            continue
        (r0, a), (r1, b) = sorted(by_rows.items())[0], sorted(by_rows.items())[-1]
        growth = (b["peak_rss_mib"] - a["peak_rss_mib"]) / (r1 - r0) * 1024 * 1024
        print(f"{name}: peak RSS grows by {growth:.0f} bytes per row", flush=True)
        by_rows["bytes_per_row"] = round(growth)
    (args.work / "map-memory.json").write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
