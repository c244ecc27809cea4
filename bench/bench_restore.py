"""Benchmark: throughput and memory of ``emae denoise`` and ``emae inpaint`` on large volumes.

Each command runs in a subprocess (``python -m emae``, as a user runs it) on generated uint8 zarr
volumes of synthetic tissue, 4096 x 4096 per section, of ``--sizes`` GB, on a local Dask
cluster of ``--workers`` one-thread workers (chunks of 1024, a halo of 64, fp32). Reported per
command and size: megapixels per second of the chunks (the command's own figure) and the wall
time, the peak RSS of the largest process (``/usr/bin/time``) and of the whole process tree
(the command and its workers, sampled every 0.5 s). Memory that does not grow with the volume
is the point: the volume is never loaded whole.

The models are trained for ``--steps`` steps only (the time per pixel does not depend on the
weights): a blind-spot U-Net and an inpainting U-Net of the default architecture. The inpainting
mask is a zarr volume with discs of 8-64 pixels over about 2% of every section.

Usage::

    python bench/bench_restore.py [--work runs/bench_restore] [--sizes 0.134,0.5] [--workers 2]
        [--commands denoise,denoise-off,inpaint]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_detect import run_sampled
from bench_detect_phases import _volume

REPO = Path(__file__).resolve().parents[1]
SIDE = 4096


def _model(path: Path, volume: Path, name: str, steps: int) -> Path:
    from emae.commands.pretrain import pretrain
    from emae.train.config import PretrainConfig

    if not path.exists():
        config = PretrainConfig(model=name, steps=steps, batch_size=8, score_patches=16)
        pretrain([volume], path, config, progress=False)
    return path


def _mask(path: Path, shape: tuple[int, int, int], seed: int = 0) -> Path:
    """A uint8 zarr volume of discs covering about 2% of each section."""
    import zarr
    from skimage.draw import disk

    from emae.io.atomic import atomic_dir

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    with atomic_dir(path) as tmp:
        array = zarr.create_array(
            str(tmp), shape=shape, chunks=(1, 1024, 1024), dtype="uint8", fill_value=0
        )
        for z in range(shape[0]):
            plane = np.zeros(shape[1:], np.uint8)
            while plane.mean() < 0.02:
                center = rng.integers(64, shape[1] - 64, 2)
                plane[disk(tuple(center), rng.uniform(4, 32), shape=shape[1:])] = 1
            array[z] = plane
    return path


def _run(command: list[str]) -> dict[str, Any]:
    timed = ["/usr/bin/time", "-f", "%M %e", sys.executable, "-m", "emae", "-q", *command]
    proc, peak = run_sampled(timed)
    stdout, stderr = proc.stdout, proc.stderr
    if proc.returncode:
        raise SystemExit(f"emae {command[0]} failed ({proc.returncode}):\n{stderr[-2000:]}")
    rss_kb, seconds = stderr.strip().splitlines()[-1].split()
    line = (stdout.strip().splitlines() or [""])[-1]
    rate = re.search(r"\(([\d.]+) MP/s\)", line)
    return {
        "command": "emae " + shlex.join(command),
        "mp_per_s": float(rate.group(1)) if rate else None,
        "wall_seconds": float(seconds),
        "peak_rss_mib": int(rss_kb) / 1024,
        "peak_tree_rss_mib": peak / 2**20,
        "summary": line,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench_restore")
    parser.add_argument("--sizes", default="0.134,0.5")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--commands",
        default="denoise,inpaint",
        help="Of denoise (its default: a noise model fitted on the input), denoise-off "
        "(--noise off: the prediction alone) and inpaint.",
    )
    args = parser.parse_args()
    chosen = args.commands.split(",")
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for gb in (float(s) for s in args.sizes.split(",")):
        z = max(1, round(gb * 1e9 / SIDE**2))
        volume = _volume(args.work / f"volume-{z}x{SIDE}.zarr", (z, SIDE, SIDE))
        mask = _mask(args.work / f"mask-{z}x{SIDE}.zarr", (z, SIDE, SIDE))
        denoiser = _model(args.work / "blind-spot", volume, "blind-spot", args.steps)
        inpainter = _model(args.work / "inpainting-ae", volume, "inpainting-ae", args.steps)
        common = ["--workers", str(args.workers), "--threads", "1", "--overwrite"]
        for name, command in (
            ("denoise", ["denoise", str(denoiser), str(volume)]),
            ("denoise-off", ["denoise", str(denoiser), str(volume), "--noise", "off"]),
            ("inpaint", ["inpaint", str(inpainter), str(volume), "--mask", str(mask)]),
        ):
            if name not in chosen:
                continue
            out = args.work / f"{name}-{z}x{SIDE}.zarr"
            found = _run([*command, "--out", str(out), *common])
            row = {"name": name, "volume_gb": z * SIDE**2 / 1e9, "sections": z, **found}
            rows.append(row)
            print(json.dumps(row), flush=True)
    record = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": platform.processor() or platform.machine(),
        "cpu_flags": sorted(
            f
            for f in set(open("/proc/cpuinfo").read().split())
            if f in ("avx512f", "avx512_bf16", "amx_bf16", "avx2")
        ),
        "workers": args.workers,
        "rows": rows,
    }
    (args.work / "results.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {args.work / 'results.json'}")


if __name__ == "__main__":
    main()
