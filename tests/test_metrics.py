"""Metrics: every number cross-checked against scikit-learn, plus hand-computed examples."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from emae.classify.metrics import classification_metrics, summarize_folds
from emae.errors import EmaeError

CLASSES4 = ("clean", "dust", "fold", "stain")


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def make_case(kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Seeded labels and informative-but-noisy probabilities for one scenario."""
    rng = np.random.default_rng(seed)
    if kind == "balanced3":
        classes, y = CLASSES4[:3], rng.integers(0, 3, size=90)
    elif kind == "imbalanced4":
        classes, y = CLASSES4, rng.choice(4, size=120, p=[0.7, 0.2, 0.07, 0.03])
    elif kind == "never_predicted":
        classes, y = CLASSES4, rng.integers(0, 4, size=80)
    elif kind == "absent":  # class 3 never occurs in y_true but is sometimes predicted
        classes, y = CLASSES4, rng.integers(0, 3, size=60)
    else:
        raise AssertionError(kind)
    k = len(classes)
    logits = rng.normal(size=(y.size, k)) + 1.5 * np.eye(k)[y]
    if kind == "never_predicted":
        logits[:, 2] -= 10.0
    if kind == "absent":
        logits[:, 3] += 0.8
    return y, softmax(logits), classes


CASES = ("balanced3", "imbalanced4", "never_predicted", "absent")


