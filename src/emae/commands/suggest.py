"""``emae suggest``: the next patches to label, as a labels CSV to fill in.

Draws a pool of random candidate patches from unlabeled images (any reader), scores them with a
trained classifier (its class probabilities, uncertainty and pooled features), and picks ``n``
by :mod:`emae.classify.suggest`: each for the class labeled least so far (the classifier's
training labels, then the picks before it), by that class's probability x uncertainty x
distance from the patches already labeled or picked. ``anomaly=True`` weighs by the anomaly
score of the autoencoder the classifier was trained from as well; ``by_class=False`` with it is
the rule before selection by class. Writes, atomically:

``OUT``               a labels CSV (``image,x,y[,z],label``) with the label column empty: fill in
                      what you can and pass it to ``emae finetune --labels LABELS OUT`` (rows left
                      empty are skipped; labels must be among the classifier's classes);
``OUT_scores.csv``    per suggestion: rank, place, predicted class and probability, uncertainty,
                      anomaly rank, distance and priority;
``OUT.png``           a montage of the suggested patches, numbered by rank.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emae.anomaly.detector import AutoencoderDetector
from emae.classify.suggest import anomaly_rank, priority, select_batch, uncertainty
from emae.data.labels import LabeledSample, load_label_files, read_labeled_patches, write_labels
from emae.data.patches import read_patches
from emae.data.sampling import random_locations
from emae.errors import EmaeError
from emae.folders.classifier import (
    FittedClassifier,
    load_classifier,
    trained_from,
    training_summary,
)
from emae.io import expand_inputs, open_image
from emae.io.atomic import atomic_file, check_writable
from emae.io.provenance import check_not_input
from emae.io.sources import split_source

logger = logging.getLogger(__name__)


def _outputs(out: Path) -> tuple[Path, Path, Path]:
    """The labels CSV, the scores CSV and the montage of ``out``."""
    if out.suffix.lower() != ".csv":
        raise EmaeError(f"{out}: the suggestions are a labels CSV; name it *.csv")
    return out, out.with_name(out.stem + "_scores.csv"), out.with_suffix(".png")


def _absolute(source: str) -> str:
    """A local file's absolute path (the CSV may be written elsewhere); URLs as given."""
    path, dataset = split_source(source)
    if "://" in path:
        return source
    return str(Path(path).resolve()) + (f":{dataset}" if dataset is not None else "")


#: The header of ``OUT_scores.csv``.
SCORE_COLUMNS = ["rank", "image", "z", "y", "x", "predicted", "probability", "uncertainty",
                 "anomaly_rank", "distance", "priority"]  # fmt: skip


def _written_here(scores: Path) -> bool:
    """Whether ``scores`` is a scores file of this command (then its siblings are ours too)."""
    try:
        with open(scores, encoding="utf-8") as f:
            return f.readline().strip() == ",".join(SCORE_COLUMNS)
    except (OSError, UnicodeDecodeError):
        return False


