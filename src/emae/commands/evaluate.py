"""``emae evaluate``: score a trained classifier on a labeled test set.

:func:`evaluate` writes a report folder::

    metrics.json      accuracy, balanced_accuracy, macro_f1, macro ROC/PR AUC, confusion matrix,
                      per_class {tpr, tnr, ppv, npv, f1, roc_auc, pr_auc, support}
    predictions.csv   image, x, y, z, label, predicted, p_<class> for every class
    confusion.png     confusion matrix (rows: true class, normalized per row)
    roc_pr.png        one-vs-rest ROC and precision-recall curves
    panels.png        input patches titled with prediction and target, mistakes first

The folder appears whole (atomically); an existing report is replaced only with ``overwrite``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from emae.classify.metrics import classification_metrics
from emae.data.labels import load_labels
from emae.data.normalization import PercentileNormalizer
from emae.data.objects import labeled_dtype, object_patches
from emae.errors import EmaeError
from emae.folders.classifier import load_classifier
from emae.io.atomic import atomic_dir
from emae.io.provenance import check_not_input
from emae.report.plots import plot_confusion_matrix, plot_panels, plot_roc_pr

#: Most samples drawn in the panel figure.
MAX_PANELS = 24


def _is_report(path: Path) -> bool:
    return (path / "metrics.json").is_file()


def evaluate(
    classifier: str | Path,
    labels_csv: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    rescale: bool = False,
) -> dict[str, Any]:
    """Classify every sample of a labels CSV and write the report folder.

    Parameters
    ----------
    classifier
        A classifier folder (``emae finetune``).
    labels_csv
        Test labels; every class must be one the classifier knows.
    out
        Report folder to create.
    overwrite
        Replace an existing report folder (no other kind of folder is replaced).
    rescale
        Normalize the test patches by their own percentiles instead of the classifier's
        intensity values (for test images of another dtype or range; refused otherwise).

    Returns
    -------
    dict
        The metrics (as in ``metrics.json``).
    """
    check_not_input(out, [classifier, labels_csv])
    clf = load_classifier(classifier)
    patch_size = clf.model.patch_size
    labeled = load_labels(labels_csv, patch_size=patch_size)
    check_not_input(out, {s.image for s in labeled.samples})
    unknown = sorted(set(labeled.classes) - set(clf.classes))
    if unknown:
        raise EmaeError(
            f"{labels_csv}: class(es) {unknown} unknown to the classifier, which knows "
            f"{list(clf.classes)}"
        )
    if not labeled.samples:
        raise EmaeError(f"{labels_csv}: no samples to evaluate")
    run = json.loads((Path(classifier) / "config.json").read_text()).get("run", {})
    variant = run.get("input", "surrounding")
    patches, local = object_patches(labeled, patch_size, variant, context=clf.model.context)
    source = labeled_dtype(labeled)
    if rescale:
        clf.normalizer = PercentileNormalizer.from_array(
            patches,
            low=clf.normalizer.low,
            high=clf.normalizer.high,
            source_dtype=str(source),
            what=f"the patches of {labels_csv}",
        )
    clf.normalizer.check_dtype(
        source, f"{labels_csv}: the labeled images", f"the classifier {classifier}"
    )
    y = np.array([clf.classes.index(labeled.classes[i]) for i in local])
    extra = None
    if clf.feature_names:
        if tuple(labeled.features) != clf.feature_names:
            raise EmaeError(
                f"{labels_csv}: feature columns {list(labeled.features)} differ from the "
                f"classifier's {list(clf.feature_names)}"
            )
        extra = np.array([s.features for s in labeled.samples], dtype=np.float64)
    proba = clf.predict_proba(patches, extra)
    metrics = classification_metrics(y, proba, clf.classes)
    predicted = proba.argmax(axis=1)
    order = np.argsort(predicted == y, kind="stable")[:MAX_PANELS]  # mistakes first
    titles = [f"pred {clf.classes[predicted[i]]}\ntrue {clf.classes[y[i]]}" for i in order]
    with atomic_dir(
        Path(out), overwrite=overwrite, replaceable=_is_report, kind="an emae report folder"
    ) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        with (tmp / "predictions.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(
                ["image", "x", "y", "z", "label", "predicted", *[f"p_{c}" for c in clf.classes]]
            )
            for sample, p, k in zip(labeled.samples, proba, predicted, strict=True):
                coords = ["" if v is None else v for v in (sample.x, sample.y, sample.z)]
                probs = [f"{v:.6f}" for v in p]
                writer.writerow([sample.image, *coords, sample.label, clf.classes[k], *probs])
        plot_confusion_matrix(metrics["confusion_matrix"], clf.classes, path=tmp / "confusion.png")
        plot_roc_pr(y, proba, clf.classes, path=tmp / "roc_pr.png")
        plot_panels(patches[order], titles, path=tmp / "panels.png", columns=6)
    return metrics
