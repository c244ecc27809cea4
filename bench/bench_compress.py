"""Benchmark: emae's learned codec against JPEG, JPEG 2000, WebP and JPEG XL on real EM.

Rate-distortion (``--part rd``), per dataset:

- ``isbi``: serial-section TEM (ISBI 2012). The codecs train on the slices that
  bench_isbi_artifacts.py trains on (train 0-24 and test 0-24) and are measured on the 10
  held-out slices (train 25-29, test 25-29), 512 x 512 each.
- ``nanofiber``: SEM of nanofibres. Every third micrograph group (sorted by name) is held out:
  the codecs train on the images of the other groups and are measured on the first image of
  each held-out group (350 x 512).

For each of ``--models`` (``codec``, the factorized prior, and ``codec-hyperprior``) and each
``--lambdas`` value (default :data:`LAMBDAS`) one codec (``emae pretrain --model M``,
``--steps`` steps of ``--batch-size`` patches, fp32) is trained (or reused from
``OUT/models``), and each held-out image is coded whole as one chunk, exactly as
``emae compress`` does with a chunk covering the image (the bitstream bytes, header included,
count). The peers run in the same process through
imagecodecs at their own quality settings: JPEG (libjpeg-turbo), JPEG 2000 (OpenJPEG, target
PSNR), WebP (libwebp, lossy, the gray image as RGB) and JPEG XL (libjxl, butteraugli distance).
Per setting: mean bits per pixel, mean PSNR (8-bit peak) and mean MS-SSIM (pytorch-msssim).
Then the BD-rate of emae against each peer (PCHIP of log-rate over PSNR, over the PSNR range
both cover; and over the part where emae's rate is within 0.1-0.5 bpp) and every codec's PSNR
at 0.15 bpp (interpolated; "n/a" outside its measured range).

Science (``--part science``, ISBI): the held-out slices with the artifacts of
bench_isbi_artifacts.py drawn on them are compressed by every emae quality level and by
JPEG 2000 at its settings; the detector of ``--detect-model`` (a model folder trained by
bench_isbi_artifacts.py) maps the decoded images, and the pooled pixel AUROC is compared with
the one on the original images.

Throughput (``--part throughput``): ``emae compress`` (``--workers`` one-thread Dask workers)
and ``emae decompress`` on a generated uint8 volume of ``--gb`` GB (4096 x 4096 sections of
synthetic tissue), each in a subprocess as a user runs it: MP/s, wall time, peak RSS of the
largest process and of the process tree (bench_restore.py's measurement).

Usage::

    python bench/bench_compress.py [--data DATA] [--out runs/bench/compress] [--part rd science]
                                   [--datasets isbi nanofiber] [--lambdas L ...]
                                   [--models codec codec-hyperprior]
                                   [--steps 12000] [--batch-size 8] [--threads N]
                                   [--detect-model runs/bench/isbi-torch/model]
                                   [--gb 1.0] [--workers 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import imagecodecs
import numpy as np
import torch
from PIL import Image as PILImage
from pytorch_msssim import ms_ssim
from scipy.interpolate import PchipInterpolator

from emae.commands.pretrain import pretrain
from emae.compress import ChunkCoder
from emae.train.config import PretrainConfig

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

Codec = Callable[[np.ndarray], tuple[int, np.ndarray]]  # uint8 (H, W) -> (bytes, decoded)

PEERS: dict[str, tuple[str, list[float]]] = {
    "JPEG": ("quality", [5, 10, 20, 30, 50, 70, 90]),
    "JPEG 2000": ("target PSNR dB", [16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 44]),
    "WebP": ("quality", [0, 5, 10, 20, 40, 60, 80, 95]),
    "JPEG XL": ("distance", [0.5, 1, 2, 3, 4, 6, 8, 12, 16, 25]),
}


def default_data() -> Path:
    return Path(os.environ.get("EMAE_DATA", REPO.parent / "shared" / "data"))


def peer_codec(name: str, setting: float) -> Codec:
    """Encode then decode a uint8 gray image with a peer at one setting."""

    def run(image: np.ndarray) -> tuple[int, np.ndarray]:
        if name == "JPEG":
            data = imagecodecs.jpeg8_encode(image, level=int(setting), optimize=True)
            return len(data), imagecodecs.jpeg8_decode(data)
        if name == "JPEG 2000":
            data = imagecodecs.jpeg2k_encode(image, level=setting)
            return len(data), imagecodecs.jpeg2k_decode(data)
        if name == "WebP":  # libwebp codes RGB(A); a gray image has equal channels
            data = imagecodecs.webp_encode(
                np.repeat(image[..., None], 3, -1), level=setting, lossless=False
            )
            return len(data), imagecodecs.webp_decode(data)[..., 0]
        data = imagecodecs.jpegxl_encode(image, distance=setting)
        return len(data), imagecodecs.jpegxl_decode(data)

    return run


def emae_codec(folder: Path) -> Codec:
    coder = ChunkCoder.from_folder(folder)

    def run(image: np.ndarray) -> tuple[int, np.ndarray]:
        data = coder.encode(image)
        decoded = np.clip(np.rint(coder.decode(data, image.shape)), 0, 255).astype(np.uint8)
        return len(data), decoded

    return run


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse) if mse > 0 else float("inf")


def measure(codec: Codec, images: list[np.ndarray]) -> dict[str, float]:
    bpp, psnrs, msssims = [], [], []
    began = time.perf_counter()
    for image in images:
        size, decoded = codec(image)
        bpp.append(8 * size / image.size)
        psnrs.append(psnr(image, decoded))
        pair = [torch.from_numpy(x.astype(np.float32))[None, None] for x in (image, decoded)]
        msssims.append(float(ms_ssim(*pair, data_range=255.0)))
    return {
        "bpp": float(np.mean(bpp)),
        "psnr": float(np.mean(psnrs)),
        "ms_ssim": float(np.mean(msssims)),
        "seconds": time.perf_counter() - began,
    }


def _quality(point: dict[str, float], key: str) -> float:
    """PSNR, or MS-SSIM in decibels (``-10 log10(1 - MS-SSIM)``, as CompressAI plots it)."""
    return point["psnr"] if key == "psnr" else -10 * np.log10(1 - point["ms_ssim"])


def _curve(points: list[dict[str, float]], key: str = "psnr") -> tuple[np.ndarray, np.ndarray]:
    """(log rate, quality) sorted by rate, keeping the points where quality rises with rate."""
    pts = sorted((p["bpp"], _quality(p, key)) for p in points)
    kept = [pts[0]]
    for r, q in pts[1:]:
        if q > kept[-1][1] and r > kept[-1][0]:
            kept.append((r, q))
    rate, quality = np.array(kept).T
    return np.log(rate), quality


def bd_rate(
    anchor: list[dict[str, float]],
    test: list[dict[str, float]],
    rate_range: tuple[float, float] | None = None,
    key: str = "psnr",
) -> float | None:
    """Bjøntegaard delta rate of ``test`` against ``anchor``, percent (negative: fewer bits at
    the same quality ``key``), over the quality interval both cover (and where ``test``'s rate
    lies in ``rate_range``, when given); None without overlap."""
    la, qa = _curve(anchor, key)
    lt, qt = _curve(test, key)
    if len(qa) < 2 or len(qt) < 2:
        return None
    low, high = max(qa.min(), qt.min()), min(qa.max(), qt.max())
    if rate_range is not None:
        to_quality = PchipInterpolator(lt, qt)
        bounds = np.log(np.clip(rate_range, np.exp(lt.min()), np.exp(lt.max())))
        low, high = max(low, float(to_quality(bounds[0]))), min(high, float(to_quality(bounds[1])))
    if high <= low:
        return None
    grid = np.linspace(low, high, 1000)
    gap = PchipInterpolator(qt, lt)(grid) - PchipInterpolator(qa, la)(grid)
    return float(100 * (np.exp(gap.mean()) - 1))


def quality_at(points: list[dict[str, float]], rate: float) -> float | None:
    """PSNR at ``rate`` bpp, interpolated on the curve; None outside its measured range."""
    lr, q = _curve(points)
    if not lr.min() <= np.log(rate) <= lr.max() or len(q) < 2:
        return None
    return float(PchipInterpolator(lr, q)(np.log(rate)))


def isbi_split(data: Path) -> tuple[list[Path], list[Path]]:
    from bench_isbi_artifacts import split

    return split(data, 5)


def nanofiber_split(data: Path) -> tuple[list[Path], list[Path]]:
    root = data / "nanofiber_sem"
    rows = [line.split(",") for line in (root / "labels.csv").read_text().splitlines()[1:]]
    groups = sorted({g for _, _, g in rows})
    held = set(groups[::3])
    train = [root / p for p, _, g in rows if g not in held]
    first = {}
    for p, _, g in rows:
        if g in held:
            first.setdefault(g, root / p)
    return train, [first[g] for g in sorted(first)]


SPLITS = {"isbi": isbi_split, "nanofiber": nanofiber_split}
#: Quality levels per dataset, chosen to span about 0.1-1 bpp on each (nanofibre SEM is
#: smoother than the TEM slices, so the same lambda costs fewer bits there).
LAMBDAS = {
    "isbi": [0.0004, 0.001, 0.0025, 0.006, 0.015],
    "nanofiber": [0.002, 0.006, 0.015, 0.04],
}


def model_folder(out: Path, dataset: str, model: str, lmbda: float) -> Path:
    kind = "" if model == "codec" else model.removeprefix("codec-") + "-"
    return out / "models" / f"{dataset}-{kind}{lmbda:g}"


def train_codec(
    out: Path, dataset: str, train: list[Path], model: str, lmbda: float, args: argparse.Namespace
) -> tuple[Path, dict]:
    folder = model_folder(out, dataset, model, lmbda)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if (folder / "config.json").is_file():
        summary = json.loads((folder / "training.json").read_text())
        return folder, {"reused": True, "seconds": summary.get("seconds")}
    config = PretrainConfig(
        model=model,
        rd_lambda=lmbda,
        steps=args.steps,
        batch_size=args.batch_size,
        precision="fp32",
        val_every=max(args.steps // 4, 1),
        score="pixel",
        score_patches=16,
    )
    began = time.perf_counter()
    summary = pretrain([str(p) for p in train], folder, config, overwrite=True, progress=False)
    wall = time.perf_counter() - began
    print(f"  trained {folder.name}: {summary['steps_done']} steps in {wall:.0f} s", flush=True)
    return folder, {"reused": False, "seconds": summary["seconds"], "best_val": summary["best_val"]}


def summarize(curves: dict[str, list[dict]]) -> dict:
    """Per codec: emae's BD-rates against every other curve (PSNR, PSNR with emae at 0.1-0.5
    bpp, MS-SSIM in dB) and every codec's PSNR at 0.15 bpp."""
    out = {}
    for name, points in curves.items():
        others = [p for p in curves if p != name] if name.startswith("emae") else []
        out[name] = {
            "bd_rate_vs": {p: bd_rate(curves[p], points) for p in others},
            "bd_rate_0.1_0.5_bpp_vs": {p: bd_rate(curves[p], points, (0.1, 0.5)) for p in others},
            "bd_rate_ms_ssim_vs": {p: bd_rate(curves[p], points, key="ms_ssim") for p in others},
            "psnr_at_0.15_bpp": quality_at(points, 0.15),
        }
    return out


