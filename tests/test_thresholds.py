"""Thresholds: brute-force references, tie rules, input validation and the JSON record."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emae.anomaly.thresholds import Threshold, f1_curve, threshold_at_fpr, threshold_f1
from emae.errors import EmaeError


def brute_fpr(scores: np.ndarray, target: float) -> float:
    """The smallest observed score t with mean(scores > t) <= target, by trying every one."""
    ok = [t for t in np.sort(scores) if np.count_nonzero(scores > t) / scores.size <= target]
    return float(ok[0])


def brute_f1(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(best threshold, its F1) over every score and one value below all, ties to fewer FP."""
    best = None
    for t in [scores.min() - 1.0, *np.unique(scores)]:
        flagged = scores > t
        tp = np.count_nonzero(flagged & labels)
        fp = np.count_nonzero(flagged & ~labels)
        fn = np.count_nonzero(~flagged & labels)
        f1 = 2 * tp / (2 * tp + fp + fn)
        if best is None or f1 > best[0] or (f1 == best[0] and fp < best[1]):
            best = (f1, fp, t)
    return best[2], best[0]


# Scores drawn from few values, so ties are common.
tied_scores = st.lists(st.integers(0, 12), min_size=1, max_size=60).map(
    lambda v: np.asarray(v, dtype=np.float64) / 4
)


@settings(max_examples=200, deadline=None)
@given(scores=tied_scores, target=st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.29, 0.5, 0.99]))
def test_threshold_at_fpr_matches_brute_force(scores: np.ndarray, target: float) -> None:
    t = threshold_at_fpr(scores, target)
    assert t == brute_fpr(scores, target)
    assert np.mean(scores > t) <= target


def test_threshold_at_fpr_is_an_upper_quantile() -> None:
    scores = np.arange(100, dtype=np.float32)[::-1]  # 99 .. 0, any order
    assert threshold_at_fpr(scores, 0.0) == 99.0
    assert threshold_at_fpr(scores, 0.05) == 94.0  # flags 95..99: exactly 5%
    assert threshold_at_fpr(scores, 0.29) == 70.0  # 0.29 * 100 is 28.999... in floating point
    assert threshold_at_fpr(np.array([3.0]), 0.5) == 3.0
    assert threshold_at_fpr(np.array([1, 1, 1, 2]), 0.3) == 1.0  # ties: 1 of 4 flagged


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_threshold_f1_matches_brute_force(data: st.DataObject) -> None:
    scores = data.draw(tied_scores.filter(lambda s: s.size >= 2))
    flags = st.lists(st.booleans(), min_size=scores.size, max_size=scores.size)
    labels = np.asarray(data.draw(flags))
    if labels.all() or not labels.any():
        labels[0] = not labels[0]
    t = threshold_f1(scores, labels)
    expected_t, expected_f1 = brute_f1(scores, labels)
    flagged = scores > t
    tp, fp = np.count_nonzero(flagged & labels), np.count_nonzero(flagged & ~labels)
    f1 = 2 * tp / (tp + fp + np.count_nonzero(labels))
    assert f1 == pytest.approx(expected_f1)
    assert np.array_equal(flagged, scores > expected_t)


def test_f1_curve_by_hand() -> None:
    scores, labels = np.array([0.0, 1.0, 2.0, 3.0]), np.array([0, 1, 0, 1])
    thresholds, f1, fp = f1_curve(scores, labels)
    # Flag all: tp 2 fp 2; > 0: tp 2 fp 1; > 1: tp 1 fp 1; > 2: tp 1 fp 0; > 3: nothing.
    assert thresholds[0] < 0.0 and thresholds[1:].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert f1.tolist() == pytest.approx([2 / 3, 0.8, 0.5, 2 / 3, 0.0])
    assert fp.tolist() == [2, 1, 1, 0, 0]
    assert threshold_f1(scores, labels) == 0.0


def test_threshold_f1_ties_go_to_fewer_false_positives() -> None:
    # Flagging everything (tp 2, fp 2) and flagging only 3.0 (tp 1, fp 0) both give F1 = 2/3.
    assert threshold_f1([0.0, 1.0, 2.0, 3.0], [1, 0, 0, 1]) == 2.0


