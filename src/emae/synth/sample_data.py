"""``emae sample-data``: a small, realistic, fully known EM dataset.

The dataset mirrors a real project: a large unlabeled acquisition in which artifacts are rare
(a few percent of the area), a few hundred annotated patch centres that are class-imbalanced the
way real annotation is (a clean majority, rare classes with about twenty examples), and held-out
test sections with per-pixel class masks for scoring anomaly maps.

Layout of the output folder (see the README written into it)::

    unlabeled/volume.tif        ZYX uint8, artifacts rare; what autoencoders train on
    unlabeled/truth.tif         ZYX uint8 class index per pixel (never used for training)
    labeled/sections.tif        ZYX uint8 sections holding the annotated patches
    labels.csv                  image,x,y,z,label,group (paths relative to the CSV)
    test/images/test_000.tif    YX uint8 held-out sections (the folder opens as a ZYX stack)
    test/masks/test_000.tif     YX uint8 class index per pixel (0 = clean)
    classes.json                class index -> name for the masks
    manifest.json               seed, sizes, counts, artifact area fractions, package version
    README.md                   what is where
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from emae import __version__
from emae.data.labels import LabeledSample, write_labels
from emae.io.atomic import atomic_dir
from emae.io.writers import write_tiff
from emae.synth.artifacts import ARTIFACT_TYPES, inject
from emae.synth.tissue import make_volume, to_uint8

logger = logging.getLogger(__name__)

CLEAN = "clean"
#: The stack holding the labeled patches, relative to the dataset folder (as in labels.csv).
LABELED_IMAGE = "labeled/sections.tif"

#: What ``overwrite=True`` may replace: an earlier sample-data folder, never other data.
SAMPLE_DATA_ONLY: dict[str, Any] = {
    "replaceable": lambda path: (path / "manifest.json").is_file(),
    "kind": "an emae sample-data folder",
}
CLASSES: tuple[str, ...] = (CLEAN, *ARTIFACT_TYPES)

#: Annotated patches per artifact class in the default dataset: imbalanced like real labels.
DEFAULT_LABEL_COUNTS: dict[str, int] = {
    "scratch": 40,
    "dust": 35,
    "ring": 25,
    "defocus": 25,
    "charging": 22,
    "horseshoe": 20,
    "fold": 20,
    "seam": 18,
    "stripes": 16,
    "tile": 15,
}


class SampleDataConfig(BaseModel):
    """Sizes of the generated dataset. The defaults give about 500 labels and 30 MB of data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, description="Seed of every random draw.")
    section_size: int = Field(1024, ge=128, le=8192, description="Height = width of sections.")
    unlabeled_sections: int = Field(
        16, ge=1, le=512, description="Sections in the unlabeled volume."
    )
    unlabeled_artifacts_per_section: float = Field(
        3.0, ge=0, le=50, description="Mean artifacts per unlabeled section (Poisson)."
    )
    label_sections: int = Field(12, ge=1, le=512, description="Sections holding labeled patches.")
    n_clean_labels: int = Field(280, ge=1, description="Annotated clean patches.")
    label_counts: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_LABEL_COUNTS),
        description="Annotated patches per artifact class.",
    )
    test_sections: int = Field(8, ge=1, le=512, description="Held-out test sections.")
    test_size: int = Field(512, ge=128, le=8192, description="Height = width of test sections.")
    test_artifacts_per_section: int = Field(
        3, ge=0, le=20, description="Artifacts per test section."
    )
    margin: int = Field(64, ge=16, description="Label centres keep this distance to the border.")

    @field_validator("label_counts")
    @classmethod
    def _known_artifacts(cls, counts: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(counts) - set(ARTIFACT_TYPES))
        if unknown:
            raise ValueError(f"unknown artifact types {unknown}; known: {list(ARTIFACT_TYPES)}")
        if any(n < 0 for n in counts.values()):
            raise ValueError(f"counts must be >= 0, got {counts}")
        return counts


def tiny_config(seed: int = 0) -> SampleDataConfig:
    """A few-second dataset with the same layout, for tests and ``--quick`` runs."""
    return SampleDataConfig(
        seed=seed,
        section_size=256,
        unlabeled_sections=3,
        label_sections=4,
        n_clean_labels=24,
        label_counts={kind: 2 for kind in ARTIFACT_TYPES},
        margin=32,
        test_sections=2,
        test_size=192,
    )


def _artifact_size(kind: str, side: int, rng: np.random.Generator) -> float:
    """A size in pixels that keeps an artifact local on a section of ``side`` pixels."""
    scale = {
        "scratch": 0.35,
        "seam": 0.5,
        "stripes": 0.12,
        "tile": 0.1,
        "charging": 0.12,
        "defocus": 0.12,
        "fold": 0.3,
    }.get(kind, 0.08)
    return float(np.clip(side * scale * rng.uniform(0.7, 1.3), 12, side / 2))