def flatten(value: object, prefix: str = "") -> dict[str, object]:
    """Nested dicts and lists as one flat ``{"a.b.0": leaf}`` dict, for approximate comparison."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {prefix: value}
    return {k: v for key, item in items for k, v in flatten(item, f"{prefix}.{key}").items()}


@pytest.mark.parametrize("kind", CASES)
def test_matches_sklearn(kind: str) -> None:
    y, proba, classes = make_case(kind)
    k = len(classes)
    pred = proba.argmax(axis=1)
    labels = list(range(k))
    present = sorted(set(y.tolist()))
    got = classification_metrics(y, proba, classes)

    assert got["classes"] == list(classes)
    assert got["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=labels).tolist()
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about predicted classes absent from y
        balanced = skm.balanced_accuracy_score(y, pred)
    assert got["balanced_accuracy"] == pytest.approx(balanced)
    macro_f1 = skm.f1_score(y, pred, labels=present, average="macro", zero_division=0)
    assert got["macro_f1"] == pytest.approx(macro_f1)

    recall = skm.recall_score(y, pred, labels=labels, average=None, zero_division=0)
    precision = skm.precision_score(y, pred, labels=labels, average=None, zero_division=0)
    f1 = skm.f1_score(y, pred, labels=labels, average=None, zero_division=0)
    aucs, aps = [], []
    for c, name in enumerate(classes):
        m = got["per_class"][name]
        pos, neg, pred_neg = y == c, y != c, pred != c
        assert m["support"] == int(pos.sum())
        assert m["tpr"] == pytest.approx(recall[c])
        assert m["ppv"] == pytest.approx(precision[c])
        assert m["f1"] == pytest.approx(f1[c])
        # TNR and NPV are recall and precision of the negative class, one-vs-rest.
        assert m["tnr"] == pytest.approx(skm.recall_score(neg, pred_neg, zero_division=0))
        assert m["npv"] == pytest.approx(skm.precision_score(neg, pred_neg, zero_division=0))
        if pos.any():
            auc = skm.roc_auc_score(pos, proba[:, c])
            ap = skm.average_precision_score(pos, proba[:, c])
            assert m["roc_auc"] == pytest.approx(auc)
            assert m["pr_auc"] == pytest.approx(ap)
            aucs.append(auc)
            aps.append(ap)
        else:
            assert m["roc_auc"] is None and m["pr_auc"] is None
    assert got["macro_roc_auc"] == pytest.approx(np.mean(aucs))
    assert got["macro_pr_auc"] == pytest.approx(np.mean(aps))
    if kind != "absent":  # sklearn's multiclass forms need every class present
        ovr = skm.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=labels)
        assert got["macro_roc_auc"] == pytest.approx(ovr)
        ap_macro = skm.average_precision_score(y, proba, average="macro")
        assert got["macro_pr_auc"] == pytest.approx(ap_macro)


def test_never_predicted_class_has_zero_ppv() -> None:
    y, proba, classes = make_case("never_predicted")
    assert not (proba.argmax(axis=1) == 2).any()
    dust = classification_metrics(y, proba, classes)["per_class"]["fold"]
    assert dust["ppv"] == 0.0 and dust["tpr"] == 0.0 and dust["f1"] == 0.0
    assert dust["support"] > 0 and dust["roc_auc"] is not None


def test_hand_computed_tiny_example() -> None:
    # true:  a a a b b c ; pred: a a b b c c
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    proba = np.full((6, 3), 0.1)
    proba[np.arange(6), pred] = 0.8
    got = classification_metrics(y, proba, ["a", "b", "c"])
    assert got["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    a, b, c = (got["per_class"][n] for n in "abc")
    # a: TP 2, FN 1, FP 0, TN 3
    assert (a["tpr"], a["tnr"], a["ppv"], a["npv"]) == pytest.approx((2 / 3, 1.0, 1.0, 3 / 4))
    # b: TP 1, FN 1, FP 1, TN 3
    assert (b["tpr"], b["tnr"], b["ppv"], b["npv"]) == pytest.approx((0.5, 3 / 4, 0.5, 3 / 4))
    # c: TP 1, FN 0, FP 1, TN 4
    assert (c["tpr"], c["tnr"], c["ppv"], c["npv"]) == pytest.approx((1.0, 4 / 5, 0.5, 1.0))
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["balanced_accuracy"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)


def test_all_one_class_gives_none_roc_and_zero_division() -> None:
    y = np.zeros(4, dtype=int)
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    got = classification_metrics(y, proba, ["a", "b"])
    a, b = got["per_class"]["a"], got["per_class"]["b"]
    assert a["roc_auc"] is None  # no negatives
    assert a["pr_auc"] == pytest.approx(1.0)
    assert a["tnr"] == 0.0  # TN + FP == 0
    assert b["tpr"] == 0.0 and b["roc_auc"] is None and b["pr_auc"] is None  # no positives
    assert got["macro_roc_auc"] is None
    assert got["balanced_accuracy"] == pytest.approx(0.75)  # over class a only


@pytest.mark.parametrize("kind", CASES)
def test_json_safe_and_unnormalized_rows(kind: str) -> None:
    y, proba, classes = make_case(kind, seed=3)
    got = classification_metrics(y, proba, classes)
    assert json.loads(json.dumps(got, allow_nan=False)) == got
    # Rows need not sum to 1: only the argmax and the per-class ranking matter.
    scaled = flatten(classification_metrics(y, 5.0 * proba, classes))
    assert scaled == pytest.approx(flatten(got))


@pytest.mark.parametrize(
    ("y", "proba", "match"),
    [
        (np.array([0, 1]), np.zeros((3, 2)), "shape"),
        (np.array([0, 1]), np.zeros((2, 3)), "shape"),
        (np.array([0, 1]), np.zeros(2), "shape"),
        (np.array([0, 2]), np.zeros((2, 2)), "outside 0..1"),
        (np.array([0, -1]), np.zeros((2, 2)), "outside 0..1"),
        (np.array([0.0, 1.0]), np.zeros((2, 2)), "integer"),
        (np.array([], dtype=int), np.zeros((0, 2)), "non-empty"),
        (np.array([0, 1]), np.array([[0.5, np.nan], [0.5, 0.5]]), "NaN"),
    ],
)
def test_bad_input(y: np.ndarray, proba: np.ndarray, match: str) -> None:
    with pytest.raises(EmaeError, match=match):
        classification_metrics(y, proba, ["a", "b"])


def test_needs_two_classes() -> None:
    with pytest.raises(EmaeError, match="at least 2 classes"):
        classification_metrics(np.array([0]), np.ones((1, 1)), ["a"])


def test_summarize_folds() -> None:
    folds = [classification_metrics(*make_case("imbalanced4", seed=s)) for s in range(3)]
    folds.append(classification_metrics(*make_case("absent", seed=9)))
    summary = summarize_folds(folds)
    assert summary["n_folds"] == 4
    assert summary["classes"] == list(CLASSES4)
    acc = [f["accuracy"] for f in folds]
    assert summary["accuracy"]["mean"] == pytest.approx(np.mean(acc))
    assert summary["accuracy"]["std"] == pytest.approx(np.std(acc, ddof=1))
    assert summary["accuracy"]["n"] == 4
    # None (class 'stain' absent from the last fold) is ignored, not counted as 0.
    auc = [f["per_class"]["stain"]["roc_auc"] for f in folds]
    kept = [v for v in auc if v is not None]
    stats = summary["per_class"]["stain"]["roc_auc"]
    assert stats["n"] == len(kept) == 3
    assert stats["mean"] == pytest.approx(np.mean(kept))
    assert stats["std"] == pytest.approx(np.std(kept, ddof=1))
    total = np.sum([f["confusion_matrix"] for f in folds], axis=0)
    assert summary["confusion_matrix"] == total.tolist()
    assert set(summary["per_class"]["dust"]) == set(folds[0]["per_class"]["dust"])
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary


def test_summarize_single_fold_and_errors() -> None:
    fold = classification_metrics(*make_case("balanced3"))
    one = summarize_folds([fold])
    assert one["accuracy"] == {"mean": pytest.approx(fold["accuracy"]), "std": None, "n": 1}
    with pytest.raises(EmaeError, match="at least one fold"):
        summarize_folds([])
    other = classification_metrics(*make_case("imbalanced4"))
    with pytest.raises(EmaeError, match="same classes"):
        summarize_folds([fold, other])