def test_threshold_f1_can_flag_everything() -> None:
    t = threshold_f1(np.array([1.0, 2.0, 3.0]), np.array([1, 1, 0]))
    assert t < 1.0 and (np.array([1.0, 2.0, 3.0]) > t).all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: threshold_at_fpr([], 0.1), r"normal_scores is empty"),
        (lambda: threshold_at_fpr([1.0, np.nan], 0.1), r"1 NaN or infinite .* index 1: nan"),
        (lambda: threshold_at_fpr([1.0, np.inf], 0.1), r"NaN or infinite"),
        (lambda: threshold_at_fpr(np.zeros((2, 2)), 0.1), r"1D array of numbers, got shape"),
        (lambda: threshold_at_fpr(["a"], 0.1), r"1D array of numbers, .* dtype <U1"),
        (
            lambda: threshold_at_fpr([1.0], 1.0),
            r"target_fpr must be a rate in \[0, 1\), got target_fpr=1.0",
        ),
        (lambda: threshold_at_fpr([1.0], -0.1), r"got target_fpr=-0.1"),
        (lambda: threshold_at_fpr([1.0], float("nan")), r"got target_fpr=nan"),
        (lambda: threshold_f1([], []), r"scores is empty"),
        (lambda: threshold_f1([1.0, 2.0], [1]), r"labels must be a 1D array of 2 values"),
        (lambda: threshold_f1([1.0, 2.0], [0, 2]), r"labels must be 0/1 or bool .* \[0, 2\]"),
        (lambda: threshold_f1([1.0, 2.0], [0, 0]), r"labels are all normal \(2 of 2\)"),
        (lambda: threshold_f1([1.0, 2.0], [True, True]), r"labels are all anomalous"),
        (lambda: threshold_f1([1.0, np.nan], [0, 1]), r"scores holds 1 NaN"),
    ],
)
def test_bad_input_is_refused(call, message: str) -> None:
    with pytest.raises(EmaeError, match=message):
        call()


def test_threshold_records_round_trip_through_json() -> None:
    rng = np.random.default_rng(0)
    normal = rng.normal(size=200)
    records = [
        Threshold.at_fpr(normal, 0.05, score="feature/p99"),
        Threshold.best_f1(np.r_[normal, normal + 3], np.r_[np.zeros(200), np.ones(200)]),
        Threshold.fixed(np.float32(0.5), score="pixel/mean"),
    ]
    fpr, f1, fixed = records
    assert fpr.value == threshold_at_fpr(normal, 0.05)
    assert (fpr.method, fpr.score, fpr.target_fpr, fpr.n_normal) == (
        "fpr",
        "feature/p99",
        0.05,
        200,
    )
    assert (f1.method, f1.n_normal, f1.n_anomalous, f1.target_fpr) == ("f1", 200, 200, None)
    expected = {"value": 0.5, "method": "fixed", "score": "pixel/mean", "n_normal": 0}
    assert fixed.to_dict() == {**expected, "n_anomalous": 0}
    for record in records:
        text = json.dumps(record.to_dict())
        assert Threshold.from_dict(json.loads(text)) == record
    assert fixed.is_anomalous([0.4, 0.5, 0.6]).tolist() == [False, False, True]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"value": 1.0}, r"missing \['method'\]"),
        ({"value": 1.0, "method": "fixed", "colour": "red"}, r"unknown \['colour'\]"),
        ({"value": 1.0, "method": "guess"}, r"method must be one of fpr, f1, fixed, got 'guess'"),
        ({"value": "1", "method": "fixed"}, r"threshold value must be a number, got '1'"),
        ({"value": float("inf"), "method": "fixed"}, r"threshold value must be finite"),
        ({"value": 1.0, "method": "fpr"}, r"target_fpr is required with method 'fpr'"),
        ({"value": 1.0, "method": "f1", "target_fpr": 0.1}, r"and only then"),
        ({"value": 1.0, "method": "fpr", "target_fpr": 2.0}, r"target_fpr must be a rate"),
        ({"value": 1.0, "method": "f1", "n_normal": -1}, r"n_normal must be a non-negative int"),
    ],
)
def test_bad_threshold_records_are_refused(data: dict, message: str) -> None:
    with pytest.raises(EmaeError, match=message):
        Threshold.from_dict(data)