def _labeled(clf: FittedClassifier, labels: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Features ``(M, D)`` of the classifier's own training patches and their labels per class
    ``(K,)``, when their CSVs are still there (else None, None)."""
    paths = [labels] if isinstance(labels, str) else list(labels or [])
    if not paths:
        return None, None
    try:
        p, c = clf.model.patch_size, clf.model.context
        table = load_label_files(paths, patch_size=p)
        patches, y = read_labeled_patches(table, p, c)
    except EmaeError as exc:
        logger.warning(
            "the training labels cannot be read (%s); not avoiding them, nor counting them by "
            "class",
            exc,
        )
        return None, None
    names = [table.classes[i] for i in np.asarray(y).tolist()]
    counts = np.array([names.count(k) for k in clf.classes], dtype=np.int64)
    return clf.features(patches), counts


def _montage(patches: np.ndarray, titles: Sequence[str]) -> bytes:
    from emae.report.figures import figure, grey

    columns = min(10, len(patches))
    rows = -(-len(patches) // columns)
    fig = figure(1.2 * columns, 1.35 * rows)
    axes = fig.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i < len(patches):
            ax.imshow(grey(patches[i]), cmap="gray", vmin=0, vmax=1)
            ax.set_title(titles[i], fontsize=6)
        else:
            ax.set_axis_off()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def suggest(
    classifier: str | Path,
    sources: Sequence[str | Path],
    out: str | Path,
    *,
    n: int = 50,
    pool: int = 5000,
    seed: int = 0,
    by_class: bool = True,
    anomaly: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the ``n`` patches of ``sources`` most worth labeling next (see the module doc).

    Parameters
    ----------
    classifier
        Classifier folder (``emae finetune``).
    sources
        Unlabeled images, folders or globs (any reader of :func:`emae.io.open_image`).
    out
        The labels CSV to write (with ``OUT_scores.csv`` and ``OUT.png`` beside it).
    n, pool
        Suggestions to make, and random candidate patches to choose them from (``n <= pool``).
    seed
        Seed of the candidates' positions.
    by_class
        Choose each suggestion for the class labeled least so far (the classifier's training
        labels, then the suggestions before it, counted by their predicted probabilities).
    anomaly
        Weigh by the anomaly score of the classifier's autoencoder (needs its folder).
    overwrite
        Replace suggestion files written before.

    Returns
    -------
    dict
        ``suggested``, ``pool``, the output paths, and the predicted class counts.
    """
    classifier, out = Path(classifier), Path(out)
    outputs = _outputs(out)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise EmaeError(f"n must be a positive number of patches, got {n!r}")
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < n:
        raise EmaeError(f"cannot suggest {n} patches from a pool of {pool}: raise pool or lower n")
    paths = [_absolute(p) for p in expand_inputs([str(s) for s in sources])]
    if not paths:
        raise EmaeError(f"no input images found in {', '.join(map(str, sources))}")
    training = training_summary(classifier)
    own = training.get("labels")
    own = [own] if isinstance(own, str) else list(own or [])
    ours = {
        "replaceable": lambda _: _written_here(outputs[1]),
        "kind": "suggestions of emae suggest (beside their _scores.csv)",
    }
    for path in outputs:
        check_not_input(path, [classifier, *paths, *own])
        check_writable(path, overwrite=overwrite, **ours)
    clf = load_classifier(classifier)
    if clf.feature_names:
        raise EmaeError(f"{classifier}: this classifier also needs feature columns; it cannot "
                        "score unlabeled patches")  # fmt: skip
    encoder = None
    if anomaly:
        encoder = trained_from(
            classifier,
            needed_for="the anomaly weight",
            otherwise="suggest without it (leave out --anomaly)",
        )
    detector = None if encoder is None else AutoencoderDetector.from_bundle(encoder)
    size = clf.model.input_size
    images = [open_image(p) for p in paths]
    locations = random_locations(images, pool, size, seed=seed)
    patches = read_patches(images, locations, size)
    logger.info("scoring %d candidate patches of %d images", len(patches), len(images))
    proba, vectors = clf.proba_and_features(patches)
    scores = None if detector is None else detector.anomaly_score(patches)
    labeled, counts = _labeled(clf, training.get("labels"))
    weights = priority(proba, scores)
    chosen, distance = select_batch(
        vectors,
        weights,
        n,
        labeled,
        proba=proba if by_class else None,
        counts=counts if by_class else None,
    )
    half = size // 2
    samples, rows = [], []
    unc = uncertainty(proba)
    ranks = None if scores is None else anomaly_rank(scores)
    for rank, (i, d) in enumerate(zip(chosen.tolist(), distance.tolist(), strict=True), 1):
        loc, image = locations[i], images[locations[i].source_index]
        z = loc.z if image.ndim == 3 else None
        y, x = loc.y + half, loc.x + half
        samples.append(LabeledSample(str(paths[loc.source_index]), x, y, z, ""))
        k = int(proba[i].argmax())
        rows.append(
            [rank, paths[loc.source_index], "" if z is None else z, y, x, clf.classes[k],
             f"{proba[i, k]:.4f}", f"{unc[i]:.4f}", "" if ranks is None else f"{ranks[i]:.4f}",
             f"{d:.4f}", f"{weights[i]:.4f}"]
        )  # fmt: skip
    titles = [f"{r[0]}: {r[5]} {float(r[6]):.2f}" for r in rows]
    c = clf.model.context  # the montage shows the patches the classifier classifies
    montage = _montage(patches[chosen][:, c : size - c, c : size - c], titles)
    # The scores first: they mark the three files as ours for a later --overwrite.
    with atomic_file(outputs[1], overwrite=overwrite, **ours) as tmp, open(tmp, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(SCORE_COLUMNS)
        writer.writerows(rows)
    with atomic_file(outputs[2], overwrite=overwrite, **ours) as tmp:
        tmp.write_bytes(montage)
    write_labels(outputs[0], samples, overwrite=overwrite)
    predicted = [r[5] for r in rows]
    return {
        "suggested": len(samples),
        "pool": len(patches),
        "labels": str(outputs[0]),
        "scores": str(outputs[1]),
        "montage": str(outputs[2]),
        "anomaly": detector is not None,
        "by_class": by_class,
        "avoided_labeled": 0 if labeled is None else len(labeled),
        "predicted": {c: predicted.count(c) for c in clf.classes if c in predicted},
    }
