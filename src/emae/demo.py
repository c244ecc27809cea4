"""``emae demo``: the whole promise of emae on the embedded synthetic data.

For now the demo generates the sample dataset, draws the gallery of artifact types and writes a
summary. Training, scoring, classification, detection and the HTML report join as they land.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from emae import __version__
from emae.io.atomic import check_writable
from emae.synth.gallery import write_gallery
from emae.synth.sample_data import SampleDataConfig, tiny_config, write_sample_data

logger = logging.getLogger(__name__)


def run_demo(
    out: str | Path, *, seed: int = 0, quick: bool = False, overwrite: bool = False
) -> dict[str, object]:
    """Run the demonstration pipeline into the folder ``out``.

    Parameters
    ----------
    out
        Results folder; created, or replaced when ``overwrite`` is set.
    seed
        Seed of every random step.
    quick
        Use the tiny dataset (seconds instead of about a minute).
    overwrite
        Replace existing results.

    Returns
    -------
    dict
        The summary (also written to ``out/summary.json``): timings and output paths.
    """
    out = check_writable(
        out,
        overwrite=overwrite,
        replaceable=lambda p: (p / "summary.json").is_file(),
        kind="an emae demo folder",
    )
    out.mkdir(exist_ok=True)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    config = tiny_config(seed) if quick else SampleDataConfig(seed=seed)
    manifest = write_sample_data(out / "data", config, overwrite=True)
    timings["sample_data_s"] = time.perf_counter() - start

    start = time.perf_counter()
    gallery = write_gallery(out / "gallery.png", seed=seed)
    timings["gallery_s"] = time.perf_counter() - start

    summary: dict[str, object] = {
        "emae_version": __version__,
        "seed": seed,
        "quick": quick,
        "label_counts": manifest["label_counts"],
        "unlabeled_artifact_fraction": manifest["unlabeled_artifact_fraction"],
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "outputs": {
            "data": str(out / "data"),
            "gallery": str(gallery),
            "summary": str(out / "summary.json"),
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("demo finished in %.1f s", sum(timings.values()))
    return summary
