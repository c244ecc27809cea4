"""Benchmark: whole-volume anomaly mapping: precision, FLOP bound, tiling, Dask workers, memory.

With a trained autoencoder folder (``--model``, e.g. the default ``emae pretrain`` run on the
sample data) and the sample data (``--data``), measures in one run:

1. ``precision``: fp32 against bf16 (autocast + channels-last): throughput of
   ``AutoencoderDetector.anomaly_map`` over the 8 test sections (tiled like ``emae score``)
   and their pooled pixel AUROC against the masks, and the largest difference of the maps.
2. ``bound``: the model's convolution FLOPs per pixel (counted with forward hooks), the matmul
   FLOP/s of each precision (2048 x 2048 ``torch.mm``), the bound in MP/s that gives, and the
   model's forward pass alone (``reconstruct``, the code path of the anomaly maps) over one
   2048 x 2048 image against it, alternating in ``--rounds`` rounds: best of each, and the
   median of the per-round ratios.
3. ``sliding``: a naive sliding-window map (every patch scored, stride 1, its score given to its
   centre pixel) against the tiled fully convolutional map, per pixel.
4. ``tile``: ``emae.commands.detect.detect`` on a synthetic 8 x 1024 x 1024 volume (chunks of 1024,
   halo 64) in one process, with tiles of 512 and of 1152 (one tile per chunk).
5. ``dask``: a synthetic volume (``--dask-volume Z SIDE``, default the same 8 x 1024 x 1024) on
   a local Dask cluster: 1 worker of 1 thread, 2 workers of 1 thread, 1 worker of 2 threads.
6. ``ceiling``: the same anomaly maps in one process, then in two independent processes at
   once (one thread each, no Dask, no I/O): the most two cores give, for the ``dask`` part.
7. ``workers-bound``: the FLOP bound as ``emae detect`` computes on a CPU: 1, then 2
   processes of one torch thread at once, each a forward pass of one ``--tile`` tile against
   a one-thread matmul, both started together in every round (``--rounds``); a round's rate
   is all processes' work over the slowest one's time, and the bound uses the highest matmul
   rate measured (the processes', or one matmul on all threads).
8. ``rss`` (``--rss-gb G``): ``emae detect`` in a subprocess on a synthetic zarr volume of G GB
   (tiles of the sample sections): peak RSS of the largest process (``/usr/bin/time``) and of
   the process tree (sampled); synchronous scheduler, or ``--rss-workers N`` local workers.
   ``--rss-resume`` continues an interrupted output (detect skips the finished chunks).

Usage::

    python bench/bench_detect.py --model runs/idle/default-pretrain \\
        --data runs/bench_anomaly_scores/sample-data [--parts precision,bound,sliding,dask]
        [--rss-gb 1] [--work runs/bench_detect]

Prints each figure as it is measured and a JSON summary (also written to
``WORK/detect-<parts>.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from emae.anomaly.detector import AutoencoderDetector
from emae.anomaly.maps import reconstruct
from emae.io import open_image
from emae.volume.tiling import predict_tiled


def _log(results: dict[str, Any], part: str, **values: Any) -> None:
    results.setdefault(part, {}).update(values)
    print(part, json.dumps(values, default=float), flush=True)


def _test_set(data: Path) -> tuple[np.ndarray, np.ndarray]:
    images = open_image(str(data / "test" / "images"))
    masks = open_image(str(data / "test" / "masks"))
    return np.asarray(images[:]), np.asarray(masks[:]) > 0


def _maps(detector: AutoencoderDetector, sections: np.ndarray, tile: int) -> np.ndarray:
    return np.stack(
        [
            predict_tiled(s, lambda t: detector.anomaly_map(t)[:, None], tile=tile, overlap=64)[0]
            for s in sections
        ]
    )


def part_precision(args: argparse.Namespace, results: dict[str, Any]) -> None:
    images, masks = _test_set(args.data)
    pixels = images.size / 1e6
    maps = {}
    for precision in ("fp32", "bf16"):
        detector = AutoencoderDetector.from_bundle(args.model, precision=precision)
        _maps(detector, images[:1], args.tile)  # warm-up
        began = time.perf_counter()
        maps[precision] = _maps(detector, images, args.tile)
        seconds = time.perf_counter() - began
        auroc = roc_auc_score(masks.ravel(), maps[precision].ravel())
        _log(
            results,
            "precision",
            **{f"{precision}_mp_per_s": pixels / seconds, f"{precision}_auroc": auroc},
        )
    diff = np.abs(maps["bf16"] - maps["fp32"])
    _log(
        results,
        "precision",
        speedup=results["precision"]["bf16_mp_per_s"] / results["precision"]["fp32_mp_per_s"],
        max_abs_diff=float(diff.max()),
        p99_abs_diff=float(np.percentile(diff, 99)),
        map_p99=float(np.percentile(maps["fp32"], 99)),
    )


def _flops_per_pixel(model: torch.nn.Module, side: int = 256) -> float:
    total = [0.0]

    def hook(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if isinstance(module, torch.nn.ConvTranspose2d):
            positions = inputs[0].shape[-2] * inputs[0].shape[-1]
        else:
            positions = output.shape[-2] * output.shape[-1]
        k = module.kernel_size[0] * module.kernel_size[1]
        total[0] += 2.0 * positions * k * module.in_channels * module.out_channels / module.groups

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
    ]
    with torch.inference_mode():
        model.eval()(torch.zeros(1, 1, side, side))
    for h in handles:
        h.remove()
    return total[0] / side**2


def _matmul_flops(dtype: torch.dtype, n: int = 2048, repeats: int = 3) -> float:
    """Best FLOP/s of ``repeats`` single ``n x n`` matmuls (the peak the machine gives now)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - began)
    return 2.0 * n**3 / best