def rate_distortion(args: argparse.Namespace) -> dict:
    results = {}
    for dataset in args.datasets:
        train, held = SPLITS[dataset](args.data)
        images = [np.asarray(PILImage.open(p).convert("L")) for p in held]
        print(f"{dataset}: {len(train)} training images, {len(images)} held out", flush=True)
        curves: dict[str, list[dict]] = {}
        for model in args.models:
            for lmbda in args.lambdas or LAMBDAS[dataset]:
                folder, info = train_codec(args.out, dataset, train, model, lmbda, args)
                point = {"lambda": lmbda, **measure(emae_codec(folder), images), "training": info}
                curves.setdefault(f"emae {model}", []).append(point)
                print(f"  {model} {lmbda:g}: {point['bpp']:.3f} bpp {point['psnr']:.2f} dB")
        for name, (what, settings) in PEERS.items():
            curves[name] = [{what: s, **measure(peer_codec(name, s), images)} for s in settings]
        summary = summarize(curves)
        results[dataset] = {
            "train_images": len(train),
            "held_out": [str(p.relative_to(args.data)) for p in held],
            "curves": curves,
            "summary": summary,
        }
        print_tables(dataset, curves, summary)
    return results


def science(args: argparse.Namespace) -> dict:
    """Pooled and per-kind pixel AUROC of the detector on decoded images, per codec setting."""
    from bench_isbi_artifacts import corrupted_set, pixel_aurocs
    from emae.anomaly.detector import AutoencoderDetector
    from emae.synth.artifacts import ARTIFACT_TYPES

    _, held = isbi_split(args.data)
    slices = [np.asarray(PILImage.open(p)) for p in held]
    sets = {k: corrupted_set(slices, k, 3, 0) for k in ARTIFACT_TYPES}
    images = {k: np.clip(np.rint(x), 0, 255).astype(np.uint8) for k, (x, _) in sets.items()}
    masks = {k: m for k, (_, m) in sets.items()}
    detector = AutoencoderDetector.from_bundle(args.detect_model, batch_size=4)
    codecs: dict[str, Codec | None] = {"original": None}
    for model in args.models:
        for lmbda in args.lambdas or LAMBDAS["isbi"]:
            folder = model_folder(args.out, "isbi", model, lmbda)
            if (folder / "config.json").is_file():
                codecs[f"emae {model} lambda {lmbda:g}"] = emae_codec(folder)
    for level in (20, 24, 28, 32):
        codecs[f"JPEG 2000 {level} dB"] = peer_codec("JPEG 2000", level)
    rows = {}
    for name, codec in codecs.items():
        began = time.perf_counter()
        sizes, maps = [], {}
        for kind, stack in images.items():
            decoded = []
            for image in stack:
                size, out = (image.nbytes, image) if codec is None else codec(image)
                sizes.append(8 * size / image.size)
                decoded.append(out)
            maps[kind] = detector.anomaly_map(np.stack(decoded))
        rows[name] = {"bpp": float(np.mean(sizes)), **pixel_aurocs(maps, masks)}
        rows[name]["seconds"] = time.perf_counter() - began
        print(f"{name}: {rows[name]['bpp']:.3f} bpp, pooled AUROC {rows[name]['overall']:.3f}")
    kinds = list(ARTIFACT_TYPES)
    print("\n| codec | bpp | pooled AUROC | mean of kinds | " + " | ".join(kinds) + " |")
    print("|---|---|---|---|" + "---|" * len(kinds))
    for name, row in rows.items():
        cells = " | ".join(f"{row[k]:.3f}" for k in kinds)
        print(f"| {name} | {row['bpp']:.3f} | {row['overall']:.3f} | {row['mean']:.3f} | {cells} |")
    return {"detect_model": str(args.detect_model), "rows": rows}


