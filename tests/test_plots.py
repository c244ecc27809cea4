"""Plots: valid PNGs written atomically, figures returned, nothing left open or behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from emae.errors import EmaeError
from emae.report.plots import (
    READABLE,
    class_style,
    plot_confusion_matrix,
    plot_learning_curves,
    plot_panels,
    plot_roc_pr,
    readable,
)

CLASSES = ("clean", "dust", "fold")


@pytest.fixture(autouse=True)
def no_leaked_figures() -> Iterator[None]:
    plt.close("all")
    yield
    assert plt.get_fignums() == []


def assert_png(path: Path) -> tuple[int, int]:
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def predictions(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=40)
    logits = rng.normal(size=(40, 3)) + 2.0 * np.eye(3)[y]
    proba = np.exp(logits)
    return y, proba / proba.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("normalize", [True, False])
def test_confusion_matrix(tmp_path: Path, normalize: bool) -> None:
    path = tmp_path / "cm.png"
    matrix = [[10, 2, 0], [1, 5, 3], [0, 0, 0]]  # an empty row must not divide by zero
    fig = plot_confusion_matrix(matrix, CLASSES, normalize=normalize, path=path)
    assert isinstance(fig, Figure)
    assert_png(path)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert ("0.83\n(10)" if normalize else "10") in texts


def test_overwrites_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "cm.png"
    path.write_bytes(b"old")
    plot_confusion_matrix(np.eye(3, dtype=int), CLASSES, path=path)
    assert_png(path)


def test_roc_pr(tmp_path: Path) -> None:
    path = tmp_path / "roc.png"
    y, proba = predictions()
    fig = plot_roc_pr(y, proba, CLASSES, path=path)
    assert_png(path)
    roc_ax, pr_ax = fig.axes[:2]
    assert len(roc_ax.get_legend().get_texts()) == 3
    assert roc_ax.get_legend().get_texts()[0].get_text().startswith("clean (AUC ")
    pr_labels = [t.get_text() for t in pr_ax.get_legend().get_texts()]
    assert len(pr_labels) == 4 and pr_labels[-1] == "dashed: prevalence = no skill"
    assert "prevalence" in pr_ax.get_title()


def test_roc_pr_draws_each_class_prevalence_dashed_in_its_colour() -> None:
    y, proba = predictions()
    fig = plot_roc_pr(y, proba, CLASSES)
    pr_ax = fig.axes[1]
    flat = [  # the axhline of each class: two points at one height, no legend entry
        ln
        for ln in pr_ax.get_lines()
        if ln.get_label().startswith("_") and len(set(np.asarray(ln.get_ydata()))) == 1
    ]
    assert len(flat) == 3
    for c, line in enumerate(flat):
        assert line.get_linestyle() == "--"
        assert line.get_ydata()[0] == pytest.approx(np.mean(y == c))
        assert line.get_color() == class_style(c)["color"]
    label = pr_ax.get_legend().get_texts()[0].get_text()
    assert label == f"clean (AP {label.split('AP ')[1][:5]}, prevalence {np.mean(y == 0):.2f})"


def test_eleven_classes_get_eleven_colours_the_same_in_both_panels() -> None:
    classes = [f"c{i}" for i in range(11)]
    rng = np.random.default_rng(1)
    y = np.arange(110) % 11
    proba = rng.random((110, 11)) + np.eye(11)[y]
    fig = plot_roc_pr(y, proba, classes)
    roc_ax, pr_ax = fig.axes[:2]
    roc = [ln.get_color() for ln in roc_ax.get_lines()[1:]]  # the first is the diagonal
    pr = [ln.get_color() for ln in pr_ax.get_lines() if not ln.get_label().startswith("_")]
    assert len(set(roc)) == 11
    assert roc == [class_style(c)["color"] for c in range(11)]
    assert pr[:11] == roc


def test_class_styles_are_distinct_and_stable() -> None:
    styles = [class_style(c) for c in range(40)]
    assert len({s["color"] for s in styles[:20]}) == 20
    assert len({(s["color"], s["linestyle"]) for s in styles}) == 40
    tab10 = matplotlib.colormaps["tab10"].colors
    assert [s["color"] for s in styles[:10]] == list(tab10)  # up to 10 classes: the usual colours


def test_readable_names() -> None:
    assert readable("head-finetune") == "pretrained encoder, fine-tuned"
    assert readable("macro_f1") == "macro-F1"
    assert readable("balanced_accuracy") == "balanced accuracy"
    assert readable("tpr") == "TPR"
    assert readable("my-own-method") == "my-own-method"  # unknown keys are shown as they are
    assert all("_" not in name for name in READABLE.values())


def test_roc_pr_skips_absent_class() -> None:
    y, proba = predictions()
    y = np.where(y == 2, 0, y)  # 'fold' never true
    fig = plot_roc_pr(y, proba, CLASSES)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert [label.split()[0] for label in labels] == ["clean", "dust"]


def test_learning_curves(tmp_path: Path) -> None:
    path = tmp_path / "curves.png"
    results = [
        {"method": m, "budget": b, "mean": 0.5 + 0.1 * i + 0.05 * j, "std": 0.02}
        for j, m in enumerate(("ae", "pca"))
        for i, b in enumerate((5, 10, 25, None))
    ]
    results.append({"method": "ae", "budget": 2, "mean": None, "std": None})  # skipped
    results.append({"method": "raw", "budget": "all", "mean": 0.7, "std": None})
    fig = plot_learning_curves(results, metric="balanced_accuracy", path=path)
    assert_png(path)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert ax.get_ylabel() == "balanced accuracy"
    ticks = ax.get_xticks()
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["2", "5", "10", "25", "all"]
    assert ticks[-1] == max(ticks) == 50  # 'all' at the right end
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ae", "pca", "raw"]


def test_learning_curves_show_readable_method_names() -> None:
    results = [
        {"method": m, "budget": b, "mean": 0.5, "std": None}
        for m in ("head", "head-finetune", "svm-features")
        for b in (5, None)
    ]
    fig = plot_learning_curves(results, metric="macro_f1")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "macro-F1"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "pretrained encoder, frozen",
        "pretrained encoder, fine-tuned",
        "SVM on handcrafted features",
    ]


@pytest.mark.parametrize(
    "results",
    [[], [{"method": "ae", "mean": 0.5}], [{"method": "ae", "budget": 0, "mean": 0.5}]],
)
def test_learning_curves_bad_results(results) -> None:
    with pytest.raises(EmaeError):
        plot_learning_curves(results)


def test_panels(tmp_path: Path) -> None:
    path = tmp_path / "panels.png"
    rng = np.random.default_rng(0)
    images = rng.random((5, 16, 16), dtype=np.float32)
    overlays = np.zeros((5, 16, 16), dtype=bool)
    overlays[:, 4:8, 4:8] = True
    titles = [f"pred {CLASSES[i % 3]}\ntrue {CLASSES[(i + 1) % 3]}" for i in range(5)]
    fig = plot_panels(images, titles, overlays=overlays, path=path, columns=3)
    width, height = assert_png(path)
    assert width > height  # 3 columns x 2 rows
    assert [ax.get_title() for ax in fig.axes[:5]] == titles
    assert len(fig.axes[0].images) == 2 and len(fig.axes[5].images) == 0  # spare axis empty
    assert len(plot_panels(images[:1], titles[:1]).axes) == 1


@pytest.mark.parametrize(
    ("images", "titles", "overlays", "match"),
    [
        (np.zeros((2, 8)), ["a", "b"], None, "N, H, W"),
        (np.zeros((2, 8, 8)), ["a"], None, "one title per image"),
        (np.zeros((2, 8, 8)), ["a", "b"], np.full((2, 8, 8), 2.0), r"\[0, 1\]"),
        (np.zeros((2, 8, 8)), ["a", "b"], np.zeros((1, 8, 8)), "overlays"),
    ],
)
def test_panels_bad_input(images, titles, overlays, match) -> None:
    with pytest.raises(EmaeError, match=match):
        plot_panels(images, titles, overlays=overlays)


def test_bad_confusion_matrix_and_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(EmaeError, match=r"\(3, 3\)"):
        plot_confusion_matrix(np.zeros((2, 2)), CLASSES)
    with pytest.raises(EmaeError, match="does not exist"):
        plot_confusion_matrix(np.eye(3), CLASSES, path=tmp_path / "missing" / "cm.png")
