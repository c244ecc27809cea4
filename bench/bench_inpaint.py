"""Benchmark: filling holes in real EM, and repairing drawn artifacts, with known ground truth.

Data: the 30 ISBI 2012 training slices (shared data), clean serial-section TEM. The inpainting
model is trained on slices 0-23 (``emae pretrain --model inpainting-ae``, ``--steps`` steps of
``--batch`` patches of ``--patch`` pixels); slices 24-29 are held out.

**Inpainting.** For every hole size s in ``--sizes`` and shape (``blob``: a disk of diameter s;
``band``: a straight strip of width s and length max(4 s, 64) at a random angle), ``--holes``
seeded holes are cut into each held-out slice, apart from each other. Filled by

- emae: ``emae inpaint`` (:func:`emae.commands.restore.inpaint`, fp32, float32 output);
- biharmonic inpainting (``skimage.restoration.inpaint_biharmonic``);
- OpenCV Telea and Navier-Stokes (``cv2.inpaint``, radius 5, on the uint8 slices);

scored inside the holes only: PSNR (from the mean squared error over the hole pixels) and SSIM
(scikit-image's SSIM map averaged over the hole pixels), data range 255.

**Repair.** With a detection model (``--detect-model``, an ``emae pretrain`` folder trained
without slices 25-29, e.g. bench_isbi_artifacts.py's ``runs/bench/isbi/model``), ``--per-slice``
artifacts of every kind of :data:`emae.synth.artifacts.ARTIFACT_TYPES` are drawn onto slices
25-29 (one slice per kind and slice, as bench_isbi_artifacts does) and ``emae repair``
(:func:`emae.commands.repair.repair`) runs on them. Reported per kind and pooled: PSNR against
the clean slice of the corrupted and of the repaired image, inside the artifact masks and
outside them, and the share of the artifact's pixels that were replaced.

Usage::

    python bench/bench_inpaint.py [--data DATA] [--out runs/bench/inpaint] [--steps 1500]
        [--batch 8] [--patch 128] [--sizes 8,16,32,64] [--holes 6] [--threads 2]
        [--detect-model runs/bench/isbi/model] [--reuse]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import tifffile
import torch
import zarr
from PIL import Image as PILImage
from skimage.draw import disk, polygon
from skimage.metrics import structural_similarity
from skimage.restoration import inpaint_biharmonic

from emae.commands.inpaint import inpaint
from emae.commands.pretrain import pretrain
from emae.commands.repair import repair
from emae.synth.artifacts import ARTIFACT_TYPES, inject
from emae.train.config import PretrainConfig

REPO = Path(__file__).resolve().parents[1]
HELD_OUT = range(24, 30)
REPAIR_SLICES = range(25, 30)


def default_data() -> Path:
    return Path(os.environ.get("EMAE_DATA", REPO.parent / "shared" / "data"))


def load_slices(data: Path) -> np.ndarray:
    folder = data / "isbi2012" / "train" / "image"
    return np.stack(
        [np.asarray(PILImage.open(folder / f"{i}.png").convert("L")) for i in range(30)]
    )


def holes(shape: tuple[int, int], size: int, kind: str, count: int, seed: int) -> np.ndarray:
    """``count`` holes of ``kind`` and ``size`` at least ``size`` pixels apart: bool."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, bool)
    taken = np.zeros(shape, bool)
    length = max(4 * size, 64)
    reach = (length if kind == "band" else size) // 2 + 4
    for _ in range(200 * count):
        if int(mask.any()) and _count(mask) >= count:
            break
        cy, cx = (int(rng.integers(reach, s - reach)) for s in shape)
        one = np.zeros(shape, bool)
        if kind == "blob":
            one[disk((cy, cx), size / 2, shape=shape)] = True
        else:
            a = rng.uniform(0, np.pi)
            u, v = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
            corners = [
                (cy, cx) + (sl * length / 2) * u[::-1] + (sw * size / 2) * v[::-1]
                for sl, sw in ((-1, -1), (-1, 1), (1, 1), (1, -1))
            ]
            rows, cols = zip(*corners, strict=True)
            one[polygon(rows, cols, shape=shape)] = True
        if (one & taken).any():
            continue
        mask |= one
        grown = np.zeros(shape, bool)
        ys, xs = np.nonzero(one)
        grown[
            max(ys.min() - size, 0) : ys.max() + size + 1,
            max(xs.min() - size, 0) : xs.max() + size + 1,
        ] = True
        taken |= grown
    return mask


def _count(mask: np.ndarray) -> int:
    from scipy import ndimage

    return int(ndimage.label(mask)[1])


