"""``emae compare``: cross-validated comparison of classifiers over label budgets.

Every method sees the same folds (stratified, group-aware when the labels CSV has a ``group``
column: :func:`emae.data.folds.make_folds`) and, inside each training fold, the same nested subsets
of at most ``budget`` labels per class (:func:`emae.data.folds.budget_subset`). Each (method,
budget,
fold) is scored on the whole test fold with :func:`emae.classify.metrics.classification_metrics`.

Methods (:data:`METHODS`):

``head``            pretrained encoder, frozen, + 1x1-conv head (:mod:`emae.commands.finetune`)
``head-finetune``   the same with the encoder fine-tuned at a lower learning rate
``head-semi``       ``head-finetune`` trained semi-supervised (:mod:`emae.classify.semi`)
                    on patches of the ``unlabeled`` images besides the labels
``cnn-scratch``     the same architecture from random weights, trained on the labels only
``cnn-residual``    the same CNN trained on what the pretrained autoencoder could not
                    reconstruct (:mod:`emae.models.residual`)
``cnn-both``        the same CNN on the patch and its residual as two channels
``svm-features``    RBF SVM on handcrafted features (:mod:`emae.classify.baselines.svm_features`)
``latent-logreg``   logistic regression on frozen pooled latents
(:mod:`emae.classify.baselines.latent`)
``latent-knn``      k-nearest neighbours on the same latents

The output folder holds ``results/<method>__<budget>__fold<k>.json`` (one per fit, written
atomically, so an interrupted comparison resumes where it stopped), ``results.csv`` (one row per
fit), ``summary.json`` (mean and std over folds per method and budget), ``learning_curves.png``
and ``table.md`` (the final table at the largest budget). Without ``encoder`` but with
``unlabeled`` images, an encoder is first pretrained into ``OUT/encoder``.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emae.classify.config import FinetuneConfig
from emae.classify.estimator import PatchClassifier
from emae.classify.inputs import check_semi_supervised
from emae.classify.metrics import classification_metrics, summarize_folds
from emae.commands.finetune import unlabeled_patches
from emae.data.folds import budget_subset, make_folds
from emae.data.labels import load_labels
from emae.data.objects import labeled_dtype, object_patches
from emae.errors import EmaeError
from emae.io.atomic import atomic_file
from emae.io.provenance import check_not_input
from emae.report.plots import plot_learning_curves

logger = logging.getLogger(__name__)

METHODS: tuple[str, ...] = (
    "head",
    "head-finetune",
    "head-semi",
    "cnn-scratch",
    "cnn-residual",
    "cnn-both",
    "svm-features",
    "latent-logreg",
    "latent-knn",
)
NEEDS_ENCODER = {
    "head",
    "head-finetune",
    "head-semi",
    "cnn-residual",
    "cnn-both",
    "latent-logreg",
    "latent-knn",
}
#: Methods that read each patch with ``config.context`` pixels of surroundings.
RESIDUAL_METHODS = {"cnn-residual", "cnn-both"}
SETTINGS = "compare.json"


def _budget_name(budget: int | None) -> str:
    return "all" if budget is None else str(budget)


def _full_proba(proba: np.ndarray, seen: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities over all K classes from a model that saw the classes ``seen`` only."""
    out = np.zeros((len(proba), n_classes))
    out[:, seen] = proba
    return out


