"""What a latent map's tables and figures need from every placed row, in bounded memory.

``emae map`` places an embedding part by part; a 2 TB volume embedded at stride 64 has about
244 M rows, whose points table alone would take tens of GB. :class:`MapTally` takes the parts
one at a time and keeps only:

- per cluster: rows, novel rows, the sum and count of the anomaly scores, and the count of each
  label (for ``clusters.csv``);
- per image and section: rows and novel rows (for ``sections.csv``);
- a uniform random sample of at most ``max_points`` rows (for the scatter plots: a figure cannot
  show more points than it has pixels anyway), drawn with a seeded key per row, so it does not
  depend on how the rows are split into parts;
- the rows the map was fitted on, when their positions are given (for the montages).

Its tables equal those computed from the whole points table (``points.parquet``) at once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np

from emae.errors import EmaeError

#: Rows drawn on the scatter plots at most.
MAX_POINTS = 200_000


class MapTally:
    """Tables and a plot sample of placed rows, fed part by part (see the module docstring).

    Parameters
    ----------
    max_points
        Rows kept for the scatter plots at most.
    fit_index
        Sorted positions (in the whole embedding) of the rows the map was fitted on, to keep
        whole (their number is bounded by the map's ``max_fit``); None keeps none.
    seed
        Of the sample's random keys.
    """

    def __init__(
        self, max_points: int = MAX_POINTS, fit_index: np.ndarray | None = None, seed: int = 0
    ) -> None:
        if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1:
            raise EmaeError(f"max_points must be an int >= 1, got {max_points!r}")
        self.max_points = max_points
        self.fit_index = None if fit_index is None else np.asarray(fit_index)
        self.rows = 0
        self.has_labels = False
        self.has_anomaly = False
        self._rng = np.random.default_rng(seed)
        self._clusters: dict[int, np.ndarray] = defaultdict(lambda: np.zeros(4))
        self._labels: dict[int, Counter] = defaultdict(Counter)
        self._sections: dict[tuple[str, int], np.ndarray] = defaultdict(lambda: np.zeros(2))
        self._sample: Any = None
        self._largest_key = np.inf  # of the sample, once it is full
        self._fitted: list[Any] = []

    def add(self, frame: Any) -> None:
        """Count one part: a pandas frame of placed rows with ``source``, ``z``, ``label``,
        ``cluster`` and ``novel`` columns, and ``anomaly`` where the embedding has it."""
        import pandas as pd

        clusters = frame["cluster"].to_numpy()
        novel = frame["novel"].to_numpy(dtype=bool)
        anomaly = frame["anomaly"].to_numpy(dtype=float) if "anomaly" in frame else None
        self.has_anomaly |= anomaly is not None
        self.has_labels |= bool(frame["label"].notna().any())
        labels = frame["label"].to_numpy().astype(str)
        for c in np.unique(clusters):
            sel = clusters == c
            counts = self._clusters[int(c)]
            counts[0] += sel.sum()
            counts[1] += novel[sel].sum()
            if anomaly is not None:
                known = sel & ~np.isnan(anomaly)
                counts[2] += anomaly[known].sum()
                counts[3] += known.sum()
            self._labels[int(c)].update(labels[sel].tolist())
        z = frame["z"].fillna(0).astype(int)
        grouped = frame.assign(z=z).groupby(["source", "z"], sort=False)["novel"]
        for key, n, k in zip(grouped.size().index, grouped.size(), grouped.sum(), strict=True):
            self._sections[(str(key[0]), int(key[1]))] += (n, k)
        keys = self._rng.random(len(frame))
        keep = keys < self._largest_key  # rows that may enter a full sample
        if keep.any():
            keyed = frame[keep].assign(_key=keys[keep])
            keyed.index = self.rows + np.flatnonzero(keep)  # positions in the embedding
            both = keyed if self._sample is None else pd.concat([self._sample, keyed])
            if len(both) >= self.max_points:
                both = both.nsmallest(self.max_points, "_key")
                self._largest_key = float(both["_key"].iloc[-1])
            self._sample = both
        if self.fit_index is not None:
            positions = np.arange(self.rows, self.rows + len(frame))
            self._fitted.append(frame[np.isin(positions, self.fit_index)])
        self.rows += len(frame)

    @property
    def sampled(self) -> bool:
        """Whether the plot sample holds fewer rows than were counted."""
        return self.rows > self.max_points

    def sample(self) -> Any:
        """The plot sample, in the rows' order: a pandas frame of at most ``max_points`` rows."""
        return self._sample.sort_index(kind="stable").drop(columns="_key").reset_index(drop=True)

    def fitted_rows(self) -> Any:
        """The fitted rows in the order of ``fit_index``: a pandas frame."""
        import pandas as pd

        return pd.concat(self._fitted, ignore_index=True)

    def novel_share(self) -> float:
        """The share of all rows flagged novel."""
        return float(sum(c[1] for c in self._clusters.values()) / max(self.rows, 1))

    def unclustered_share(self) -> float:
        """The share of all rows in no cluster (-1)."""
        return float(sum(c[0] for k, c in self._clusters.items() if k < 0) / max(self.rows, 1))

    def cluster_rows(self) -> list[dict[str, Any]]:
        """One row per cluster (-1 = in no cluster), largest first: ``cluster``, ``rows``,
        ``share``, ``novel_share``, ``mean_anomaly`` (``""`` if none), ``labels``
        (``"label: n, label: n"``, most common first, when the embedding has labels)."""
        rows = []
        for c in sorted(self._clusters):
            n, novel, total, known = self._clusters[c]
            labels = ""
            if self.has_labels:
                counts = sorted(self._labels[c].items(), key=lambda kv: (-kv[1], kv[0]))
                labels = ", ".join(f"{label}: {count}" for label, count in counts)
            rows.append(
                {
                    "cluster": int(c),
                    "rows": int(n),
                    "share": round(float(n / self.rows), 6),
                    "novel_share": round(float(novel / n), 6),
                    "mean_anomaly": round(float(total / known), 6) if known else "",
                    "labels": labels,
                }
            )
        rows.sort(key=lambda r: -r["rows"])
        return rows

    def section_rows(self) -> list[dict[str, Any]]:
        """Rows and novel share per image and section, most novel first (ties by image and
        section): ``source``, ``z``, ``rows``, ``novel_share``."""
        rows = [
            {"source": s, "z": z, "rows": int(n), "novel_share": round(float(k / n), 6)}
            for (s, z), (n, k) in sorted(self._sections.items())
        ]
        rows.sort(key=lambda r: -r["novel_share"])
        return rows
