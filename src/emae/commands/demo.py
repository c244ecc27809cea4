"""``emae demo``: the whole promise of emae on the embedded synthetic data.

Writes the sample dataset and the gallery of artifact types into ``OUT/data`` and
``OUT/gallery.png``, then runs the pipeline of ``configs/demo.yaml`` (shipped in the package as
``emae/configs/demo.yaml``) on it: pretrain an autoencoder on the unlabeled volume, score the
test images, fine-tune the encoder + head on the labels and evaluate it on held-out sections,
compare it with the baselines by cross-validation, detect over the whole test volume with Dask
and write ``OUT/report.html``. ``quick`` uses a small dataset and fewer steps
(:data:`QUICK_DATA`, :data:`QUICK`). Rerunning the same command continues an interrupted demo.
"""

from __future__ import annotations

import logging
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any

from emae.commands.pipeline import is_pipeline, run_pipeline
from emae.commands.pipeline_config import PipelineConfig, load_pipeline_config
from emae.io.atomic import check_writable
from emae.synth.artifacts import ARTIFACT_TYPES
from emae.synth.gallery import write_gallery
from emae.synth.sample_data import SampleDataConfig, write_sample_data

logger = logging.getLogger(__name__)

#: The dataset of ``--quick``: small sections, yet every class in several sections.
QUICK_DATA = {
    "section_size": 384,
    "unlabeled_sections": 4,
    "label_sections": 6,
    "n_clean_labels": 60,
    "label_counts": dict.fromkeys(ARTIFACT_TYPES, 6),
    "margin": 32,
    "test_sections": 3,
    "test_size": 256,
}

#: What ``--quick`` changes in ``configs/demo.yaml`` (besides using :data:`QUICK_DATA`).
QUICK: dict[str, Any] = {
    "pretrain": {"model": "conv-ae", "steps": 120, "val_every": 40, "checkpoint_every": 40},
    "finetune": {"view": "auto", "balance": "weights", "steps": 120},
    "compare_folds": 2,
    "compare_budgets": "5,all",
    "compare_steps": 60,
    "detect_chunk": 256,
    "denoise": {"steps": 60, "batch_size": 16, "val_every": 30, "score_patches": 32},
    "inpaint": {"steps": 60, "batch_size": 16, "val_every": 30, "score_patches": 32},
    "compress": {
        "lambdas": [0.003, 0.02],
        "chunk": 128,
        "codec": {
            "steps": 150,
            "batch_size": 8,
            "val_every": 50,
            "score": "pixel",
            "score_patches": 16,
        },
    },
    "latent": {
        "sample": 400,
        "generator": {
            "model": "beta-vae",
            "latent": "vector",
            "latent_dim": 16,
            "steps": 30,
            "batch_size": 8,
            "val_every": 15,
            "score_patches": 32,
        },
    },
}


def demo_config_path() -> Path:
    """The packaged ``demo.yaml`` (the file ``configs/demo.yaml`` points to)."""
    return Path(str(resources.files("emae") / "configs" / "demo.yaml"))


def demo_config(data: str | Path, *, quick: bool = False, seed: int = 0) -> PipelineConfig:
    """The demo's pipeline configuration for sample data written to ``data``."""
    overrides = {"seed": seed, **(QUICK if quick else {})}
    return load_pipeline_config(demo_config_path(), root=Path(data).resolve(), **overrides)


def run_demo(
    out: str | Path,
    *,
    seed: int = 0,
    quick: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the demonstration pipeline into the folder ``out``.

    Parameters
    ----------
    out
        Results folder; created, continued (the same demo), or replaced when ``overwrite``.
    seed
        Seed of the data and of every step.
    quick
        A small dataset and fewer steps (:data:`QUICK_DATA`, :data:`QUICK`).
    overwrite
        Replace an existing demo folder (never another kind of folder).
    progress
        Progress bars of the steps.

    Returns
    -------
    dict
        The pipeline record (also ``out/pipeline.json``): configuration, commands, timings.
    """
    out = Path(out)
    is_demo = lambda p: is_pipeline(p) or (p / "data" / "manifest.json").is_file()  # noqa: E731
    if out.exists() and (overwrite or not is_demo(out)):
        check_writable(out, overwrite=overwrite, replaceable=is_demo, kind="an emae demo")
        shutil.rmtree(out)
    data = out / "data"
    config = demo_config(data, quick=quick, seed=seed)
    began = time.perf_counter()
    if not (data / "manifest.json").is_file() or not (out / "gallery.png").is_file():
        out.mkdir(parents=True, exist_ok=True)
        sample = SampleDataConfig(seed=seed, **(QUICK_DATA if quick else {}))
        write_sample_data(data, sample, overwrite=True)
        write_gallery(out / "gallery.png", seed=seed)
    command = f"emae demo --out {out}{' --quick' if quick else ''} --seed {seed}"
    record = run_pipeline(
        config,
        out,
        progress=progress,
        extra={
            "demo": {"data": "data", "command": command, "quick": quick},
            "data_seconds": round(time.perf_counter() - began, 2),
        },
        keep=("data", "gallery.png"),
    )
    return record
