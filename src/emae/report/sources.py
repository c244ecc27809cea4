"""Which emae outputs the report is given, and where each of their parts lies.

:func:`find_runs` sorts the folders given to ``emae report`` by kind (a pipeline or demo run
folder expands to its parts); anything else is refused with a one-line error, so a mistyped
path never produces an empty report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emae.errors import EmaeError

KINDS = (
    "sample-data",
    "autoencoder",
    "classifier",
    "evaluation",
    "compare",
    "detect",
    "denoise",
    "repair",
    "latent-map",
    "map-apply",
    "generate",
    "compressed",
)


@dataclass
class Runs:
    """The outputs to report on, by kind, and what a pipeline record adds."""

    folders: dict[str, list[Path]] = field(default_factory=lambda: {k: [] for k in KINDS})
    pipeline: dict[str, Any] | None = None
    labels: str | None = None
    test_images: list[str] = field(default_factory=list)
    test_masks: str | None = None
    score_map: Path | None = None
    gallery: Path | None = None

    def first(self, kind: str) -> Path | None:
        """The first folder of ``kind``, or None."""
        return self.folders[kind][0] if self.folders[kind] else None


def kind_of(path: Path) -> str | None:
    """The kind of emae output ``path`` is, ``"pipeline"``, or None."""
    from emae.folders.classifier import is_classifier
    from emae.folders.latent_map import is_latent_map

    if not path.is_dir():
        return None
    if (path / "pipeline.json").is_file():
        return "pipeline"
    if is_latent_map(path):
        return "latent-map"
    if (path / "apply.json").is_file() and (path / "sections.csv").is_file():
        return "map-apply"
    if (path / "generate.json").is_file():
        return "generate"
    if (path / "manifest.json").is_file() and (path / "classes.json").is_file():
        return "sample-data"
    if is_classifier(path):
        return "classifier"
    if (path / "scoring.json").is_file() and (path / "config.json").is_file():
        return "autoencoder"
    if (path / "metrics.json").is_file() and (path / "predictions.csv").is_file():
        return "evaluation"
    if (path / "compare.json").is_file() and (path / "summary.json").is_file():
        return "compare"
    if path.suffix == ".zarr" and (path / "emae_run.json").is_file():
        return "detect"
    if path.suffix == ".zarr" and (path / "emae_restore.json").is_file():
        mode = json.loads((path / "emae_restore.json").read_text()).get("mode")
        return "denoise" if mode == "denoise" else None
    if (path / "repair.json").is_file():
        return "repair"
    if path.suffix == ".zarr" and (path / "emae_compress.json").is_file():
        return "compressed"
    return None


def _add_pipeline(runs: Runs, folder: Path) -> None:
    record = json.loads((folder / "pipeline.json").read_text())
    runs.pipeline = record
    config = record.get("config", {})
    runs.labels = runs.labels or config.get("labels")
    runs.test_images = runs.test_images or list(config.get("test_images", []))
    runs.test_masks = runs.test_masks or config.get("test_masks")
    data = record.get("demo", {}).get("data")
    if data and kind_of(folder / data) == "sample-data":
        runs.folders["sample-data"].append(folder / data)
    gallery = folder / "gallery.png"
    runs.gallery = gallery if gallery.is_file() else runs.gallery
    score_map = folder / "scores" / "test.tif"
    runs.score_map = score_map if score_map.is_file() else runs.score_map
    for name, kind in (
        ("autoencoder", "autoencoder"),
        ("classifier", "classifier"),
        ("evaluation", "evaluation"),
        ("compare", "compare"),
        ("detect.zarr", "detect"),
        ("denoised.zarr", "denoise"),
        ("repair", "repair"),
        ("map", "latent-map"),
        ("map-labels", "map-apply"),
        ("map-test", "map-apply"),
        ("generated", "generate"),
    ):
        if kind_of(folder / name) == kind:
            runs.folders[kind].append(folder / name)
    for store in sorted((folder / "compressed").glob("*.zarr")):
        if kind_of(store) == "compressed":
            runs.folders["compressed"].append(store)


def find_runs(paths: Sequence[str | Path]) -> Runs:
    """Sort ``paths`` by kind of output (see :data:`KINDS`); pipeline folders expand.

    Raises
    ------
    EmaeError
        When a path does not exist or is no emae output, or when nothing is given.
    """
    if not paths:
        raise EmaeError("give at least one emae output folder to report on")
    runs = Runs()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise EmaeError(f"{path}: no such file or folder")
        kind = kind_of(path)
        if kind is None:
            raise EmaeError(
                f"{path}: not an emae output (expected a pipeline or demo run, sample data, an "
                f"autoencoder or classifier folder, an evaluation or comparison folder, a "
                f"detect or denoise .zarr, a repair folder, a latent map, applied map or "
                f"generate folder, or a compressed .zarr)"
            )
        if kind == "pipeline":
            _add_pipeline(runs, path)
        else:
            runs.folders[kind].append(path)
    sample = runs.first("sample-data")
    if sample is not None:
        runs.labels = runs.labels or str(sample / "labels.csv")
        runs.test_images = runs.test_images or [str(sample / "test" / "images")]
        runs.test_masks = runs.test_masks or str(sample / "test" / "masks")
    return runs
