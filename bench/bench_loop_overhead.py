"""Benchmark: training throughput of :func:`emae.train.loop.train_loop` against a bare PyTorch loop.

Both train the same model (the default conv autoencoder of
:class:`emae.train.config.PretrainConfig`,
rebuilt from the same seed for every run) on the same in-memory patches with the same batch,
AdamW, learning-rate schedule (linear warm-up then cosine), gradient clipping, autocast
precision and channels-last setting, with MSE reconstruction loss. ``train_loop`` runs without
validation or checkpoints (``val_fn=None``, ``checkpoint=None``, intervals far beyond the run)
and without a progress bar, so the difference is the loop's own overhead: the ``DataLoader``
over a map-style dataset, the per-step generator, the loss-module wrapper, the finiteness check
and the bookkeeping. The bare loop slices the batch straight out of one tensor.

Runs alternate (A B B A ...) after one unmeasured warm-up run of each, and the median
patches/s of each side is reported with the overhead ``1 - train_loop / bare``. Each run is
timed from before the optimizer is created to after the last step. The 1-minute load averages
before and after are printed: this machine is shared.

Usage::

    python bench/bench_loop_overhead.py [--steps 60] [--repeats 5] [--batch 32] [--patch 64]
                                        [--precision auto] [--threads N] [--profile]

``--profile`` also times the pieces of one ``train_loop`` step that the bare loop lacks.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from emae.models import build_model
from emae.runtime import select_precision
from emae.train.config import PretrainConfig
from emae.train.loop import LoopSettings, lr_schedule, step_generator, train_loop
from emae.train.losses import reconstruction_loss

LARGE = 10**9  # validation / checkpoint interval that never comes


class InMemoryPatches(Dataset):
    """Item ``i`` is row ``i`` of an ``(N, 1, P, P)`` float32 tensor."""

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.data[i]


def make_model(config: PretrainConfig) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_model(config.model, **config.model_kwargs())


def run_bare(config: PretrainConfig, settings: LoopSettings, data: torch.Tensor) -> float:
    """Seconds for ``settings.steps`` steps of a plain loop."""
    model = make_model(config)
    recon = reconstruction_loss(config.loss)
    device = torch.device("cpu")
    amp_dtype = select_precision(device, settings.precision)
    model.to(device, memory_format=torch.channels_last).train()
    began = time.perf_counter()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(settings))
    b = settings.batch_size
    for k in range(settings.steps):
        x = data[k * b : (k + 1) * b].contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", amp_dtype, enabled=amp_dtype is not None):
            loss = recon(model(x), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        scheduler.step()
    return time.perf_counter() - began


def run_loop(config: PretrainConfig, settings: LoopSettings, data: torch.Tensor) -> float:
    """Seconds for the same steps through :func:`train_loop`."""
    model = make_model(config)
    recon = reconstruction_loss(config.loss)

    def loss_fn(
        m: nn.Module, x: torch.Tensor, step: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return recon(m(x), x), {}

    began = time.perf_counter()
    summary = train_loop(model, loss_fn, InMemoryPatches(data), settings)
    seconds = time.perf_counter() - began
    assert summary["steps_done"] == settings.steps
    return seconds


def profile_pieces(settings: LoopSettings, data: torch.Tensor, n: int = 200) -> dict[str, float]:
    """Microseconds per step of what train_loop does and the bare loop does not."""
    b = settings.batch_size
    loader = DataLoader(
        InMemoryPatches(data),
        batch_sampler=[range(k * b, (k + 1) * b) for k in range(min(n, len(data) // b))],
    )
    began = time.perf_counter()
    count = sum(1 for _ in loader)
    loader_us = 1e6 * (time.perf_counter() - began) / count
    began = time.perf_counter()
    for k in range(n):
        data[(k % count) * b : (k % count + 1) * b].contiguous(memory_format=torch.channels_last)
    slice_us = 1e6 * (time.perf_counter() - began) / n
    began = time.perf_counter()
    for k in range(n):
        step_generator(settings.seed, k)
    generator_us = 1e6 * (time.perf_counter() - began) / n
    loss = torch.tensor(0.5)
    began = time.perf_counter()
    for _ in range(n):
        float(loss.detach().float())
    item_us = 1e6 * (time.perf_counter() - began) / n
    return {
        "DataLoader batch (sampler + 32 getitem + collate)": loader_us,
        "bare tensor slice + channels_last copy": slice_us,
        "step_generator": generator_us,
        "float(loss)": item_us,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="Steps per measured run.")
    parser.add_argument("--repeats", type=int, default=5, help="Measured runs of each loop.")
    parser.add_argument("--warmup", type=int, default=10, help="Steps of the unmeasured runs.")
    parser.add_argument("--batch", type=int, default=32, help="Patches per step.")
    parser.add_argument("--patch", type=int, default=64, help="Patch side.")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--profile", action="store_true", help="Time train_loop's extra pieces.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    config = PretrainConfig(patch_size=args.patch, batch_size=args.batch, steps=args.steps)
    settings = LoopSettings(
        steps=args.steps,
        batch_size=args.batch,
        val_every=LARGE,
        checkpoint_every=LARGE,
        device="cpu",
        precision=args.precision,
        progress=False,
    )
    warm = LoopSettings(**{**settings.__dict__, "steps": args.warmup})
    generator = torch.Generator().manual_seed(0)
    data = torch.rand(args.steps * args.batch, 1, args.patch, args.patch, generator=generator)
    amp = select_precision(torch.device("cpu"), args.precision)
    print(
        f"conv-ae {config.channels}, batch {args.batch} x {args.patch}x{args.patch}, "
        f"{args.steps} steps, precision {'bf16' if amp else 'fp32'}, channels_last, "
        f"torch threads {torch.get_num_threads()}"
    )
    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    run_bare(config, warm, data)
    run_loop(config, warm, data)

    seconds: dict[str, list[float]] = {"bare": [], "train_loop": []}
    runners = {"bare": run_bare, "train_loop": run_loop}
    for r in range(args.repeats):
        order = ("bare", "train_loop") if r % 2 == 0 else ("train_loop", "bare")
        for name in order:
            seconds[name].append(runners[name](config, settings, data))
            rate = args.steps * args.batch / seconds[name][-1]
            print(f"repeat {r} {name:10s} {seconds[name][-1]:6.2f} s  {rate:7.1f} patches/s")
    load_after = os.getloadavg()

    median = {k: args.steps * args.batch / statistics.median(v) for k, v in seconds.items()}
    overhead = 1 - median["train_loop"] / median["bare"]
    print()
    print("| loop | median patches/s | runs (patches/s) |")
    print("|---|---|---|")
    for k, v in seconds.items():
        runs = ", ".join(f"{args.steps * args.batch / s:.0f}" for s in v)
        print(f"| {k} | {median[k]:.1f} | {runs} |")
    print(f"| **overhead** | **{100 * overhead:.1f}%** | |")
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if args.profile:
        print()
        for name, us in profile_pieces(settings, data).items():
            print(f"{name:55s} {us:8.1f} us/step")
    print(f"date {datetime.date.today().isoformat()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")


if __name__ == "__main__":
    main()
