"""Plots: valid PNGs written atomically, figures returned, nothing left open or behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from emae.errors import EmaeError
from emae.plots import plot_confusion_matrix, plot_learning_curves, plot_panels, plot_roc_pr

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
    assert len(pr_ax.get_legend().get_texts()) == 3


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
    assert ax.get_ylabel() == "balanced_accuracy"
    ticks = ax.get_xticks()
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["2", "5", "10", "25", "all"]
    assert ticks[-1] == max(ticks) == 50  # 'all' at the right end
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ae", "pca", "raw"]


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