def make_estimator(
    method: str,
    *,
    encoder: Path | None,
    config: FinetuneConfig,
    classes: tuple[str, ...],
    source_dtype: str | None = None,
) -> Any:
    """The unfitted estimator of ``method`` (all follow the scikit-learn classifier contract).

    The head methods are :class:`~emae.classify.estimator.PatchClassifier` with the encoder
    frozen (``head``), fine-tuned (``head-finetune``, ``head-semi``) or absent
    (``cnn-scratch``); the baselines are :class:`~emae.classify.baselines.SVMOnFeatures` and
    :class:`~emae.classify.baselines.LatentClassifier`.
    """
    from emae.classify.baselines import LatentClassifier, SVMOnFeatures

    if method in ("head", "head-finetune", "head-semi", "cnn-scratch", *RESIDUAL_METHODS):
        freeze = "frozen" if method == "head" else "finetune"
        view = {"cnn-residual": "residual", "cnn-both": "both"}.get(method, "image")
        return PatchClassifier(
            None if method == "cnn-scratch" else encoder,
            config.model_copy(update={"freeze": freeze, "view": view}),
            classes=range(len(classes)),
            class_names=classes,
            source_dtype=source_dtype,
        )
    if method == "svm-features":
        return SVMOnFeatures(seed=config.seed)
    if method in ("latent-logreg", "latent-knn"):
        return LatentClassifier(encoder, kind="logreg" if method == "latent-logreg" else "knn")
    raise EmaeError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


#: What each method's ``fit`` takes besides the patches and labels (``features`` also goes to
#: ``predict_proba``): feature columns, the samples' groups, unlabeled patches.
FIT_INPUTS = {
    "head": ("features",),
    "head-finetune": ("features",),
    "head-semi": ("features", "unlabeled"),
    "cnn-scratch": ("features",),
    "cnn-residual": ("features",),
    "cnn-both": ("features",),
    "svm-features": ("features", "groups"),
    "latent-logreg": (),
    "latent-knn": (),
}


def fit_predict(
    method: str,
    train: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    test: tuple[np.ndarray, np.ndarray | None],
    classes: tuple[str, ...],
    *,
    encoder: Path | None,
    config: FinetuneConfig,
    groups: np.ndarray | None = None,
    unlabeled: np.ndarray | None = None,
    source_dtype: str | None = None,
) -> np.ndarray:
    """Fit one method on ``(patches, labels, extra)`` and return test probabilities ``(M, K)``.

    ``groups`` (of the training samples) keep the SVM's grid search group-aware;
    ``unlabeled`` ``(M, P, P)`` raw patches are what ``head-semi`` trains on besides the labels;
    ``source_dtype`` is the dtype of the images the patches came from (see
    :func:`emae.classify.training.train_classifier`).
    """
    x, y, extra = train
    x_test, extra_test = test
    c = (x.shape[-1] - int(config.patch_size or x.shape[-1])) // 2
    if c > 0 and method not in RESIDUAL_METHODS:  # read with context: the patches' centres
        x, x_test = x[..., c:-c, c:-c], x_test[..., c:-c, c:-c]
    if method == "head-semi" and unlabeled is None:
        raise EmaeError("method head-semi needs unlabeled images (--unlabeled DATA)")
    estimator = make_estimator(
        method, encoder=encoder, config=config, classes=classes, source_dtype=source_dtype
    )
    given = {"features": extra, "groups": groups, "unlabeled": unlabeled}
    takes = FIT_INPUTS[method]
    estimator.fit(x, y, **{k: given[k] for k in takes})
    predict = {"features": extra_test} if "features" in takes else {}
    return _full_proba(estimator.predict_proba(x_test, **predict), estimator.classes_, len(classes))


