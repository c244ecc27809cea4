"""Benchmark: denoising real EM with known ground truth, emae against its peers in one run.

The ISBI 2012 slices (shared data) are clean serial-section TEM. Each is scaled to [0, 1] and
given Poisson-Gaussian noise at ``--levels`` (``photons:sigma``: ``Poisson(photons * x) / photons
+ N(0, sigma)``, seeded). Per level:

- **emae blind-spot**, twice: with the steps of N2V, and with as many steps as it runs in N2V's
  training time (``emae_blind_spot_equal_time``): ``emae pretrain --model blind-spot``
  (:func:`emae.commands.pretrain.pretrain`, default U-Net, ``--steps`` steps of ``--batch``
  patches of 64 x 64) on the noisy training slices alone (a float32 stack), then
  ``emae denoise`` (:func:`emae.commands.restore.denoise`, fp32, float32 output) on the noisy
  held-out slices, as a user runs it (its prediction combined with the noisy pixel by a noise
  model fitted on the input), with ``noise="off"`` (the prediction alone, ``..._alone``) and
  with the true model of the added noise, ``A,B = 1 / photons, sigma**2`` (an oracle, as the
  peers' sigmas are; ``..._oracle_noise``).
- **CAREamics Noise2Void** (``careamics`` in its own virtual environment, ``--peers-python``),
  trained from scratch on the same noisy training slices with the same steps, batch and patch
  size (bench/n2v_peer.py), predicting the same held-out slices.
- **BM3D** (PyPI ``bm3d``, also in that environment) with ``sigma_psd`` set to the true standard
  deviation of the noise on the training slices (an oracle a real user does not have).
- **non-local means** (scikit-image, ``h = 0.8 sigma`` as its documentation advises, with the
  same oracle ``sigma``) and a **Gaussian filter** (the sigma of 0.5 to 3 that is
  best on the training slices: an oracle again);
- the noisy input itself.

Reported: PSNR and SSIM (scikit-image, data range 1) against the clean held-out slices, mean over
slices; training seconds of the two learned methods; inference seconds.

Usage::

    python bench/bench_denoise.py [--data DATA] [--out runs/bench/denoise] [--steps 1500]
        [--batch 16] [--levels 60:0.02,20:0.05,8:0.1] [--holdout 6] [--threads 2]
        [--peers-python /path/to/venv/bin/python]

``--peers-python`` defaults to ``$EMAE_PEERS_PYTHON``; without it, the CAREamics and BM3D rows
are left out and the benchmark says so. Run it alone: nothing else CPU-heavy at the same time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image as PILImage
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.restoration import denoise_nl_means

from emae.commands.denoise import denoise
from emae.commands.pretrain import pretrain
from emae.train.config import PretrainConfig

REPO = Path(__file__).resolve().parents[1]
PEER = Path(__file__).with_name("n2v_peer.py")


def default_data() -> Path:
    return Path(os.environ.get("EMAE_DATA", REPO.parent / "shared" / "data"))


def load_slices(data: Path) -> np.ndarray:
    """The 30 ISBI training slices, ``(30, 512, 512)`` float32 in [0, 1]."""
    folder = data / "isbi2012" / "train" / "image"
    return np.stack(
        [np.asarray(PILImage.open(folder / f"{i}.png").convert("L")) for i in range(30)]
    ).astype(np.float32) / np.float32(255)


def add_noise(clean: np.ndarray, photons: float, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shot = rng.poisson(clean.astype(np.float64) * photons) / photons
    return (shot + rng.normal(0.0, sigma, clean.shape)).astype(np.float32)


def scores(restored: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    psnr = [
        peak_signal_noise_ratio(c, r, data_range=1.0) for c, r in zip(clean, restored, strict=True)
    ]
    ssim = [
        structural_similarity(c, r, data_range=1.0) for c, r in zip(clean, restored, strict=True)
    ]
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim))}


def emae_blind_spot(
    train, test, work: Path, args, steps: int, oracle: str
) -> tuple[dict[str, np.ndarray], dict]:
    tifffile.imwrite(work / "train.tif", train)
    tifffile.imwrite(work / "test.tif", test)
    config = PretrainConfig(
        model="blind-spot",
        steps=steps,
        batch_size=args.batch,
        patch_size=64,
        seed=args.seed,
        threads=args.threads,
        score_patches=16,
        val_every=max(steps // 5, 1),
        skip_padding=False,
    )
    began = time.perf_counter()
    model, out = work / f"model-{steps}", work / f"den-{steps}.zarr"  # one of each per run
    summary = pretrain([work / "train.tif"], model, config, progress=False)
    fitted = time.perf_counter() - began
    import zarr

    found, timing = {}, {}
    # The default (a noise model fitted on the input), the prediction alone, and the true
    # model of the added noise (an oracle, as BM3D's sigma).
    for noise in ("auto", "off", oracle):
        began = time.perf_counter()
        run = denoise(
            model,
            work / "test.tif",
            out.with_name(f"{out.stem}-{len(timing)}.zarr"),
            dtype="float32",
            scheduler="synchronous",
            chunk=512,
            progress=False,
            noise=noise,
        )
        key = noise if noise in ("auto", "off") else "oracle"
        found[key] = zarr.open_array(str(out.with_name(f"{out.stem}-{len(timing)}.zarr") / "0"))[:]
        timing[key] = {"infer_seconds": time.perf_counter() - began, "noise": run["noise"]}
    return found, {
        "train_seconds": summary["seconds"],
        "pretrain_seconds": fitted,
        "precision": summary.get("precision"),
        "steps": steps,
        "runs": timing,
    }


def peers(python: str, train, test, noise_sd: float, work: Path, args) -> dict:
    np.savez(work / "peer_in.npz", train=train, test=test)
    command = [
        python,
        str(PEER),
        str(work / "peer_in.npz"),
        str(work / "peer_out.npz"),
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--sigma",
        str(noise_sd),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
    ]
    subprocess.run(command, check=True, cwd=work)
    with np.load(work / "peer_out.npz") as f:
        return {k: f[k] for k in f.files}


def gaussian_best(train_noisy, train_clean) -> float:
    sigmas = [0.5, 0.75, 1.0, 1.5, 2.0, 3.0]
    psnr = [
        scores(ndimage.gaussian_filter(train_noisy[:4], (0, s, s)), train_clean[:4])["psnr"]
        for s in sigmas
    ]
    return sigmas[int(np.argmax(psnr))]


def nl_means(test: np.ndarray, sigma: float) -> np.ndarray:
    out = []
    for image in test:
        out.append(
            denoise_nl_means(
                image, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True
            )
        )
    return np.stack(out).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "denoise")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--levels", default="60:0.02,20:0.05,8:0.1")
    parser.add_argument("--holdout", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peers-python", default=os.environ.get("EMAE_PEERS_PYTHON"))
    args = parser.parse_args()
    args.out = args.out.resolve()  # the peers run in a work folder of their own
    torch.set_num_threads(args.threads)
    clean = load_slices(args.data)
    train_clean, test_clean = clean[: -args.holdout], clean[-args.holdout :]
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for k, level in enumerate(args.levels.split(",")):
        photons, sigma = (float(v) for v in level.split(":"))
        train = add_noise(train_clean, photons, sigma, seed=args.seed + 2 * k)
        test = add_noise(test_clean, photons, sigma, seed=args.seed + 2 * k + 1)
        noise_sd = float(np.std(train - train_clean))
        row: dict = {
            "photons": photons,
            "sigma": sigma,
            "noise_sd": noise_sd,
            # What emae's fitted noise model estimates: variance a x + b (the "clean" slices
            # have noise of their own, which the fit sees too).
            "true_noise": {"a": 1 / photons, "b": sigma**2},
        }
        row["noisy"] = scores(test, test_clean)
        began = time.perf_counter()
        s = gaussian_best(train, train_clean)
        row["gaussian"] = {
            **scores(ndimage.gaussian_filter(test, (0, s, s)), test_clean),
            "sigma": s,
            "infer_seconds": time.perf_counter() - began,
        }
        began = time.perf_counter()
        row["nl_means"] = {
            **scores(nl_means(test, noise_sd), test_clean),
            "infer_seconds": time.perf_counter() - began,
        }
        with tempfile.TemporaryDirectory(dir=args.out) as tmp:
            oracle = f"{1 / photons!r},{sigma**2!r}"
            restored, timing = emae_blind_spot(train, test, Path(tmp), args, args.steps, oracle)
            row["emae_blind_spot"] = {**scores(restored["auto"], test_clean), **timing}
            row["emae_blind_spot_alone"] = scores(restored["off"], test_clean)
            row["emae_blind_spot_oracle_noise"] = scores(restored["oracle"], test_clean)
            if args.peers_python:
                found = peers(args.peers_python, train, test, noise_sd, Path(tmp), args)
                for name in ("n2v", "bm3d"):
                    row[f"careamics_{name}" if name == "n2v" else name] = {
                        **scores(found[name], test_clean),
                        **json.loads(str(found[f"{name}_timing"])),
                    }
                # The same training time as N2V: as many steps as emae runs in that time.
                per_step = timing["train_seconds"] / args.steps
                steps = int(row["careamics_n2v"]["train_seconds"] / per_step)
                restored, timing = emae_blind_spot(train, test, Path(tmp), args, steps, oracle)
                row["emae_blind_spot_equal_time"] = {
                    **scores(restored["auto"], test_clean),
                    **timing,
                }
                row["emae_blind_spot_equal_time_alone"] = scores(restored["off"], test_clean)
                row["emae_blind_spot_equal_time_oracle_noise"] = scores(
                    restored["oracle"], test_clean
                )
        results.append(row)
        print(json.dumps(row, indent=1), flush=True)
    record = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": platform.processor() or platform.machine(),
        "cpu_flags": sorted(
            {
                f
                for f in open("/proc/cpuinfo").read().split()
                if f in ("avx512f", "avx512_bf16", "amx_bf16", "avx2")
            }
        ),
        "threads": args.threads,
        "steps": args.steps,
        "batch": args.batch,
        "holdout_slices": args.holdout,
        "peers": "CAREamics N2V and BM3D included" if args.peers_python else "peers env not given",
        "results": results,
    }
    (args.out / "results.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
