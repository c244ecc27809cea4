"""Which patches to label next: uncertainty, class, anomaly and distance in the features.

A few labels go furthest on the classes labeled least (artifacts are rare: a random patch is
almost always clean tissue), where the classifier is unsure, optionally where the autoencoder
sees something unusual, and where nothing similar is labeled or suggested yet. For ``N``
candidate patches:

``uncertainty``  ``1 - (p_1 - p_2)``, one minus the margin between the two most probable classes
                 (1: a tie, 0: certain);
``anomaly``      the rank of the patch's anomaly score among the candidates, in ``[0, 1]``; it
                 weighs the priority by ``floor + (1 - floor) anomaly``; the default ``floor=0``
                 weighs by the rank itself, so the most typical candidates come last (None: no
                 weight; ``emae suggest --anomaly``);
``balance``      with the labeled set's class counts ``n_k``: ``sum_k p_k (1 + min n) / (1 + n_k)``,
                 the expected rarity of the candidate's class among the labels (1: surely of
                 the least labeled class); random labels follow the classes' shares, so without
                 it rare classes stay rare in the labeled set (None: no weight);
``priority``     ``uncertainty x (floor + (1 - floor) anomaly) [x balance]``;
``distance``     Euclidean distance of the candidate's vector to the nearest labeled or already
                 chosen vector, divided by the largest such distance in the pool.

:func:`select_batch` chooses greedily: each pick is the candidate with the highest
``priority x distance`` (the weighted k-centre rule of batch-mode active learning), then the
distances are updated with the pick, so a batch does not spend its labels on near-duplicates.
Given the class probabilities, it chooses **by class**: each pick is for the class with the
fewest labels so far (the labels, plus the probabilities of the picks already made) and
weighs the candidates by their probability of that class as well. Random labels follow the
classes' shares, and a weight alone (``balance``) seldom finds a rare class; picking for one
class at a time gives the rare classes their turn. Ties between classes go to the first;
a class that no candidate is likely of keeps its turn until the picks' probabilities add up
to it, so it draws the candidates most like it. ``emae suggest`` chooses by class with the
uncertainty as the priority and no anomaly weight (docs/benchmarks.md, "Active learning").
The selection is deterministic (ties go to the lower index).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata

from emae.errors import EmaeError


def uncertainty(proba: Any) -> np.ndarray:
    """``1 - (p_1 - p_2)`` of class probabilities ``(N, K)``: ``(N,)`` float64 in ``[0, 1]``."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2 or not np.isfinite(p).all():
        raise EmaeError(f"proba must be finite (N, K) probabilities with K >= 2, got {p.shape}")
    top = np.sort(p, axis=1)[:, -2:]
    return np.clip(1.0 - (top[:, 1] - top[:, 0]), 0.0, 1.0)


def anomaly_rank(scores: Any) -> np.ndarray:
    """Rank of each anomaly score among all, scaled to ``[0, 1]`` (ties share their mean rank)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or not np.isfinite(s).all():
        raise EmaeError(f"anomaly scores must be finite, shape (N,), got {s.shape}")
    if len(s) < 2:
        return np.ones(len(s))
    return (rankdata(s) - 1) / (len(s) - 1)


def class_balance(proba: Any, counts: Any) -> np.ndarray:
    """Expected rarity of each candidate's class among the labels: ``(N,)`` float64 in (0, 1].

    ``proba`` ``(N, K)`` class probabilities, ``counts`` ``(K,)`` labels per class so far;
    ``sum_k p_k (1 + min(counts)) / (1 + counts_k)``.
    """
    p = np.asarray(proba, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    if p.ndim != 2 or n.shape != (p.shape[1],) or not np.isfinite(n).all() or (n < 0).any():
        raise EmaeError(
            f"counts must be {p.shape[-1]} finite numbers >= 0, one per class, got "
            f"{np.asarray(counts).tolist()}"
        )
    return p @ ((1.0 + n.min()) / (1.0 + n))


def priority(
    proba: Any, anomaly: Any = None, counts: Any = None, *, floor: float = 0.0
) -> np.ndarray:
    """``uncertainty x (floor + (1 - floor) anomaly rank) x balance``; a factor whose input is
    None (``anomaly`` scores ``(N,)``, labeled ``counts`` per class ``(K,)``) is left out.
    ``floor`` in ``[0, 1]``: the weight of the most typical candidate relative to the most
    unusual one."""
    if not 0.0 <= floor <= 1.0:
        raise EmaeError(f"floor must be in [0, 1], got {floor}")
    u = uncertainty(proba)
    if counts is not None:
        u = u * class_balance(proba, counts)
    if anomaly is None:
        return u
    rank = anomaly_rank(anomaly)
    if len(rank) != len(u):
        raise EmaeError(f"{len(rank)} anomaly scores for {len(u)} candidates")
    return u * (floor + (1.0 - floor) * rank)


def _nearest(vectors: np.ndarray, to: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Distance of each row of ``vectors`` to its nearest row of ``to``: ``(N,)`` float64."""
    out = np.empty(len(vectors))
    t2 = (to * to).sum(axis=1)
    for start in range(0, len(vectors), chunk):
        v = vectors[start : start + chunk]
        d2 = (v * v).sum(axis=1)[:, None] + t2[None] - 2.0 * v @ to.T
        out[start : start + chunk] = np.sqrt(np.clip(d2.min(axis=1), 0.0, None))
    return out


