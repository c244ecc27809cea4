"""Cross-validation folds and nested label budgets for learning curves.

:func:`make_folds` splits labeled samples into stratified folds, keeping every group (e.g. one
image or one section) on a single side of each split. :func:`budget_subset` then draws at most
``per_class`` training samples of each class from a fold's training indices, such that for one
seed a smaller budget's subset is always contained in a larger one's: a learning curve then adds
labels to the same training set instead of drawing a fresh one per budget.
:func:`parse_budgets` reads budgets written as ``"5,10,25,all"``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from emae.errors import EmaeError

logger = logging.getLogger(__name__)

ALL = "all"


def _class_name(c: int, classes: Sequence[str] | None) -> str:
    return repr(classes[c]) if classes is not None and c < len(classes) else str(c)


def _labels(labels: Any) -> np.ndarray:
    """``labels`` as a non-empty ``(N,)`` int64 array of non-negative class indices."""
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0 or y.dtype.kind not in "iu":
        raise EmaeError(
            f"labels must be a non-empty 1D array of integer class indices, "
            f"got shape {y.shape} dtype {y.dtype}"
        )
    if (y < 0).any():
        raise EmaeError(f"labels must be class indices >= 0, got {int(y.min())}")
    return y.astype(np.int64)


def _group_ids(groups: Any, n: int) -> np.ndarray | None:
    """``(N,)`` int64 group ids, a fresh one for every None/"" group; None when no group given."""
    if groups is None:
        return None
    values = list(groups)
    if len(values) != n:
        raise EmaeError(f"groups must hold one value per sample ({n}), got {len(values)}")
    if all(g is None or g == "" for g in values):
        return None
    ids: dict[Any, int] = {}
    out = np.empty(n, dtype=np.int64)
    for i, g in enumerate(values):
        key = ("ungrouped", i) if g is None or g == "" else ("group", g)
        out[i] = ids.setdefault(key, len(ids))
    return out


def make_folds(
    labels: np.ndarray,
    groups: Sequence[str | None] | np.ndarray | None = None,
    n_folds: int = 5,
    seed: int = 0,
    *,
    classes: Sequence[str] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified, group-aware k-fold splits.

    Without groups this is scikit-learn's ``StratifiedKFold``; when any sample has a group it is
    ``StratifiedGroupKFold``, so samples of one group are never on both sides of a split, and
    samples whose group is None or ``""`` each form a group of their own. Both shuffle with
    ``random_state=seed``. When a class occurs in fewer groups than folds, some test folds
    cannot contain it; this is logged as a warning.

    Parameters
    ----------
    labels
        ``(N,)`` integer class index of each sample.
    groups
        ``(N,)`` group name of each sample (str or None), or None for no groups.
    n_folds
        Number of folds, ``>= 2``; every class needs at least ``n_folds`` samples.
    seed
        Seed of the shuffling.
    classes
        Class names indexed by ``labels``, only to name classes in messages.

    Returns
    -------
    list of tuple of np.ndarray
        ``n_folds`` pairs ``(train_idx, test_idx)`` of sorted int64 sample indices; the test
        sets partition ``0 .. N-1``.
    """
    y = _labels(labels)
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise EmaeError(f"the number of folds must be an integer >= 2, got {n_folds!r}")
    n_folds = int(n_folds)
    present, counts = np.unique(y, return_counts=True)
    if present.size < 2:
        raise EmaeError(
            f"all {y.size} samples are of class {_class_name(int(present[0]), classes)}; "
            "cross-validation needs at least 2 classes"
        )
    rarest = int(np.argmin(counts))
    if counts[rarest] < n_folds:
        name, count = _class_name(int(present[rarest]), classes), int(counts[rarest])
        fix = f"use at most {count} folds or label more" if count >= 2 else "label at least 2"
        raise EmaeError(
            f"class {name} has {count} sample{'s' * (count != 1)}, fewer than the "
            f"{n_folds} folds; {fix}"
        )
    group_ids = _group_ids(groups, y.size)
    if group_ids is None:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(y.size), y)
    else:
        n_groups = int(np.unique(group_ids).size)
        if n_groups < n_folds:
            raise EmaeError(
                f"the samples form {n_groups} distinct groups, fewer than the {n_folds} folds; "
                f"use at most {n_groups} folds or label samples in more groups"
            )
        for c in present:
            spread = int(np.unique(group_ids[y == c]).size)
            if spread < n_folds:
                logger.warning(
                    "class %s occurs in %d groups only, so %d of the %d test folds lack it",
                    _class_name(int(c), classes),
                    spread,
                    n_folds - spread,
                    n_folds,
                )
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(y.size), y, group_ids)
    folds = [(np.sort(tr).astype(np.int64), np.sort(te).astype(np.int64)) for tr, te in splits]
    for i, (train, test) in enumerate(folds):
        if test.size == 0 or train.size == 0:
            raise EmaeError(
                f"fold {i} of {n_folds} has an empty {'test' if test.size == 0 else 'train'} "
                "set; use fewer folds or label samples in more groups"
            )
    return folds


