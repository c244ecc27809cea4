"""Decision thresholds on anomaly scores, and the record of how each was chosen.

A threshold turns raw anomaly scores (larger = more anomalous) into decisions with one rule,
used everywhere: a score is anomalous when it is strictly greater than the threshold,
``score > value`` (:meth:`Threshold.is_anomalous`). Two ways to choose the value:

- :func:`threshold_at_fpr`: from scores of normal validation data only, the lowest threshold
  that flags at most a fraction ``target_fpr`` of them (an upper empirical quantile);
- :func:`threshold_f1`: from labeled scores, the threshold that maximizes F1 on them.

Both consider only the observed scores as candidates (plus, for F1, one just below the smallest
score, which flags everything), so the value is reproducible and the empirical rates quoted for
it are exact. :class:`Threshold` keeps the value with its method, parameters and the number of
scores used, and round-trips through a plain JSON dict.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from emae.errors import EmaeError

Method = Literal["fpr", "f1", "fixed"]
METHODS: tuple[str, ...] = ("fpr", "f1", "fixed")


def _scores(values: Any, what: str) -> np.ndarray:
    """``values`` as a finite, non-empty 1D float64 array, or an :class:`EmaeError`."""
    a = np.asarray(values)
    if a.dtype.kind not in "uif" or a.ndim != 1:
        raise EmaeError(
            f"{what} must be a 1D array of numbers, got shape {a.shape} dtype {a.dtype}"
        )
    if a.size == 0:
        raise EmaeError(f"{what} is empty; a threshold needs at least one score")
    a = a.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise EmaeError(
            f"{what} holds {bad.size} NaN or infinite value(s) (first at index {bad[0]}: "
            f"{a[bad[0]]}); remove them before choosing a threshold"
        )
    return a


def _labels(labels: Any, n: int) -> np.ndarray:
    """``labels`` as a bool array of length ``n`` (1/True = anomalous) holding both classes."""
    a = np.asarray(labels)
    if a.ndim != 1 or a.shape[0] != n:
        raise EmaeError(f"labels must be a 1D array of {n} values like the scores, got {a.shape}")
    if a.dtype != bool:
        if a.dtype.kind not in "uif" or not np.isin(a, (0, 1)).all():
            values = np.unique(a)[:5].tolist() if a.dtype.kind in "uifb" else a.dtype
            raise EmaeError(f"labels must be 0/1 or bool (1 = anomalous), got values {values}")
        a = a.astype(bool)
    n_pos = int(a.sum())
    if n_pos in (0, n):
        kind = "anomalous" if n_pos else "normal"
        raise EmaeError(f"labels are all {kind} ({n} of {n}); F1 needs both normal and anomalous")
    return a


def _real(value: Any, what: str) -> float:
    """``value`` as a finite Python float, or an :class:`EmaeError` naming ``what``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise EmaeError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise EmaeError(f"{what} must be finite, got {value}")
    return float(value)


def _exceedances_allowed(n: int, target_fpr: float) -> int:
    """The largest ``k`` with ``k / n <= target_fpr``, exactly as :func:`threshold_at_fpr`
    states it (no floating-point off-by-one for e.g. ``0.29 * 100``)."""
    k = math.floor(target_fpr * n)
    while (k + 1) / n <= target_fpr:
        k += 1
    while k > 0 and k / n > target_fpr:
        k -= 1
    return k


def threshold_at_fpr(normal_scores: Any, target_fpr: float) -> float:
    """The lowest threshold that flags at most ``target_fpr`` of the normal scores.

    Parameters
    ----------
    normal_scores
        ``(n,)`` anomaly scores of normal (artifact-free) validation samples, larger = more
        anomalous, any real dtype.
    target_fpr
        Largest acceptable false-positive rate on these samples, in ``[0, 1)``.

    Returns
    -------
    float
        ``t``, one of ``normal_scores``, such that ``mean(normal_scores > t) <= target_fpr``;
        no smaller observed score satisfies that. With ``k = floor(target_fpr * n)`` it is the
        ``(n - k)``-th smallest score (``target_fpr = 0`` gives the maximum).

    Raises
    ------
    EmaeError
        For empty input, NaN or infinite scores, or ``target_fpr`` outside ``[0, 1)``.
    """
    scores = _scores(normal_scores, "normal_scores")
    is_number = isinstance(target_fpr, (int, float, np.number)) and not isinstance(
        target_fpr, (bool, np.bool_)
    )
    if not (is_number and 0.0 <= target_fpr < 1.0):
        raise EmaeError(f"target_fpr must be a rate in [0, 1), got target_fpr={target_fpr!r}")
    n = scores.size
    k = _exceedances_allowed(n, float(target_fpr))
    return float(np.partition(scores, n - k - 1)[n - k - 1])