def throughput(args: argparse.Namespace) -> dict:
    """``emae compress`` and ``emae decompress`` on a generated volume of ``--gb`` GB, each in a
    subprocess as a user runs them: MP/s, wall time and peak memory."""
    from bench_detect_phases import _volume
    from bench_restore import SIDE, _run

    work = args.out / "throughput"
    work.mkdir(parents=True, exist_ok=True)
    z = max(1, round(args.gb * 1e9 / SIDE**2))
    volume = _volume(work / f"volume-{z}x{SIDE}.zarr", (z, SIDE, SIDE))
    model = work / "codec"
    if not (model / "config.json").is_file():  # the time per pixel does not depend on weights
        config = PretrainConfig(
            model="codec", steps=20, batch_size=8, score="pixel", score_patches=16
        )
        pretrain([str(volume)], model, config, progress=False)
    container, decoded = work / f"volume-{z}.codec.zarr", work / f"decoded-{z}.zarr"
    rows = {}
    for name, command in (
        ("compress", ["compress", str(model), str(volume), "--out", str(container),
                      "--workers", str(args.workers), "--threads", "1", "--overwrite"]),
        ("decompress", ["decompress", str(container), "--out", str(decoded), "--overwrite"]),
    ):  # fmt: skip
        rows[name] = {"volume_gb": z * SIDE**2 / 1e9, "sections": z, **_run(command)}
        print(json.dumps(rows[name]), flush=True)
    return {"workers": args.workers, "rows": rows}


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def print_tables(dataset: str, curves: dict, summary: dict) -> None:
    print(f"\n{dataset}: bpp / PSNR dB / MS-SSIM per setting")
    for name, points in curves.items():
        cells = ", ".join(f"{p['bpp']:.3f}/{p['psnr']:.2f}/{p['ms_ssim']:.4f}" for p in points)
        print(f"  {name}: {cells}")
    ours = [n for n in curves if n.startswith("emae")]
    head = " | ".join(f"{n}: BD-rate vs it (PSNR / at 0.1-0.5 bpp / MS-SSIM)" for n in ours)
    print(f"\n| codec | PSNR at 0.15 bpp | {head} |")
    print("|---|---|" + "---|" * len(ours))
    for name in curves:
        cells = []
        for own in ours:
            found = [
                summary[own][k].get(name)
                for k in ("bd_rate_vs", "bd_rate_0.1_0.5_bpp_vs", "bd_rate_ms_ssim_vs")
            ]
            cells.append(" / ".join(f"{_fmt(v)}%" for v in found) if name != own else "-")
        print(
            f"| {name} | {_fmt(summary[name]['psnr_at_0.15_bpp'], '.2f')} | {' | '.join(cells)} |"
        )