def budget_subset(
    labels: np.ndarray, train_idx: np.ndarray, per_class: int | None, seed: int
) -> np.ndarray:
    """A seeded subset of ``train_idx`` with at most ``per_class`` samples of each class.

    Each class's training indices are put in one seeded random order and the first
    ``per_class`` are kept, so for the same ``labels``, ``train_idx`` and ``seed`` the subset
    for a smaller budget is contained in the subset for a larger one. A class with fewer
    samples than the budget keeps all of them.

    Parameters
    ----------
    labels
        ``(N,)`` integer class index of every sample.
    train_idx
        ``(M,)`` indices into ``labels`` to draw from (order does not matter).
    per_class
        The budget: at most this many samples per class (``>= 1``), or None for all.
    seed
        Seed of the random order.

    Returns
    -------
    np.ndarray
        ``(<= M,)`` sorted int64 indices, a subset of ``train_idx``.
    """
    y = _labels(labels)
    idx = np.unique(np.asarray(train_idx, dtype=np.int64))
    if idx.size and (idx[0] < 0 or idx[-1] >= y.size):
        raise EmaeError(f"train_idx must index the {y.size} labels, got values up to {idx[-1]}")
    if per_class is not None and (
        isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1
    ):
        raise EmaeError(f"the budget must be an integer >= 1 or None (all), got {per_class!r}")
    if per_class is None:
        return idx
    rng = np.random.default_rng(seed)
    kept = [rng.permutation(idx[y[idx] == c])[:per_class] for c in np.unique(y[idx])]
    return np.sort(np.concatenate(kept)) if kept else idx


def parse_budgets(text: str) -> list[int | None]:
    """Read label budgets such as ``"5,10,25,all"``.

    Parameters
    ----------
    text
        Comma-separated positive integers (labels per class) and optionally ``all``.

    Returns
    -------
    list of int or None
        The budgets in increasing order, with ``all`` as a final None:
        ``parse_budgets("5,10,25,all") == [5, 10, 25, None]``.
    """
    items = [item.strip() for item in str(text).split(",")]
    if not any(items):
        raise EmaeError(f"no label budgets given in {text!r}; expected e.g. '5,10,25,all'")
    budgets: list[int | None] = []
    for item in items:
        if item.lower() == ALL:
            value = None
        elif item.isascii() and item.isdigit() and int(item) >= 1:
            value = int(item)
        else:
            raise EmaeError(
                f"label budget {item!r} in {text!r} is not a positive integer or 'all'; "
                "expected e.g. '5,10,25,all'"
            )
        if value in budgets:
            raise EmaeError(f"label budget {item!r} is repeated in {text!r}")
        budgets.append(value)
    return sorted(b for b in budgets if b is not None) + ([None] if None in budgets else [])


def holdout_groups(
    y: np.ndarray,
    groups: Sequence[str | None],
    test_share: float,
    seed: int,
    classes: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out whole groups as a test set of about ``test_share`` of the samples.

    Of the group-aware folds (:func:`make_folds`, one per ``1 / test_share``), the first whose
    training part holds every class of its test part is used; with rare classes confined to
    one group, the fold that leaves the fewest test samples unseen, and those are dropped from
    the test set (a classifier cannot be scored on classes it never saw), with a warning.

    Parameters
    ----------
    y
        ``(N,)`` int class indices.
    groups
        The group of each sample (None: a group of its own).
    test_share
        The share of samples to hold out, e.g. 0.2.
    seed, classes
        As :func:`make_folds`.

    Returns
    -------
    train, test
        Sorted sample indices.
    """
    n_folds = max(2, round(1 / test_share))
    if len({g for g in groups if g}) < n_folds:
        raise EmaeError(
            f"holding out {test_share:g} of the labels needs at least {n_folds} groups "
            "(a `group` column, e.g. the section)"
        )
    folds = make_folds(y, groups, n_folds, seed, classes=classes)

    def unseen(fold: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        train, test = fold
        return test[~np.isin(y[test], y[train])]

    train, test = min(folds, key=lambda f: len(unseen(f)))
    dropped = unseen((train, test))
    if len(dropped):
        names = sorted({classes[i] if classes is not None else str(i) for i in y[dropped]})
        logger.warning(
            "classes %s occur in too few groups to be both trained on and held out: their %d "
            "held-out samples are left out of the test set",
            names,
            len(dropped),
        )
        test = np.setdiff1d(test, dropped)
    return np.sort(train), np.sort(test)
