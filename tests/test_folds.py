"""Folds: partition, stratification, groups, clear errors; nested budgets; budget parsing."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from emae.data.folds import budget_subset, make_folds, parse_budgets
from emae.errors import EmaeError

CLASSES = ("clean", "dust", "fold")


def labels_and_groups(seed: int = 0) -> tuple[np.ndarray, list[str | None]]:
    """60 samples of 3 imbalanced classes in 12 images; every class occurs in >= 5 images."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], [36, 14, 10])
    groups: list[str | None] = [f"img{i % 12}" for i in range(60)]
    rng.shuffle(groups)
    return y, groups


def check_partition(folds: list[tuple[np.ndarray, np.ndarray]], n: int, n_folds: int) -> None:
    assert len(folds) == n_folds
    tests = np.concatenate([test for _, test in folds])
    assert np.array_equal(np.sort(tests), np.arange(n))  # each sample tested exactly once
    for train, test in folds:
        assert train.dtype == np.int64 and test.dtype == np.int64
        assert np.intersect1d(train, test).size == 0
        assert np.array_equal(np.union1d(train, test), np.arange(n))


def test_stratified_without_groups() -> None:
    y, _ = labels_and_groups()
    folds = make_folds(y, None, n_folds=5, seed=0)
    check_partition(folds, y.size, 5)
    for _, test in folds:
        counts = np.bincount(y[test], minlength=3)
        expected = np.bincount(y) / 5
        assert (np.abs(counts - expected) < 1).all()  # stratified to within one sample


def test_seeded() -> None:
    y, groups = labels_and_groups()
    for g in (None, groups):
        a, b = make_folds(y, g, 4, seed=1), make_folds(y, g, 4, seed=1)
        assert all(np.array_equal(x[1], z[1]) for x, z in zip(a, b, strict=True))
        c = make_folds(y, g, 4, seed=2)
        assert not all(np.array_equal(x[1], z[1]) for x, z in zip(a, c, strict=True))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_groups_never_split(seed: int) -> None:
    y, groups = labels_and_groups(seed)
    folds = make_folds(y, groups, n_folds=5, seed=seed)
    check_partition(folds, y.size, 5)
    g = np.asarray(groups)
    for train, test in folds:
        assert not set(g[train]) & set(g[test])
        assert set(y[test]) == {0, 1, 2}  # every class in every test fold


def test_ungrouped_samples_are_their_own_groups() -> None:
    y, groups = labels_and_groups()
    # Images 0 and 1 named; every other sample has no group (None or "").
    mixed = [g if g in ("img0", "img1") else (None if i % 2 else "") for i, g in enumerate(groups)]
    folds = make_folds(y, mixed, n_folds=5, seed=0)
    check_partition(folds, y.size, 5)
    m = np.asarray(mixed, dtype=object)
    for name in ("img0", "img1"):
        members = set(np.flatnonzero(m == name).tolist())
        assert sum(bool(members & set(test.tolist())) for _, test in folds) == 1
    # Samples without a group are spread over the folds like ungrouped data.
    for _, test in folds:
        assert set(y[test]) == {0, 1, 2}
    # All-empty groups behave exactly like no groups.
    blank = make_folds(y, [None] * y.size, n_folds=5, seed=0)
    plain = make_folds(y, None, n_folds=5, seed=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(blank, plain, strict=True))


def test_rare_class_error_message() -> None:
    y = np.repeat([0, 1, 2], [20, 3, 10])
    with pytest.raises(EmaeError) as err:
        make_folds(y, None, n_folds=5, classes=CLASSES)
    assert str(err.value) == (
        "class 'dust' has 3 samples, fewer than the 5 folds; use at most 3 folds or label more"
    )
    with pytest.raises(EmaeError, match="class 1 has 1 sample, fewer than the 5 folds"):
        make_folds(np.repeat([0, 1], [20, 1]), None, n_folds=5)


@pytest.mark.parametrize(
    ("labels", "groups", "n_folds", "match"),
    [
        (np.repeat([0, 1], 10), [f"g{i % 3}" for i in range(20)], 5, "3 distinct groups"),
        (np.repeat([0, 1], 10), None, 1, "integer >= 2"),
        (np.repeat([0, 1], 10), None, 2.0, "integer >= 2"),
        (np.zeros(10, dtype=int), None, 2, "at least 2 classes"),
        (np.repeat([0, 1], 10), ["g"] * 3, 2, "one value per sample"),
        (np.array([0.0, 1.0] * 5), None, 2, "integer class indices"),
        (np.array([-1, 1] * 5), None, 2, ">= 0"),
    ],
)
def test_bad_requests(labels, groups, n_folds, match) -> None:
    with pytest.raises(EmaeError, match=match):
        make_folds(labels, groups, n_folds=n_folds)


def test_warns_when_a_class_spans_few_groups(caplog: pytest.LogCaptureFixture) -> None:
    y = np.repeat([0, 1], [30, 10])
    groups = [f"g{i % 6}" for i in range(30)] + ["r0"] * 5 + ["r1"] * 5
    with caplog.at_level(logging.WARNING, logger="emae.data.folds"):
        folds = make_folds(y, groups, n_folds=4, seed=0, classes=("clean", "dust"))
    check_partition(folds, y.size, 4)
    assert "class 'dust' occurs in 2 groups only, so 2 of the 4 test folds lack it" in caplog.text


def test_budget_subset_nested_and_bounded() -> None:
    y, _ = labels_and_groups()
    train, _ = make_folds(y, None, n_folds=5, seed=0)[0]
    previous = np.array([], dtype=np.int64)
    for budget in (1, 2, 5, 10, 100, None):
        subset = budget_subset(y, train, budget, seed=7)
        assert subset.dtype == np.int64 and np.array_equal(subset, np.unique(subset))
        assert np.isin(subset, train).all()
        assert np.isin(previous, subset).all()  # nested: smaller budget contained in larger
        counts = np.bincount(y[subset], minlength=3)
        available = np.bincount(y[train], minlength=3)
        expected = available if budget is None else np.minimum(available, budget)
        assert np.array_equal(counts, expected)
        previous = subset
    assert np.array_equal(budget_subset(y, train, None, seed=7), np.sort(train))
    # Seeded, and independent of the order of train_idx.
    a = budget_subset(y, train, 3, seed=7)
    assert np.array_equal(a, budget_subset(y, train[::-1], 3, seed=7))
    assert not np.array_equal(a, budget_subset(y, train, 3, seed=8))


@pytest.mark.parametrize("budget", [0, -3, 2.5, True, "5"])
def test_budget_subset_rejects_bad_budget(budget) -> None:
    with pytest.raises(EmaeError, match="budget"):
        budget_subset(np.array([0, 1]), np.array([0, 1]), budget, seed=0)


def test_budget_subset_rejects_bad_indices() -> None:
    with pytest.raises(EmaeError, match="index the 2 labels"):
        budget_subset(np.array([0, 1]), np.array([0, 5]), 1, seed=0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5,10,25,all", [5, 10, 25, None]),
        (" 10 , 5 ", [5, 10]),
        ("ALL", [None]),
        ("all,3", [3, None]),
    ],
)
def test_parse_budgets(text: str, expected: list[int | None]) -> None:
    assert parse_budgets(text) == expected


@pytest.mark.parametrize("text", ["", " ", "5,,10", "abc", "0", "-5", "2.5", "5,5", "all,all", "²"])
def test_parse_budgets_rejects_junk(text: str) -> None:
    with pytest.raises(EmaeError, match="budget"):
        parse_budgets(text)