def part_bound(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Forward passes through the production path (``reconstruct``: batch norms folded, the
    precision's memory format) against the matmul rate, alternating in rounds so that both see
    the same machine. Reported: the best of the rounds for each (peak against peak) and the
    median of the per-round ratios."""
    detector = AutoencoderDetector.from_bundle(args.model)
    model = detector.model
    per_pixel = _flops_per_pixel(model)
    _log(results, "bound", model_flops_per_pixel=per_pixel)
    image = np.random.default_rng(0).random((1, 2048, 2048), dtype=np.float32)
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        reconstruct(model, image, batch_size=1, precision=precision)  # warm-up
        rounds = []
        for _ in range(args.rounds):
            bound = _matmul_flops(dtype) / per_pixel / 1e6
            began = time.perf_counter()
            reconstruct(model, image, batch_size=1, precision=precision)
            forward = image.size / 1e6 / (time.perf_counter() - began)
            rounds.append((bound, forward))
        bound, forward = (max(v) for v in zip(*rounds, strict=True))
        measured = results.get("precision", {}).get(f"{precision}_mp_per_s")
        _log(
            results,
            "bound",
            **{
                f"{precision}_matmul_gflops": bound * per_pixel / 1e3,
                f"{precision}_bound_mp_per_s": bound,
                f"{precision}_forward_mp_per_s": forward,
                f"{precision}_forward_of_bound": forward / bound,
                f"{precision}_forward_of_bound_median": float(
                    np.median([f / b for b, f in rounds])
                ),
                **({f"{precision}_map_of_bound": measured / bound} if measured else {}),
            },
        )


def part_sliding(args: argparse.Namespace, results: dict[str, Any]) -> None:
    images, _ = _test_set(args.data)
    detector = AutoencoderDetector.from_bundle(args.model, precision=args.precision, batch_size=256)
    patch = int(detector.model_config.get("patch_size", 64))
    side = args.sliding_side
    region = images[0, : side + patch - 1, : side + patch - 1]
    began = time.perf_counter()
    windows = np.lib.stride_tricks.sliding_window_view(region, (patch, patch))
    windows = windows.reshape(-1, patch, patch)
    naive = np.concatenate(
        [detector.anomaly_score(windows[i : i + 1024]) for i in range(0, len(windows), 1024)]
    ).reshape(side, side)
    naive_s = time.perf_counter() - began
    began = time.perf_counter()
    _maps(detector, images[:1, : side + patch - 1, : side + patch - 1], args.tile)
    tiled_s = time.perf_counter() - began
    _log(
        results,
        "sliding",
        pixels=side * side,
        naive_mp_per_s=side * side / 1e6 / naive_s,
        tiled_mp_per_s=region.size / 1e6 / tiled_s,
        speedup=(region.size / tiled_s) / (side * side / naive_s),
        naive_map_shape=list(naive.shape),
    )


def _volume(path: Path, data: Path, shape: tuple[int, int, int], chunk: int) -> Path:
    """A ``"ZYX"`` uint8 zarr volume tiled from the sample sections; reused once complete."""
    import zarr

    from emae.io.atomic import atomic_dir

    if path.exists():
        return path
    sections = np.asarray(open_image(str(data / "unlabeled" / "volume.tif"))[:])
    h, w = sections.shape[1:]
    with atomic_dir(path) as tmp:  # an interrupted write never looks finished
        array = zarr.create_array(
            str(tmp), shape=shape, chunks=(1, chunk, chunk), dtype="uint8", fill_value=0
        )
        for z in range(shape[0]):
            plane = np.tile(sections[z % len(sections)], (-(-shape[1] // h), -(-shape[2] // w)))
            array[z] = plane[: shape[1], : shape[2]]
    return path


def _detect(args: argparse.Namespace, source: Path, name: str, **kwargs: Any) -> dict[str, Any]:
    from emae.commands.detect import detect

    out = args.work / f"{name}.zarr"
    shutil.rmtree(out, ignore_errors=True)
    for suffix in ("_detections.csv", "_qc.csv", "_qc.png"):
        (args.work / f"{name}{suffix}").unlink(missing_ok=True)
    options = {"chunk": 1024, "tile": 512, "precision": args.precision, "device": args.device}
    options.update(kwargs)
    return detect(args.model, str(source), out, progress=False, **options)


def part_tile(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Tile size within a 1024 x 1024 chunk (halo 64), one process, 2 threads."""
    source = _volume(args.work / "volume-8x1024.zarr", args.data, (8, 1024, 1024), 512)
    for tile in (512, 1152):
        summary = _detect(args, source, f"tile-{tile}", tile=tile, scheduler="synchronous")
        _log(results, "tile", **{f"tile_{tile}_mp_per_s": summary["megapixels_per_s"]})


def part_dask(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Local Dask cluster with 1 and 2 worker processes of 1 torch thread each, and 1 x 2."""
    z, side = args.dask_volume
    source = _volume(args.work / f"volume-{z}x{side}.zarr", args.data, (z, side, side), 512)
    for workers, threads in ((1, 1), (2, 1), (1, 2)):
        name = f"dask-{workers}x{threads}"
        summary = _detect(args, source, name, tile=args.tile, workers=workers, threads=threads)
        _log(
            results,
            "dask",
            **{
                f"{name}_mp_per_s": summary["megapixels_per_s"],
                f"{name}_startup_s": summary["startup_seconds"],
                f"{name}_mp_per_s_after_start": summary["megapixels_per_s_after_start"],
            },
        )
    d = results["dask"]
    _log(
        results,
        "dask",
        speedup_2_workers=d["dask-2x1_mp_per_s"] / d["dask-1x1_mp_per_s"],
        speedup_2_workers_after_start=(
            d["dask-2x1_mp_per_s_after_start"] / d["dask-1x1_mp_per_s_after_start"]
        ),
    )


def _tree_rss(pid: int) -> int:
    """Summed RSS in bytes of process ``pid`` and all its descendants (0 once it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_sampled(command: list[str]) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``command``; its result and the peak summed RSS in bytes of it and its descendants,
    sampled every 0.5 s."""
    import threading

    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_tree = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak_tree[0] = max(peak_tree[0], _tree_rss(proc.pid))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.join()
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr), peak_tree[0]


def part_rss(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """``emae detect`` in a subprocess on a generated zarr volume of ``--rss-gb`` GB: peak RSS
    of the largest process (``/usr/bin/time``) and of the whole process tree (summed RSS of the
    command and its Dask workers, sampled every 0.5 s). ``--rss-workers 0``: synchronous
    scheduler, one process; ``N``: a local cluster of N workers of one thread.
    ``--rss-resume`` keeps an interrupted output and continues it (the same command again)."""

    side = 4096
    sections = max(1, round(args.rss_gb * 1e9 / side**2))
    source = _volume(
        args.work / f"volume-{sections}x{side}.zarr", args.data, (sections, side, side), 1024
    )
    out = args.work / (f"rss-{sections}x{side}-w{args.rss_workers}.zarr")
    if not args.rss_resume:
        shutil.rmtree(out, ignore_errors=True)
    parallel = (
        ["--workers", str(args.rss_workers)] if args.rss_workers else ["--scheduler", "synchronous"]
    )
    command = [
        "/usr/bin/time",
        "-f",
        "%M %e",
        sys.executable,
        "-m",
        "emae",
        "-q",
        "detect",
        str(args.model),
        str(source),
        "--out",
        str(out),
        *parallel,
        "--precision",
        args.precision,
        "--device",
        args.device,
        "--tile",
        str(args.tile),
        "--threads",
        str(1 if args.rss_workers else args.threads),
        "--overwrite",
    ]
    proc, peak = run_sampled(command)
    stdout, stderr = proc.stdout, proc.stderr
    if proc.returncode:
        raise SystemExit(f"emae detect failed ({proc.returncode}):\n{stderr[-2000:]}")
    rss_kb, seconds = stderr.strip().splitlines()[-1].split()
    _log(
        results,
        "rss",
        volume_gb=sections * side**2 / 1e9,
        shape=[sections, side, side],
        workers=args.rss_workers,
        resumed=args.rss_resume,
        peak_rss_mib=int(rss_kb) / 1024,
        peak_tree_rss_mib=peak / 2**20,
        seconds=float(seconds),
        summary=(stdout.strip().splitlines() or [""])[-1],
        command=shlex.join(command[3:]),
    )


def _ceiling_worker(model: str, n: int, side: int, queue: Any) -> None:
    """One process, one torch thread: ``n`` anomaly maps of a ``side`` x ``side`` image."""
    torch.set_num_threads(1)
    detector = AutoencoderDetector.from_bundle(model, precision="bf16")
    image = np.random.default_rng(0).random((1, side, side), dtype=np.float32) * 255
    detector.anomaly_map(image)  # warm-up
    began = time.perf_counter()
    for _ in range(n):
        detector.anomaly_map(image)
    queue.put(n * side * side / 1e6 / (time.perf_counter() - began))


def part_ceiling(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """What two cores give at best: the same anomaly maps (1152 x 1152, bf16, one thread) in one
    process alone, then in two independent processes at once (no Dask, no I/O)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    rates = {}
    for n_proc in (1, 2):
        queue = ctx.Queue()
        procs = [
            ctx.Process(target=_ceiling_worker, args=(str(args.model), 6, 1152, queue))
            for _ in range(n_proc)
        ]
        for proc in procs:
            proc.start()
        rates[n_proc] = sum(queue.get() for _ in procs)
        for proc in procs:
            proc.join()
    _log(
        results,
        "ceiling",
        one_process_mp_per_s=rates[1],
        two_processes_mp_per_s=rates[2],
        speedup=rates[2] / rates[1],
    )


def _workers_bound_worker(model: str, side: int, rounds: int, barrier: Any, queue: Any) -> None:
    """One process, one torch thread: in each round, one 2048 x 2048 matmul and then one forward
    pass of a ``side`` x ``side`` tile, each started together with the other processes
    (``barrier``); puts the seconds of each, per precision and round."""
    torch.set_num_threads(1)
    detector = AutoencoderDetector.from_bundle(model)
    image = np.random.default_rng(0).random((1, side, side), dtype=np.float32)
    n = 2048
    found: dict[str, list[tuple[float, float]]] = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.mm(a, b)
        reconstruct(detector.model, image, batch_size=1, precision=precision)  # warm-up
        found[precision] = []
        for _ in range(rounds):
            barrier.wait(timeout=600)
            began = time.perf_counter()
            torch.mm(a, b)
            matmul_s = time.perf_counter() - began
            barrier.wait(timeout=600)
            began = time.perf_counter()
            reconstruct(detector.model, image, batch_size=1, precision=precision)
            found[precision].append((matmul_s, time.perf_counter() - began))
    queue.put(found)


def part_workers_bound(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """The FLOP bound as ``emae detect`` runs on a CPU: one process per core, one torch thread
    each, one tile of ``--tile`` pixels at a time.

    In 1, then 2 processes at once, every round runs a one-thread 2048 x 2048 matmul in all
    processes together, then one forward pass in all together. A round's rate is the work of
    all processes over the slowest one's time (what they did at once). The bound takes the
    highest matmul rate measured: the processes' best round, or one matmul on all
    ``--threads`` threads in this process (best of 3, before and after), whichever is higher.
    Reported: best forward round against that bound, and the median of the per-round ratios.
    """
    import multiprocessing as mp

    per_pixel = _flops_per_pixel(AutoencoderDetector.from_bundle(args.model).model)
    ctx = mp.get_context("spawn")
    found: dict[str, Any] = {"model_flops_per_pixel": per_pixel, "tile": args.tile}
    threaded = {p: _matmul_flops(d) for p, d in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    rounds: dict[int, dict[str, list[tuple[float, float]]]] = {}
    for n_proc in (1, 2):
        queue, barrier = ctx.Queue(), ctx.Barrier(n_proc)
        procs = [
            ctx.Process(
                target=_workers_bound_worker,
                args=(str(args.model), args.tile, args.rounds, barrier, queue),
            )
            for _ in range(n_proc)
        ]
        for proc in procs:
            proc.start()
        per_process = [queue.get(timeout=3600) for _ in procs]
        for proc in procs:
            proc.join()
        rounds[n_proc] = {
            precision: [
                (
                    n_proc * 2.0 * 2048**3 / max(p[precision][r][0] for p in per_process),
                    n_proc * args.tile**2 / 1e6 / max(p[precision][r][1] for p in per_process),
                )
                for r in range(args.rounds)
            ]
            for precision in ("fp32", "bf16")
        }
    for p, d in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        threaded[p] = max(threaded[p], _matmul_flops(d))
    for precision in ("fp32", "bf16"):
        peak = max(threaded[precision], *(f for n in rounds for f, _ in rounds[n][precision]))
        bound = peak / per_pixel / 1e6
        found[f"{precision}_threaded_matmul_gflops"] = threaded[precision] / 1e9
        found[f"{precision}_peak_matmul_gflops"] = peak / 1e9
        found[f"{precision}_bound_mp_per_s"] = bound
        for n_proc, by_precision in rounds.items():
            flops, forward = zip(*by_precision[precision], strict=True)
            key = f"{n_proc}x1_{precision}"
            found[f"{key}_matmul_gflops"] = max(flops) / 1e9
            found[f"{key}_forward_mp_per_s"] = max(forward)
            found[f"{key}_forward_of_bound"] = max(forward) / bound
            found[f"{key}_forward_of_bound_median"] = float(np.median(forward) / bound)
    _log(results, "workers_bound", **found)


PARTS = {
    "precision": part_precision,
    "bound": part_bound,
    "sliding": part_sliding,
    "tile": part_tile,
    "dask": part_dask,
    "rss": part_rss,
    "ceiling": part_ceiling,
    "workers-bound": part_workers_bound,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_detect"))
    parser.add_argument("--parts", default="precision,bound,sliding,dask")
    parser.add_argument("--precision", default="bf16", help="Of the sliding/dask/rss parts.")
    parser.add_argument("--device", default="cpu", help="Of the tile/dask/rss parts' detect.")
    parser.add_argument("--tile", type=int, default=1152, help="Of dask, rss, workers-bound.")
    parser.add_argument("--sliding-side", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7, help="Of the bound parts.")
    parser.add_argument("--rss-gb", type=float, default=1.0)
    parser.add_argument(
        "--rss-workers", type=int, default=0, help="Of the rss part; 0: synchronous."
    )
    parser.add_argument(
        "--rss-resume", action="store_true", help="Continue the rss part's interrupted output."
    )
    parser.add_argument(
        "--dask-volume", type=int, nargs=2, default=(8, 1024), help="Sections and side."
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": shlex.join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg_start": os.getloadavg(),
        "threads": args.threads,
    }
    for part in args.parts.split(","):
        PARTS[part](args, results)
    results["loadavg_end"] = os.getloadavg()
    rss = f"-{args.rss_gb:g}gb-w{args.rss_workers}" if "rss" in args.parts else ""
    name = args.parts.replace(",", "-") + rss
    name += "-{}x{}".format(*args.dask_volume) if "dask" in args.parts else ""
    (args.work / f"detect-{name}.json").write_text(json.dumps(results, indent=2, default=float))
    print(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