def _check_settings(out: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Create ``out`` or check that it holds the same comparison (then it resumes)."""
    path = out / SETTINGS
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved != settings and not overwrite:
            differ = sorted(k for k in settings if saved.get(k) != settings[k])
            raise EmaeError(
                f"{out} holds a comparison with other settings ({differ}); pass --overwrite "
                f"to start again or choose another folder"
            )
        if saved == settings:
            return
        for old in (out / "results").glob("*.json"):
            old.unlink()
    elif out.exists() and any(out.iterdir()):
        raise EmaeError(f"{out} exists and is not an emae comparison folder; choose another")
    (out / "results").mkdir(parents=True, exist_ok=True)
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(settings, indent=2))


def compare(
    labels_csv: str | Path,
    out: str | Path,
    *,
    encoder: str | Path | None = None,
    unlabeled: Sequence[str | Path] = (),
    methods: Sequence[str] = (
        "cnn-residual",
        "head",
        "cnn-scratch",
        "svm-features",
        "latent-logreg",
    ),
    folds: int = 5,
    budgets: Sequence[int | None] = (5, 10, 25, 50, None),
    config: FinetuneConfig | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the cross-validated comparison and write its folder (see the module docstring).

    Returns
    -------
    dict
        ``summary.json``: per method and budget the mean and std over folds of every metric.
    """
    out = Path(out)
    check_not_input(out, [labels_csv, encoder, *unlabeled])
    config = (config or FinetuneConfig()).model_copy(update={"seed": seed})
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise EmaeError(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    if set(methods) & NEEDS_ENCODER and encoder is None and not unlabeled:
        raise EmaeError(
            f"methods {sorted(set(methods) & NEEDS_ENCODER)} need a pretrained encoder: give "
            "--encoder RUN or --unlabeled DATA to pretrain one"
        )
    settings = {
        "labels": str(Path(labels_csv).resolve()),
        "encoder": None if encoder is None else str(Path(encoder).resolve()),
        "unlabeled": [str(u) for u in unlabeled],
        "methods": list(methods),
        "folds": folds,
        "budgets": [_budget_name(b) for b in budgets],
        "seed": seed,
        "config": config.model_dump(mode="json"),
    }
    if "head-semi" in methods and not unlabeled:
        raise EmaeError("method head-semi needs unlabeled images: give --unlabeled DATA")
    _check_settings(out, settings, overwrite)
    if encoder is None and unlabeled:
        encoder = _pretrained_encoder(out / "encoder", unlabeled, seed, progress)
    encoder = None if encoder is None else Path(encoder)
    patch_size = config.patch_size or _encoder_patch(encoder)
    config = config.model_copy(update={"patch_size": patch_size})
    # Read the patches with the context that cnn-residual's autoencoder sees; the other
    # methods get their centres.
    context = config.context if RESIDUAL_METHODS & set(methods) else 0
    labeled = load_labels(labels_csv, patch_size=patch_size)
    patches, y = object_patches(labeled, patch_size, config.input, context=context)
    source_dtype = str(labeled_dtype(labeled))
    extra = None
    if labeled.features:
        extra = np.array([s.features for s in labeled.samples], dtype=np.float64)
    pool = None
    if "head-semi" in methods:
        check_semi_supervised(config, len(labeled.classes), extra is not None)
        pool = unlabeled_patches(unlabeled, config.unlabeled_patches, patch_size, seed)
    groups = [s.group for s in labeled.samples]
    splits = make_folds(y, groups, folds, seed, classes=labeled.classes)
    has_groups = any(groups)
    group_ids = np.array([g or f"sample-{i}" for i, g in enumerate(groups)])
    rows = []
    for fold, (train_idx, test_idx) in enumerate(splits):
        for budget in budgets:
            subset = budget_subset(y, train_idx, budget, seed + fold)
            for method in methods:
                path = out / "results" / f"{method}__{_budget_name(budget)}__fold{fold}.json"
                if path.is_file():
                    rows.append(json.loads(path.read_text()))
                    continue
                began = time.perf_counter()
                proba = fit_predict(
                    method,
                    (patches[subset], y[subset], None if extra is None else extra[subset]),
                    (patches[test_idx], None if extra is None else extra[test_idx]),
                    labeled.classes,
                    encoder=encoder,
                    config=config,
                    groups=group_ids[subset] if has_groups else None,
                    unlabeled=pool,
                    source_dtype=source_dtype,
                )
                row = {
                    "method": method,
                    "budget": _budget_name(budget),
                    "fold": fold,
                    "n_train": len(subset),
                    "n_test": len(test_idx),
                    "seconds": time.perf_counter() - began,
                    "metrics": classification_metrics(y[test_idx], proba, labeled.classes),
                }
                with atomic_file(path, overwrite=True) as tmp:
                    tmp.write_text(json.dumps(row, indent=2))
                if progress:
                    logger.info(
                        "%s, %s labels/class, fold %d: macro-F1 %.3f (%.0f s)",
                        method,
                        row["budget"],
                        fold,
                        row["metrics"]["macro_f1"],
                        row["seconds"],
                    )
                rows.append(row)
    return _write_summary(out, rows, methods, budgets, labeled.class_counts())


def _encoder_patch(encoder: Path | None) -> int:
    if encoder is None:
        return 64
    from emae.folders.autoencoder import load_bundle

    return int(load_bundle(encoder).config.get("patch_size", 64))


def _pretrained_encoder(
    path: Path, unlabeled: Sequence[str | Path], seed: int, progress: bool
) -> Path:
    """Pretrain the default autoencoder on ``unlabeled`` into ``path`` (or reuse it)."""
    from emae.commands.pretrain import pretrain
    from emae.folders.files import is_bundle
    from emae.train.config import PretrainConfig

    if is_bundle(path):
        return path
    resume = path.with_name(path.name + ".training").exists()
    pretrain(unlabeled, path, PretrainConfig(seed=seed), resume=resume, progress=progress)
    return path


def _write_summary(
    out: Path,
    rows: list[dict[str, Any]],
    methods: Sequence[str],
    budgets: Sequence[int | None],
    class_counts: dict[str, int],
) -> dict[str, Any]:
    summary: dict[str, Any] = {"class_counts": class_counts, "methods": {}}
    curve = []
    for method in methods:
        summary["methods"][method] = {}
        for budget in budgets:
            name = _budget_name(budget)
            fits = [r for r in rows if r["method"] == method and r["budget"] == name]
            folded = summarize_folds([r["metrics"] for r in fits])
            folded["seconds"] = float(np.mean([r["seconds"] for r in fits]))
            summary["methods"][method][name] = folded
            f1 = folded["macro_f1"]
            curve.append({"method": method, "budget": budget, "mean": f1["mean"], "std": f1["std"]})
    with atomic_file(out / "summary.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    with atomic_file(out / "results.csv", overwrite=True) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "method",
                "budget",
                "fold",
                "n_train",
                "n_test",
                "seconds",
                "macro_f1",
                "balanced_accuracy",
                "accuracy",
                "macro_roc_auc",
            ]
        )
        for r in rows:
            m = r["metrics"]
            writer.writerow(
                [
                    r["method"],
                    r["budget"],
                    r["fold"],
                    r["n_train"],
                    r["n_test"],
                    f"{r['seconds']:.2f}",
                    m["macro_f1"],
                    m["balanced_accuracy"],
                    m["accuracy"],
                    m["macro_roc_auc"],
                ]
            )
    plot_learning_curves(curve, metric="macro_f1", path=out / "learning_curves.png")
    (out / "table.md").write_text(markdown_table(summary, _budget_name(budgets[-1])))
    return summary


def _cell(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "n/a"
    std = "" if stat["std"] is None else f" ± {stat['std']:.3f}"
    return f"{stat['mean']:.3f}{std}"


def markdown_table(summary: dict[str, Any], budget: str) -> str:
    """The comparison at one budget: macro-F1, balanced accuracy, ROC-AUC and per-class F1."""
    classes = list(summary["class_counts"])
    head = ["method", "macro-F1", "balanced acc.", "macro ROC-AUC", *[f"F1 {c}" for c in classes]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, by_budget in summary["methods"].items():
        s = by_budget[budget]
        cells = [_cell(s["macro_f1"]), _cell(s["balanced_accuracy"]), _cell(s["macro_roc_auc"])]
        cells += [_cell(s["per_class"][c]["f1"]) for c in classes]
        lines.append("| " + " | ".join([method, *cells]) + " |")
    return "\n".join(lines) + "\n"