def _place(
    section: np.ndarray, truth: np.ndarray, kind: str, rng: np.random.Generator, margin: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Inject one artifact of ``kind`` where it does not overlap earlier ones.

    Returns the new section and the artifact's mask, or None when no free place was found.
    """
    h, w = section.shape
    for _ in range(20):
        center = (int(rng.integers(margin, h - margin)), int(rng.integers(margin, w - margin)))
        size = _artifact_size(kind, min(h, w), rng)
        new, mask = inject(section, kind, seed=rng, center=center, size=size)
        if mask.any() and not (truth[mask] > 0).any():
            return new, mask
    return None


def _inject_many(
    section: np.ndarray, kinds: list[str], rng: np.random.Generator, margin: int
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, np.ndarray]]]:
    """Inject artifacts one after another; returns section, class-index truth and the masks."""
    truth = np.zeros(section.shape, dtype=np.uint8)
    placed = []
    for kind in kinds:
        result = _place(section, truth, kind, rng, margin)
        if result is None:
            logger.debug("no free place for a %s artifact", kind)
            continue
        section, mask = result
        truth[mask] = CLASSES.index(kind)
        placed.append((kind, mask))
    return section, truth, placed


def _label_centre(
    mask: np.ndarray, margin: int, rng: np.random.Generator
) -> tuple[int, int] | None:
    """A random artifact pixel at least ``margin`` from the border, as ``(y, x)``."""
    inner = np.zeros_like(mask)
    inner[margin:-margin, margin:-margin] = mask[margin:-margin, margin:-margin]
    ys, xs = np.nonzero(inner)
    if len(ys) == 0:
        return None
    i = int(rng.integers(len(ys)))
    return int(ys[i]), int(xs[i])


def _clean_centres(
    truth: np.ndarray, n: int, margin: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """``n`` centres whose ``2 * margin`` window holds no artifact pixel."""
    h, w = truth.shape
    centres: list[tuple[int, int]] = []
    for _ in range(50 * n):
        if len(centres) == n:
            break
        y, x = int(rng.integers(margin, h - margin)), int(rng.integers(margin, w - margin))
        if not truth[y - margin : y + margin, x - margin : x + margin].any():
            centres.append((y, x))
    return centres


def _make_unlabeled(cfg: SampleDataConfig, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    shape = (cfg.unlabeled_sections, cfg.section_size, cfg.section_size)
    volume = make_volume(shape, seed=rng)
    truth = np.zeros(shape, dtype=np.uint8)
    for z in range(shape[0]):
        kinds = list(
            rng.choice(ARTIFACT_TYPES, size=rng.poisson(cfg.unlabeled_artifacts_per_section))
        )
        volume[z], truth[z], _ = _inject_many(volume[z], kinds, rng, cfg.margin)
    return to_uint8(volume), truth


def _make_labeled(
    cfg: SampleDataConfig, rng: np.random.Generator
) -> tuple[np.ndarray, list[LabeledSample]]:
    """Sections with artifacts placed for annotation, and their labels (patch centres).

    Image paths are relative to the dataset folder (:data:`LABELED_IMAGE`).
    """
    shape = (cfg.label_sections, cfg.section_size, cfg.section_size)
    volume = make_volume(shape, seed=rng)
    todo = [kind for kind, count in cfg.label_counts.items() for _ in range(count)]
    rng.shuffle(todo)
    per_section = np.array_split(np.array(todo, dtype=object), shape[0])
    clean_per_section = np.array_split(np.arange(cfg.n_clean_labels), shape[0])
    samples: list[LabeledSample] = []
    for z in range(shape[0]):
        volume[z], labeled = annotate_section(
            volume[z], list(per_section[z]), len(clean_per_section[z]), rng, cfg.margin
        )
        samples += [
            LabeledSample(LABELED_IMAGE, x=x, y=y, z=z, label=kind, group=f"section{z:03d}")
            for kind, y, x in labeled
        ]
    return to_uint8(volume), samples


def annotate_section(
    section: np.ndarray, kinds: list[str], n_clean: int, rng: np.random.Generator, margin: int
) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """Draw artifacts of ``kinds`` on a section where they do not overlap, and label them.

    Parameters
    ----------
    section
        ``(H, W)`` float image in ``[0, 1]`` (synthetic tissue or a real micrograph).
    kinds, n_clean
        Artifact kinds to draw (one each; a kind with no free place is skipped), and how many
        clean patch centres to label (none of their ``2 * margin`` window touches an artifact).
    rng, margin
        Random generator; centres stay ``margin`` pixels from the border.

    Returns
    -------
    (section, labels)
        The section with the artifacts, and ``(label, y, x)`` per labeled centre: a random
        pixel of each artifact, then the clean centres.
    """
    section, truth, placed = _inject_many(section, kinds, rng, margin)
    centres = [(kind, _label_centre(mask, margin, rng)) for kind, mask in placed]
    centres += [(CLEAN, c) for c in _clean_centres(truth, n_clean, margin, rng)]
    return section, [(kind, c[0], c[1]) for kind, c in centres if c is not None]


def _make_test(cfg: SampleDataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    shape = (cfg.test_sections, cfg.test_size, cfg.test_size)
    volume = make_volume(shape, seed=rng)
    truth = np.zeros(shape, dtype=np.uint8)
    for z in range(shape[0]):
        kinds = list(rng.choice(ARTIFACT_TYPES, size=cfg.test_artifacts_per_section, replace=False))
        volume[z], truth[z], _ = _inject_many(volume[z], kinds, rng, cfg.margin // 2)
    return to_uint8(volume), truth


_README = """\
# emae sample data (seed {seed})

Synthetic serial-section EM of neuropil with artifacts, written by `emae sample-data`
(emae {version}). Everything here is generated; the ground truth is exact.

| path | what | shape (axes) |
|---|---|---|
| `unlabeled/volume.tif` | the acquisition to train autoencoders on; artifacts are rare ({unlabeled_fraction:.1%} of the area) | {unlabeled_shape} (ZYX), uint8 |
| `unlabeled/truth.tif` | class index per pixel of that volume (see `classes.json`); for evaluation only | same, uint8 |
| `labeled/sections.tif` | sections holding the annotated patches | {labeled_shape} (ZYX), uint8 |
| `labels.csv` | {n_labels} patch centres `image,x,y,z,label,group`; x is the column, y the row, z the section; `group` keeps a section's patches in one fold | |
| `test/images/` | {n_test} held-out sections, one TIFF each (the folder opens as a ZYX stack) | {test_shape} (YX), uint8 |
| `test/masks/` | class index per pixel for each test section, same names ({test_fraction:.1%} of the area is artifact) | same, uint8 |
| `classes.json` | class index -> name (0 = clean) | |
| `manifest.json` | the configuration, the counts and the package version | |

Label counts (imbalanced, like real annotation):

{label_table}
"""  # noqa: E501


def write_sample_data(
    out: str | Path, config: SampleDataConfig | None = None, *, overwrite: bool = False
) -> dict[str, object]:
    """Generate the sample dataset into the folder ``out``.

    The folder is written atomically: it appears complete or not at all, and an existing
    non-empty folder is replaced only with ``overwrite=True``.

    Parameters
    ----------
    out
        Destination folder.
    config
        Sizes and seed; :class:`SampleDataConfig` defaults when None.
    overwrite
        Replace an earlier sample-data folder at ``out`` (other data is never replaced).

    Returns
    -------
    dict
        The manifest (also written to ``out/manifest.json``).
    """
    cfg = config or SampleDataConfig()
    rng = np.random.default_rng(cfg.seed)
    logger.info("generating the unlabeled volume (%d sections)", cfg.unlabeled_sections)
    unlabeled, unlabeled_truth = _make_unlabeled(cfg, rng)
    logger.info("generating the labeled sections")
    labeled, samples = _make_labeled(cfg, rng)
    logger.info("generating the test sections")
    test, test_truth = _make_test(cfg, rng)

    counts = {name: sum(s.label == name for s in samples) for name in CLASSES}
    manifest: dict[str, object] = {
        "emae_version": __version__,
        "config": cfg.model_dump(),
        "classes": list(CLASSES),
        "label_counts": counts,
        "n_labels": len(samples),
        "unlabeled_shape": list(unlabeled.shape),
        "unlabeled_artifact_fraction": float((unlabeled_truth > 0).mean()),
        "test_shape": list(test.shape),
        "test_artifact_fraction": float((test_truth > 0).mean()),
    }
    with atomic_dir(out, overwrite=overwrite, **SAMPLE_DATA_ONLY) as tmp:
        for sub in ("unlabeled", "labeled", "test/images", "test/masks"):
            (tmp / sub).mkdir(parents=True)
        for name, array in (
            ("unlabeled/volume.tif", unlabeled),
            ("unlabeled/truth.tif", unlabeled_truth),
            (LABELED_IMAGE, labeled),
        ):
            write_tiff(tmp / name, array, axes="ZYX", compression="zlib")
        for z in range(test.shape[0]):
            write_tiff(
                tmp / f"test/images/test_{z:03d}.tif", test[z], axes="YX", compression="zlib"
            )
            write_tiff(
                tmp / f"test/masks/test_{z:03d}.tif", test_truth[z], axes="YX", compression="zlib"
            )
        write_labels(tmp / "labels.csv", samples)
        (tmp / "classes.json").write_text(json.dumps(dict(enumerate(CLASSES)), indent=2) + "\n")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        table = "\n".join(
            ["| class | patches |", "|---|---|"]
            + [f"| {name} | {n} |" for name, n in counts.items()]
        )
        (tmp / "README.md").write_text(
            _README.format(
                seed=cfg.seed,
                version=__version__,
                n_labels=len(samples),
                n_test=test.shape[0],
                unlabeled_fraction=manifest["unlabeled_artifact_fraction"],
                test_fraction=manifest["test_artifact_fraction"],
                unlabeled_shape="x".join(map(str, unlabeled.shape)),
                labeled_shape="x".join(map(str, labeled.shape)),
                test_shape="x".join(map(str, test.shape[1:])),
                label_table=table,
            )
        )
    return manifest