def inside(restored: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    r, c = restored.astype(np.float64), clean.astype(np.float64)
    mse = float(np.mean((r[mask] - c[mask]) ** 2))
    _, ssim_map = structural_similarity(c, r, data_range=255.0, full=True)
    return {
        "psnr": 10 * np.log10(255.0**2 / mse) if mse > 0 else float("inf"),
        "ssim": float(ssim_map[mask].mean()),
    }


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    mse = float(np.mean((a[mask].astype(np.float64) - b[mask].astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse) if mse > 0 else float("inf")


def train_model(slices: np.ndarray, out: Path, args) -> dict:
    tifffile.imwrite(out / "train.tif", slices[:24])
    config = PretrainConfig(
        model="inpainting-ae",
        steps=args.steps,
        batch_size=args.batch,
        patch_size=args.patch,
        seed=args.seed,
        threads=args.threads,
        score_patches=16,
        val_every=max(args.steps // 5, 1),
    )
    if args.reuse and (out / "model").is_dir():
        return json.loads((out / "model" / "training.json").read_text())
    return pretrain([out / "train.tif"], out / "model", config, progress=False, overwrite=True)


def bench_inpainting(slices: np.ndarray, out: Path, args) -> list[dict]:
    test = slices[list(HELD_OUT)]
    tifffile.imwrite(out / "test.tif", test)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for kind in ("blob", "band"):
            masks = np.stack(
                [
                    holes(t.shape, size, kind, args.holes, args.seed + 97 * i + size)
                    for i, t in enumerate(test)
                ]
            )
            # One mask file and one output per case: a rerun with the same paths resumes.
            holes_tif, filled_zarr = (
                out / f"holes-{kind}-{size}.tif",
                out / f"filled-{kind}-{size}.zarr",
            )
            tifffile.imwrite(holes_tif, masks.astype(np.uint8))
            results = {}
            began = time.perf_counter()
            inpaint(
                out / "model",
                out / "test.tif",
                filled_zarr,
                mask=holes_tif,
                dtype="float32",
                scheduler="synchronous",
                chunk=512,
                progress=False,
                overwrite=True,
            )
            filled = zarr.open_array(str(filled_zarr / "0"), mode="r")[:]
            results["emae"] = (filled, time.perf_counter() - began)
            began = time.perf_counter()
            bih = 255 * np.stack(  # scikit-image works on the image as floats in [0, 1]
                [inpaint_biharmonic(t, m) for t, m in zip(test, masks, strict=True)]
            )
            results["biharmonic"] = (bih, time.perf_counter() - began)
            for name, flag in (("opencv_telea", cv2.INPAINT_TELEA), ("opencv_ns", cv2.INPAINT_NS)):
                began = time.perf_counter()
                done = np.stack(
                    [
                        cv2.inpaint(t, m.astype(np.uint8), 5, flag)
                        for t, m in zip(test, masks, strict=True)
                    ]
                )
                results[name] = (done, time.perf_counter() - began)
            row = {"size": size, "kind": kind, "hole_pixels": int(masks.sum())}
            for name, (images, seconds) in results.items():
                per = [inside(i, t, m) for i, t, m in zip(images, test, masks, strict=True)]
                row[name] = {
                    "psnr": float(np.mean([p["psnr"] for p in per])),
                    "ssim": float(np.mean([p["ssim"] for p in per])),
                    "seconds": seconds,
                }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def bench_repair(slices: np.ndarray, out: Path, args) -> list[dict]:
    rows = []
    for kind in ARTIFACT_TYPES:
        clean = slices[list(REPAIR_SLICES)]
        corrupted, masks = [], []
        for i, image in enumerate(clean):
            unit = image.astype(np.float32) / 255
            mask = np.zeros(image.shape, bool)
            for j in range(args.per_slice):
                unit, m = inject(unit, kind, seed=args.seed + 1000 * i + j)
                mask |= m
            corrupted.append(np.rint(np.clip(unit, 0, 1) * 255).astype(np.uint8))
            masks.append(mask)
        corrupted, masks = np.stack(corrupted), np.stack(masks)
        tifffile.imwrite(out / f"corrupted-{kind}.tif", corrupted)
        folder = out / f"repair-{kind}"
        summary = repair(
            args.detect_model,
            out / "model",
            out / f"corrupted-{kind}.tif",
            folder,
            scheduler="synchronous",
            chunk=512,
            progress=False,
            overwrite=True,
        )
        repaired = zarr.open_array(str(folder / "repaired.zarr" / "0"), mode="r")[:]
        replaced = zarr.open_array(str(folder / "mask.zarr" / "0"), mode="r")[:].astype(bool)
        row = {
            "kind": kind,
            "artifact_pixels": int(masks.sum()),
            "replaced_pixels": int(replaced.sum()),
            "artifact_replaced": float((replaced & masks).sum() / max(masks.sum(), 1)),
            "clean_replaced": float((replaced & ~masks).sum() / (~masks).sum()),
            "psnr_inside": {
                "corrupted": psnr(corrupted, clean, masks),
                "repaired": psnr(repaired, clean, masks),
            },
            "psnr_outside": {
                "corrupted": psnr(corrupted, clean, ~masks),
                "repaired": psnr(repaired, clean, ~masks),
            },
            "threshold": summary["threshold"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "inpaint")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--sizes", default="8,16,32,64")
    parser.add_argument("--holes", type=int, default=6)
    parser.add_argument("--per-slice", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--detect-model", type=Path)
    parser.add_argument("--reuse", action="store_true", help="Keep a trained model in --out.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    slices = load_slices(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    training = train_model(slices, args.out, args)
    record = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": platform.processor() or platform.machine(),
        "cpu_flags": sorted(
            f
            for f in set(open("/proc/cpuinfo").read().split())
            if f in ("avx512f", "avx512_bf16", "amx_bf16", "avx2")
        ),
        "threads": args.threads,
        "training": {
            k: training.get(k) for k in ("seconds", "steps_done", "best_val", "precision")
        },
        "inpainting": bench_inpainting(slices, args.out, args),
        "repair": bench_repair(slices, args.out, args) if args.detect_model else None,
    }
    (args.out / "results.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
