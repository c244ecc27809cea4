"""The report reads at a glance: intervals, warnings, readable names, colour bars, QC maps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from emae.classify.metrics import (
    _average_precision,
    _rank_auc,
    bootstrap_intervals,
    classification_metrics,
    rate_intervals,
    summarize_folds,
    wilson_interval,
)
from emae.errors import EmaeError
from emae.report import write_report
from emae.report.comparison import compare_section
from emae.report.evaluation import class_intervals, class_warnings
from emae.report.figures import overlay_figure, panel_rows_figure, thumbnails_figure
from emae.volume.qc import qc_figure, tile_grid, tiles_from_csv

CLASSES = ["clean", "dust", "fold"]

# --- Wilson score intervals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hits", "n", "expected"),
    [
        (3, 5, (0.2307, 0.8824)),  # textbook values (e.g. Newcombe 1998, Brown et al. 2001)
        (0, 5, (0.0, 0.4345)),
        (5, 5, (0.5655, 1.0)),
        (1, 3, (0.0615, 0.7923)),
        (81, 263, (0.2553, 0.3662)),  # Wilson's worked example in Newcombe (1998), table I
        (0, 0, (0.0, 1.0)),  # nothing known
    ],
)
def test_wilson_interval_known_values(hits, n, expected) -> None:
    assert wilson_interval(hits, n) == pytest.approx(expected, abs=1e-4)


def test_wilson_interval_narrows_with_n_and_refuses_bad_counts() -> None:
    assert np.diff(wilson_interval(30, 50)) < np.diff(wilson_interval(3, 5))
    low, high = wilson_interval(3, 5, confidence=0.5)
    assert 0.231 < low < high < 0.882
    with pytest.raises(EmaeError, match="successes=6, n=5"):
        wilson_interval(6, 5)
    with pytest.raises(EmaeError, match="confidence=1"):
        wilson_interval(1, 5, confidence=1)


def test_rate_intervals_count_one_vs_rest() -> None:
    cm = [[1, 2, 0], [0, 12, 0], [0, 0, 0]]  # clean 1 of 3 right, dust all right, fold absent
    out = rate_intervals(cm, CLASSES)
    assert {k: out["clean"][k] for k in ("tp", "fn", "fp", "tn")} == {
        "tp": 1,
        "fn": 2,
        "fp": 0,
        "tn": 12,
    }
    assert out["clean"]["tpr"] == pytest.approx(wilson_interval(1, 3))
    assert out["dust"]["ppv"] == pytest.approx(wilson_interval(12, 14))
    assert out["fold"]["tpr"] is None and out["fold"]["ppv"] is None  # 0 / 0: no interval
    assert out["fold"]["tnr"] == pytest.approx(wilson_interval(15, 15))


def test_vectorized_auc_and_average_precision_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    positive = rng.random((40, 25)) < 0.3
    score = np.round(rng.random((40, 25)), 1)  # many ties
    auc, ap = _rank_auc(positive, score), _average_precision(positive, score)
    for i in range(40):
        if 0 < positive[i].sum() < 25:
            assert auc[i] == pytest.approx(roc_auc_score(positive[i], score[i]))
            assert ap[i] == pytest.approx(average_precision_score(positive[i], score[i]))


def test_bootstrap_intervals_bracket_the_estimate_and_are_seeded() -> None:
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    y[y == 2] = 0  # 'fold' absent
    proba = rng.random((60, 3)) + 0.8 * np.eye(3)[y]
    metrics = classification_metrics(y, proba, CLASSES)
    out = bootstrap_intervals(y, proba, CLASSES, n_boot=200, seed=3)
    assert out == bootstrap_intervals(y, proba, CLASSES, n_boot=200, seed=3)
    for key in ("f1", "roc_auc", "pr_auc"):
        low, high = out["dust"][key]
        assert low <= metrics["per_class"]["dust"][key] <= high
    assert out["fold"] == {"f1": None, "roc_auc": None, "pr_auc": None}


# --- the report of a poor classifier -------------------------------------------------------------


def _evaluation(folder: Path, y: np.ndarray, proba: np.ndarray) -> Path:
    """An evaluation folder as emae evaluate writes it (metrics.json, predictions.csv)."""
    folder.mkdir()
    metrics = classification_metrics(y, proba, CLASSES)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    with (folder / "predictions.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["image", "x", "y", "z", "label", "predicted", *[f"p_{c}" for c in CLASSES]]
        )
        for label, p in zip(y, proba, strict=True):
            predicted = CLASSES[int(np.argmax(p))]
            writer.writerow(
                ["a.tif", 0, 0, "", CLASSES[label], predicted, *[f"{v:.6f}" for v in p]]
            )
    return folder


def _poor(tmp_path: Path) -> Path:
    """Clean TPR 1/3: two of three good patches raise an alarm; dust and fold well found."""
    y = np.array([0, 0, 0] + [1] * 12 + [2] * 12)
    predicted = np.array([0, 1, 2] + [1] * 12 + [2] * 12)
    proba = np.full((y.size, 3), 0.1)
    proba[np.arange(y.size), predicted] = 0.8
    return _evaluation(tmp_path / "evaluation", y, proba)


def test_poor_classes_are_explained_in_one_plain_line_each(tmp_path) -> None:
    folder = _poor(tmp_path)
    metrics = json.loads((folder / "metrics.json").read_text())
    lines = dict(class_warnings(metrics, class_intervals(metrics, folder)))
    assert list(lines) == ["clean"]  # dust and fold: 12 of 12 found, none wrongly
    assert lines["clean"].startswith("2 of 3 good patches are flagged as artifacts; only 3 test")
    assert "from 0.06 to 0.79 (95%)" in lines["clean"]


def test_report_of_a_poor_classifier_shows_a_warning_box_and_intervals(tmp_path) -> None:
    html = write_report([_poor(tmp_path)], tmp_path / "r.html").read_text()
    box = html[html.index('id="warning-evaluation"') :]
    box = box[: box.index("</div>")]
    assert "<b>clean</b>: 2 of 3 good patches are flagged as artifacts" in box
    assert 'role="alert"' in html
    assert html.index('id="warning-evaluation"') < html.index('id="table-evaluation"')
    assert html.index('id="warning-summary"') < html.index('id="warning-evaluation"')
    assert "1 of 3 classes are poorly recognised" in html
    table = html[html.index('id="table-evaluation"') :]
    assert '0.333<span class="note">0.06–0.79</span>' in table  # clean TPR, Wilson 95%
    assert "Wilson score" in html and "bootstrap" in html


def test_report_of_a_good_classifier_has_no_warning_box(tmp_path) -> None:
    y = np.arange(60) % 3
    proba = 0.1 + 0.8 * np.eye(3)[y]
    html = write_report([_evaluation(tmp_path / "e", y, proba)], tmp_path / "r.html").read_text()
    assert 'class="warning"' not in html
    assert "<th>TPR</th>" in html and "<th>macro-F1</th>" in html


def test_comparison_shows_readable_method_and_metric_names(tmp_path) -> None:
    y = np.arange(30) % 3
    proba = 0.1 + 0.8 * np.eye(3)[y]
    fold = summarize_folds([classification_metrics(y, proba, CLASSES)])
    (tmp_path / "summary.json").write_text(
        json.dumps({"methods": {"head-finetune": {"all": fold}}})
    )
    (tmp_path / "compare.json").write_text(json.dumps({"folds": 1}))
    section = compare_section(tmp_path)
    table = section["blocks"][0]
    assert table["rows"][0][0] == "pretrained encoder, fine-tuned"
    assert table["header"][2:4] == ["macro-F1", "balanced accuracy"]
    assert "head-finetune" not in json.dumps([b.get("caption") for b in section["blocks"]])
    assert dict(section["highlights"])["cross-validated macro-F1, all labels / class"].startswith(
        "pretrained encoder, fine-tuned 1.000"
    )


# --- colour bars ---------------------------------------------------------------------------------


def _bar_labels(fig) -> list[str]:
    """Labels of the figure's colour bars (their axes carry the label)."""
    return [ax.get_xlabel() or ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_error_and_anomaly_panels_have_labelled_colour_bars() -> None:
    rng = np.random.default_rng(0)
    rows = [[rng.random((16, 16)) for _ in range(4)] for _ in range(2)]
    fig = panel_rows_figure(rows, ["input", "reconstruction", "error", "anomaly"], ["a", "b"])
    labels = _bar_labels(fig)
    assert len(labels) == 2
    assert labels[0].startswith("reconstruction error")
    assert labels[1] == "anomaly (larger = worse)"


def test_overlays_and_thumbnails_have_a_colour_bar() -> None:
    rng = np.random.default_rng(0)
    images = [rng.random((16, 16)) for _ in range(3)]
    fig = overlay_figure(images, images, ["a", "b", "c"], threshold=0.5)
    assert _bar_labels(fig) == ["anomaly (larger = worse); red from the pixel threshold 0.5 up"]
    fig = thumbnails_figure(images, [images[0], None, images[2]], ["a", "b", "c"])
    assert _bar_labels(fig)[0].startswith("anomaly (larger = worse)")


# --- the QC maps: tiles where they lie on the section --------------------------------------------


def _tile(y0: int, x0: int, height: int, width: int, fraction: float) -> dict:
    return {"y0": y0, "x0": x0, "height": height, "width": width, "fraction": fraction}


def test_tile_grid_lays_tiles_out_in_y_and_x() -> None:
    # a 300 x 450 section in 128-pixel chunks: 3 rows (128, 128, 44), 4 columns (128 x 3, 66)
    tiles = [
        _tile(y0, x0, min(128, 300 - y0), min(128, 450 - x0), 10 * (y0 // 128) + x0 // 128)
        for y0 in (0, 128, 256)
        for x0 in (0, 128, 256, 384)
    ]
    y_edges, x_edges, grid = tile_grid(tiles[::-1])  # any order
    assert y_edges.tolist() == [0, 128, 256, 300]
    assert x_edges.tolist() == [0, 128, 256, 384, 450]
    np.testing.assert_array_equal(grid, [[0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23]])


def test_tile_grid_leaves_missing_tiles_empty_and_refuses_a_non_grid() -> None:
    tiles = [_tile(0, 0, 10, 10, 0.5), _tile(10, 10, 5, 10, 0.25)]
    y_edges, x_edges, grid = tile_grid(tiles)
    assert y_edges.tolist() == [0, 10, 15] and x_edges.tolist() == [0, 10, 20]
    np.testing.assert_array_equal(grid, [[0.5, np.nan], [np.nan, 0.25]])
    with pytest.raises(EmaeError, match="do not form a grid"):
        tile_grid([_tile(0, 0, 10, 10, 0.0), _tile(0, 10, 12, 10, 0.0), _tile(10, 0, 5, 10, 0)])


def test_qc_table_becomes_per_section_maps() -> None:
    header = ["z", "tile", "x0", "y0", "width", "height", "mean_anomaly", "anomalous_fraction"]
    table = [
        [0, 0, 0, 0, 192, 192, 1.0, 0.004],
        [0, 1, 192, 0, 64, 192, 0.6, 0.0],
        [0, 2, 0, 192, 192, 64, 1.2, 0.019],
        [0, 3, 192, 192, 64, 64, 0.5, 0.0],
        [0, "all", 0, 0, "", "", 0.9, 0.006],
        [1, 0, 0, 0, 192, 192, 1.0, 0.0],
        [1, 1, 192, 0, 64, 192, 0.6, 0.5],
        [1, 2, 0, 192, 192, 64, 1.2, 0.0],
        [1, 3, 192, 192, 64, 64, 0.5, 0.0],
        [1, "all", 0, 0, "", "", 0.9, 0.09],
    ]
    rows = [dict(zip(header, map(str, r), strict=True)) for r in table]
    sections = tiles_from_csv(rows)
    assert [z for z, _ in sections] == [0, 1]
    _, _, grid = tile_grid(sections[1][1])
    np.testing.assert_array_equal(grid, [[0.0, 0.5], [0.0, 0.0]])  # top right: y0 0, x0 192
    fig = qc_figure(sections)
    maps = [ax for ax in fig.axes if ax.get_title().startswith("z ")]
    assert [ax.get_title() for ax in maps] == ["z 0: 0.58%", "z 1: 9.4%"]
    assert maps[0].get_ylim() == (256, 0)  # y down, as in the image
    assert _bar_labels(fig) == ["fraction of pixels above threshold", "fraction above threshold"]


def test_qc_figure_draws_the_worst_sections_when_there_are_many() -> None:
    sections = [(z, [_tile(0, 0, 8, 8, 0.01 * (z == 7 or z == 30))]) for z in range(40)]
    fig = qc_figure(sections, max_maps=4)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title().startswith("z ")]
    assert len(titles) == 4 and "z 7: 1%" in titles and "z 30: 1%" in titles


def test_a_closed_form_model_is_reported_as_fitted_not_trained(tmp_path):
    import json

    from emae.report.sections import _fmt, autoencoder_section
    from emae.report.sources import Runs

    folder = tmp_path / "pca"
    folder.mkdir()
    run = {"model": "pca", "patch_size": 64, "pca_tile": 16, "latent_channels": 8, "seed": 3}
    (folder / "config.json").write_text(json.dumps({"run": run}))
    summary = {
        "steps_done": 0,
        "fitted_patches": 4096,
        "seconds": 2.0,
        "best_val": 0.01,
        "history": [{"step": 0, "val_loss": 0.01}],
    }
    (folder / "training.json").write_text(json.dumps(summary))
    section = autoencoder_section(Runs(), folder)
    items = dict(section["blocks"][0]["items"])
    assert items["fitted in closed form on"] == "4096 patches"
    assert "steps x batch" not in items and "channels" not in items
    assert len(section["blocks"]) == 1  # no training curve of a single point
    assert _fmt(9.9e-05) == "9.9e-05" and _fmt(0.25) == "0.250" and _fmt(0.0) == "0.000"
