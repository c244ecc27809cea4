"""The peers of bench_denoise.py that need their own environment: CAREamics N2V and BM3D.

Run by bench/bench_denoise.py with the peers' Python (it imports neither emae nor anything of the
repository)::

    python n2v_peer.py IN.npz OUT.npz --steps 1500 --batch 16 --sigma 0.05 --seed 0 --threads 2

``IN.npz`` holds ``train`` ``(S, Y, X)`` and ``test`` ``(S2, Y, X)`` float32 noisy images;
``OUT.npz`` gets ``n2v`` and ``bm3d`` (each ``test``'s shape, float32) and ``n2v_timing``,
``bm3d_timing`` (JSON). N2V is CAREamics' ``create_advanced_n2v_config`` with its defaults
(2D U-Net of depth 2 and 32 filters with batch norm; 0.2% of the pixels of each patch masked,
replaced by a random pixel of their 11 x 11 neighbourhood; MSE on the masked pixels; Adam at 1e-3
with ReduceLROnPlateau; flips and 90-degree turns), trained from scratch for exactly ``--steps``
optimizer steps of ``--batch`` patches of 64 x 64, then predicting the whole test images. BM3D is
``bm3d.bm3d(image, sigma_psd=--sigma)``.

The environment (CAREamics 0.3.5 cannot be resolved with torch 2.13.0 by pip: every release caps
torchvision at a version built for an older torch)::

    python -m venv peers && peers/bin/pip install torch==2.13.0
    peers/bin/pip install --no-deps careamics==0.3.5
    peers/bin/pip install -c <(echo torch==2.13.0) <careamics' requirements except torchvision>
        bm3d scikit-image opencv-python-headless
    peers/bin/pip install --no-deps torchvision==0.28.0

PyPI's torchvision 0.28.0 is a CUDA build whose operators cannot load beside a CPU torch;
CAREamics imports torchvision but N2V never calls its operators, so :func:`_torchvision_shim`
declares the two that torchvision's import registers kernels for.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np


def _torchvision_shim() -> None:
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018 - present when torchvision's operators load
        return
    except (AttributeError, RuntimeError):
        pass
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _torchvision_shim.lib = lib  # kept alive


def n2v(train: np.ndarray, test: np.ndarray, steps: int, batch: int, seed: int) -> tuple:
    """Train CAREamics N2V from scratch on ``train``, predict ``test``; (images, timing)."""
    os.environ.setdefault("WANDB_MODE", "disabled")
    _torchvision_shim()
    from careamics import CAREamist
    from careamics.config import create_advanced_n2v_config

    config = create_advanced_n2v_config(
        experiment_name="n2v_peer",
        data_type="array",
        axes="SYX",
        patch_size=[64, 64],
        batch_size=batch,
        num_epochs=None,
        num_workers=0,
        seed=seed + 1,  # CAREamics requires a seed > 0
        trainer_params={
            "max_steps": steps,
            "accelerator": "cpu",
            "devices": 1,
            "num_sanity_val_steps": 0,
            "enable_model_summary": False,
        },
    )
    with tempfile.TemporaryDirectory() as work:
        careamist = CAREamist(config, work_dir=work, enable_progress_bar=False)
        began = time.perf_counter()
        careamist.train(train_data=np.ascontiguousarray(train, np.float32))
        trained = time.perf_counter() - began
        if careamist.trainer.global_step != steps:
            raise RuntimeError(f"N2V ran {careamist.trainer.global_step} steps, not {steps}")
        began = time.perf_counter()
        predictions, _ = careamist.predict(np.ascontiguousarray(test, np.float32), axes="SYX")
        inferred = time.perf_counter() - began
    out = np.concatenate([np.asarray(p) for p in predictions]).reshape(test.shape)
    timing = {"train_seconds": trained, "infer_seconds": inferred, "steps": steps}
    return out.astype(np.float32), timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs")
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--sigma", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    with np.load(args.inputs) as f:
        train, test = f["train"], f["test"]
    denoised, n2v_timing = n2v(train, test, args.steps, args.batch, args.seed)
    import bm3d

    began = time.perf_counter()
    matched = np.stack([np.asarray(bm3d.bm3d(t, sigma_psd=args.sigma)) for t in test])
    bm3d_timing = {"infer_seconds": time.perf_counter() - began, "sigma_psd": args.sigma}
    np.savez(
        args.out,
        n2v=denoised,
        bm3d=matched.astype(np.float32),
        n2v_timing=json.dumps(n2v_timing),
        bm3d_timing=json.dumps(bm3d_timing),
    )


if __name__ == "__main__":
    main()