def _by_class(proba: Any, counts: Any, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Checked ``(N, K)`` probabilities and ``(K,)`` float counts for :func:`select_batch`."""
    if proba is None:
        if counts is not None:
            raise EmaeError("counts are for the selection by class; give proba too")
        return None, None
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or len(p) != n or not np.isfinite(p).all() or (p < 0).any():
        raise EmaeError(f"proba must be {n} rows of finite probabilities, got shape {p.shape}")
    if counts is None:
        return p, np.zeros(p.shape[1])
    c = np.asarray(counts, dtype=np.float64)
    if c.shape != (p.shape[1],) or not np.isfinite(c).all() or (c < 0).any():
        raise EmaeError(
            f"counts must be {p.shape[1]} finite numbers >= 0, one per class, got "
            f"{np.asarray(counts).tolist()}"
        )
    return p, c


def select_batch(
    vectors: Any,
    weights: Any,
    n: int,
    labeled: Any = None,
    *,
    proba: Any = None,
    counts: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy weighted k-centre: ``n`` candidates of high weight, far from each other and from
    the labeled ones; with ``proba``, each pick for the class labeled least so far.

    Parameters
    ----------
    vectors
        ``(N, D)`` float candidate vectors (e.g. the classifier's pooled features).
    weights
        ``(N,)`` non-negative priorities (:func:`priority`).
    n
        How many to choose, ``1 <= n <= N``.
    labeled
        ``(M, D)`` vectors of the patches already labeled, or None.
    proba
        ``(N, K)`` class probabilities of the candidates, or None. Given, the selection is by
        class: each pick goes to the class with the fewest labels so far (``counts`` plus the
        probabilities of the picks already made, so a pick counts as the class it likely is),
        and is the candidate with the highest ``p_class x weight x distance``.
    counts
        ``(K,)`` labels per class so far (with ``proba``; None: none yet).

    Returns
    -------
    (indices, distances)
        ``(n,)`` int64 candidate indices in the order chosen, and ``(n,)`` float64 the distance
        of each pick (relative to the pool's largest) when it was chosen.
    """
    v = np.asarray(vectors, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if v.ndim != 2 or len(v) == 0 or not np.isfinite(v).all():
        raise EmaeError(f"vectors must be a finite, non-empty (N, D) array, got {v.shape}")
    if w.shape != (len(v),) or not np.isfinite(w).all() or (w < 0).any():
        raise EmaeError(f"weights must be {len(v)} finite values >= 0, got shape {w.shape}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= len(v):
        raise EmaeError(f"cannot choose {n} of {len(v)} candidates: the pool is too small")
    if labeled is not None and len(labeled):
        lab = np.asarray(labeled, dtype=np.float64)
        if lab.ndim != 2 or lab.shape[1] != v.shape[1]:
            raise EmaeError(f"labeled vectors must be (M, {v.shape[1]}), got {lab.shape}")
        distance = _nearest(v, lab)
    else:
        distance = np.full(len(v), np.inf)
    p, expected = _by_class(proba, counts, len(v))
    chosen, at = [], []
    for _ in range(int(n)):
        finite = distance[np.isfinite(distance)]
        scale = finite.max() if finite.size and finite.max() > 0 else 1.0
        relative = np.minimum(distance / scale, 1.0)
        gain = w * relative
        if p is not None:  # for the class labeled least so far, counting the picks made
            targeted = gain * p[:, int(np.argmin(expected))]
            targeted[chosen] = -1.0
            if targeted.max() > 0:  # else no candidate can be of that class: by weight alone
                gain = targeted
        gain[chosen] = -1.0
        pick = int(np.argmax(gain))
        chosen.append(pick)
        at.append(float(relative[pick]))
        if p is not None:
            expected = expected + p[pick]
        distance = np.minimum(distance, np.sqrt(((v - v[pick]) ** 2).sum(axis=1)))
    return np.array(chosen, dtype=np.int64), np.array(at)