COLORS = {
    "emae codec": "k",
    "emae codec-hyperprior": "C7",
    "JPEG": "C0",
    "JPEG 2000": "C1",
    "WebP": "C2",
    "JPEG XL": "C3",
}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        2, len(results), figsize=(5 * len(results), 7), squeeze=False, layout="constrained"
    )
    for col, (dataset, result) in enumerate(results.items()):
        for row, key in enumerate(("psnr", "ms_ssim")):
            ax = axes[row, col]
            for name, points in result["curves"].items():
                name = "emae codec" if name == "emae" else name  # the key before there were two
                pts = sorted(points, key=lambda p: p["bpp"])
                style = {"lw": 2.5} if name.startswith("emae") else {"lw": 1.2, "ls": "--"}
                ax.plot(
                    [p["bpp"] for p in pts],
                    [p[key] for p in pts],
                    "o-",
                    ms=3,
                    label=name,
                    color=COLORS.get(name),
                    **style,
                )
            ax.set_xscale("log")
            ax.set_xlabel("bits per pixel")
            ax.set_ylabel("PSNR (dB)" if key == "psnr" else "MS-SSIM")
            ax.set_title(f"{dataset}: held-out images")
            ax.grid(alpha=0.3)
        axes[0, col].legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "compress")
    parser.add_argument(
        "--part", nargs="+", default=["rd"], choices=["rd", "science", "throughput"]
    )
    parser.add_argument("--gb", type=float, default=1.0, help="Throughput: volume size, GB.")
    parser.add_argument("--workers", type=int, default=2, help="Throughput: Dask workers.")
    parser.add_argument("--datasets", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--lambdas", nargs="+", type=float, help="Default: LAMBDAS per dataset.")
    parser.add_argument("--steps", type=int, default=12000)
    parser.add_argument(
        "--models", nargs="+", default=["codec", "codec-hyperprior"], help="emae's codecs."
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--detect-model", type=Path, default=REPO / "runs/bench/isbi-torch/model")
    parser.add_argument("--plot", type=Path, default=None, help="Also save the RD plot here.")
    parser.add_argument("--tables", action="store_true", help="Print the tables of OUT/rd.json.")
    args = parser.parse_args()
    if args.tables:
        stored = json.loads((args.out / "rd.json").read_text())["rate_distortion"]
        for dataset, result in stored.items():
            print(f"\n## {dataset} ({result.get('command', 'command not stored')})")
            print_tables(dataset, result["curves"], summarize(result["curves"]))
        if args.plot is not None:
            plot(stored, args.plot)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.date.today().isoformat(),
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cpu_flags": sorted(
            f
            for f in set(Path("/proc/cpuinfo").read_text().split())
            if f in ("avx512f", "avx512_bf16", "amx_bf16", "avx2")
        ),
        "imagecodecs": imagecodecs.__version__,
        "steps": args.steps,
        "batch_size": args.batch_size,
    }
    if "rd" in args.part:
        found = rate_distortion(args)
        for result in found.values():  # each dataset keeps the command that measured it
            result.update(command=record["command"], date=record["date"])
        previous = args.out / "rd.json"
        earlier = json.loads(previous.read_text()) if previous.is_file() else {}
        record["rate_distortion"] = {**earlier.get("rate_distortion", {}), **found}
        previous.write_text(json.dumps(record, indent=2))
        plot(record["rate_distortion"], args.out / "rd.png")
        if args.plot is not None:
            plot(record["rate_distortion"], args.plot)
    if "science" in args.part:
        record["science"] = science(args)
        (args.out / "science.json").write_text(json.dumps(record, indent=2))
    if "throughput" in args.part:
        record["throughput"] = throughput(args)
        (args.out / "throughput.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