def f1_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """F1 and false positives of every candidate threshold.

    Parameters
    ----------
    scores
        ``(n,)`` anomaly scores, larger = more anomalous.
    labels
        ``(n,)`` bool or 0/1, 1 = anomalous; both classes must occur.

    Returns
    -------
    thresholds : numpy.ndarray
        ``(m,)`` float64, ascending: just below the smallest score, then each distinct score.
    f1 : numpy.ndarray
        ``(m,)`` float64, F1 of the decision ``scores > threshold``.
    false_positives : numpy.ndarray
        ``(m,)`` int64, normal samples flagged at each threshold.
    """
    s = _scores(scores, "scores")
    y = _labels(labels, s.size)
    distinct = np.unique(s)
    thresholds = np.concatenate([[np.nextafter(distinct[0], -np.inf)], distinct])
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    tp = pos.size - np.searchsorted(pos, thresholds, side="right")
    fp = neg.size - np.searchsorted(neg, thresholds, side="right")
    fn = pos.size - tp
    f1 = 2.0 * tp / (2.0 * tp + fp + fn)
    return thresholds, f1, fp.astype(np.int64)


def threshold_f1(scores: Any, labels: Any) -> float:
    """The threshold with the highest F1 on labeled scores; ties go to the fewest false positives.

    Parameters
    ----------
    scores
        ``(n,)`` anomaly scores, larger = more anomalous.
    labels
        ``(n,)`` bool or 0/1, 1 = anomalous; both classes must occur.

    Returns
    -------
    float
        A candidate of :func:`f1_curve` (an observed score, or just below the smallest one when
        flagging everything is best), for the decision ``scores > threshold``.

    Raises
    ------
    EmaeError
        For empty input, NaN or infinite scores, labels of another length, labels other than
        0/1, or labels of one class only.
    """
    thresholds, f1, fp = f1_curve(scores, labels)
    best = np.flatnonzero(f1 == f1.max())
    return float(thresholds[best[np.argmin(fp[best])]])


@dataclass(frozen=True)
class Threshold:
    """A decision threshold and how it was chosen; JSON through :meth:`to_dict`.

    Parameters
    ----------
    value
        Scores strictly greater than this are anomalous.
    method
        ``"fpr"`` (:func:`threshold_at_fpr`), ``"f1"`` (:func:`threshold_f1`) or ``"fixed"``
        (given by the user).
    score
        Name of the anomaly score it applies to (e.g. ``"feature"`` or ``"feature/p99"``);
        ``None`` when unrecorded.
    target_fpr
        The false-positive rate asked for; set exactly when ``method="fpr"``.
    n_normal, n_anomalous
        How many normal and anomalous scores the value was chosen from (0 for ``"fixed"``).
    """

    value: float
    method: Method
    score: str | None = None
    target_fpr: float | None = None
    n_normal: int = 0
    n_anomalous: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise EmaeError(
                f"threshold method must be one of {', '.join(METHODS)}, got {self.method!r}"
            )
        object.__setattr__(self, "value", _real(self.value, "threshold value"))
        if (self.method == "fpr") != (self.target_fpr is not None):
            raise EmaeError(
                f"target_fpr is required with method 'fpr' and only then, got method "
                f"{self.method!r} and target_fpr={self.target_fpr!r}"
            )
        if self.target_fpr is not None:
            object.__setattr__(self, "target_fpr", _real(self.target_fpr, "target_fpr"))
            if not 0.0 <= self.target_fpr < 1.0:
                raise EmaeError(f"target_fpr must be a rate in [0, 1), got {self.target_fpr}")
        if self.score is not None and not isinstance(self.score, str):
            raise EmaeError(f"threshold score must be a name (str), got {self.score!r}")
        for name in ("n_normal", "n_anomalous"):
            n = getattr(self, name)
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise EmaeError(f"{name} must be a non-negative int, got {n!r}")

    @classmethod
    def at_fpr(
        cls, normal_scores: Any, target_fpr: float, *, score: str | None = None
    ) -> Threshold:
        """:func:`threshold_at_fpr` with its record."""
        value = threshold_at_fpr(normal_scores, target_fpr)
        n = int(np.asarray(normal_scores).size)
        return cls(value, "fpr", score, float(target_fpr), n_normal=n)

    @classmethod
    def best_f1(cls, scores: Any, labels: Any, *, score: str | None = None) -> Threshold:
        """:func:`threshold_f1` with its record."""
        value = threshold_f1(scores, labels)
        n_anomalous = int(np.asarray(labels).astype(bool).sum())
        n_normal = int(np.asarray(labels).size) - n_anomalous
        return cls(value, "f1", score, n_normal=n_normal, n_anomalous=n_anomalous)

    @classmethod
    def fixed(cls, value: float, *, score: str | None = None) -> Threshold:
        """A threshold set by hand."""
        return cls(float(value), "fixed", score)

    def is_anomalous(self, scores: Any) -> np.ndarray:
        """The decision ``scores > value``: bool array of the shape of ``scores``."""
        return np.asarray(scores) > self.value

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON fields; ``None`` fields are left out."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Threshold:
        """Rebuild a threshold from :meth:`to_dict` output, validating every field."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = set(data) - fields, {"value", "method"} - set(data)
        if unknown or missing:
            raise EmaeError(
                f"threshold fields: unknown {sorted(unknown)}, missing {sorted(missing)}; "
                f"expected {sorted(fields)}"
            )
        return cls(**data)
