"""A map of an embedding: UMAP coordinates, clusters, and novelty of new data (:class:`LatentMap`).

Fitting, on vectors ``(N, D)`` (one per patch, :mod:`emae.latent.vectors`)::

    centre, scale (each column, or all by one number) -> PCA to ``pca_components`` -> Z (N, k)
    Z -> UMAP (umap-learn) -> embedding_ (N, 2)        the map a microscopist looks at
    embedding_ -> HDBSCAN (or k-means) -> labels_ (N,)  clusters; -1 = in no cluster
    Z -> mean distance to the ``novelty_neighbors`` nearest other rows -> novelty_threshold_
         (the ``1 - novelty_fpr`` quantile over the fitted rows)

New data (``transform``, ``predict``, ``novelty_score``) goes through the same standardization
and PCA and is then compared with the fitted rows in Z by nearest neighbours (scikit-learn):

- ``transform`` places a row at the distance-weighted mean of the map coordinates of its
  ``n_neighbors`` nearest fitted rows (the initial placement of UMAP's own ``transform``,
  without its optimisation: a fitted UMAP holds a search index and a graph that cannot be saved
  without pickle, while this needs only Z and the coordinates, saved as arrays);
- ``predict`` gives the cluster most of those neighbours belong to, or -1 when the row is novel;
- ``novelty_score`` is the mean distance to the ``novelty_neighbors`` nearest fitted rows
  (higher is more novel), and rows above ``novelty_threshold_`` are novel: by construction
  about ``novelty_fpr`` of data like the fitted data is flagged.

``scaling="column"`` divides each column by its standard deviation, so that columns of very
different sizes (the levels of ``vector="levels"``) count alike; ``scaling="global"`` divides
all by one number, the root mean square of the centred columns, so that a column that hardly
varies (a latent unit that is almost constant) is not blown up to the size of the others.
``"column"`` is the default. ``"global"`` suits the code of a vector latent, whose columns share
one unit: on MNIST digits it keeps HDBSCAN's clusters the same over map seeds where
``"column"`` sometimes merges two digits; on the EM datasets it is worse (docs/benchmarks.md,
"Latent space", measures both).

Clusters are found on the 2-D map, as in umap-learn's documentation on clustering (UMAP with
``min_dist=0`` then a density clustering): what is clustered is what the map shows.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.neighbors import NearestNeighbors

from emae.errors import EmaeError, NotFittedError

#: Rows queried at once by the nearest-neighbour searches of new data (bounded memory).
QUERY_ROWS = 8192


def check_vectors(x: Any, *, dims: int | None = None, name: str = "vectors") -> np.ndarray:
    """``(N, D)`` finite float32 rows, or a one-line error naming the problem."""
    a = np.asarray(x)
    if a.ndim != 2 or a.dtype.kind not in "biuf":
        raise EmaeError(f"{name} must be an (N, D) array of numbers, got shape {a.shape}")
    if dims is not None and a.shape[1] != dims:
        raise EmaeError(f"{name} have {a.shape[1]} values per row; this map was fitted on {dims}")
    a = a.astype(np.float32, copy=False)
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise EmaeError(f"{name}: {int(bad.sum())} rows hold NaN or infinite values (rows {rows})")
    return a


class LatentMap(BaseEstimator):
    """UMAP map, clusters and novelty of an embedding; the scikit-learn estimator contract.

    Parameters
    ----------
    n_neighbors
        UMAP's neighbourhood size, also the neighbours that place and assign new rows.
    scaling
        ``"column"`` or ``"global"`` (module doc).
    min_dist
        UMAP's ``min_dist``: 0 packs clusters tightly (best for clustering).
    clusterer
        ``"hdbscan"`` (scikit-learn's; finds the number of clusters, leaves outliers out) or
        ``"kmeans"`` (``n_clusters`` clusters, every row in one).
    n_clusters
        Clusters of ``"kmeans"``.
    min_cluster_size
        HDBSCAN's smallest cluster; ``None`` = 1% of the fitted rows, at least 5.
    min_samples
        HDBSCAN's ``min_samples`` (how conservative: larger leaves more rows out); 10 as in
        umap-learn's clustering recipe; ``None``: ``min_cluster_size``.
    pca_components
        Columns kept by the PCA before UMAP and the neighbour searches (at most ``D`` and
        ``N - 1``).
    novelty_neighbors
        Neighbours averaged by :meth:`novelty_score`.
    novelty_fpr
        Share of the fitted rows above :attr:`novelty_threshold_`: the false-positive rate of
        the novelty flag on data like the fitted data.
    seed
        Seed of UMAP, k-means and the PCA.

    Attributes
    ----------
    mean_, scale_ : numpy.ndarray
        ``(D,)`` centring and scaling of the columns.
    components_ : numpy.ndarray
        ``(k, D)`` PCA axes (of the standardized columns, which have mean 0).
    vectors_ : numpy.ndarray
        ``(N, k)`` float32: the fitted rows in PCA space (Z).
    embedding_ : numpy.ndarray
        ``(N, 2)`` float32 map coordinates of the fitted rows.
    labels_ : numpy.ndarray
        ``(N,)`` int64 cluster of each fitted row, -1 for none.
    novelty_threshold_ : float
        Novelty scores strictly above it are novel.
    n_features_in_ : int
        ``D``.
    """

    def __init__(
        self,
        *,
        n_neighbors: int = 15,
        scaling: Literal["column", "global"] = "column",
        min_dist: float = 0.0,
        clusterer: Literal["hdbscan", "kmeans"] = "hdbscan",
        n_clusters: int = 8,
        min_cluster_size: int | None = None,
        min_samples: int | None = 10,
        pca_components: int = 50,
        novelty_neighbors: int = 10,
        novelty_fpr: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.scaling = scaling
        self.min_dist = min_dist
        self.clusterer = clusterer
        self.n_clusters = n_clusters
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.pca_components = pca_components
        self.novelty_neighbors = novelty_neighbors
        self.novelty_fpr = novelty_fpr
        self.seed = seed

    def _check_params(self, n_rows: int) -> None:
        if self.scaling not in ("column", "global"):
            raise EmaeError(f"scaling must be column or global, got {self.scaling!r}")
        if self.clusterer not in ("hdbscan", "kmeans"):
            raise EmaeError(f"clusterer must be 'hdbscan' or 'kmeans', got {self.clusterer!r}")
        for name in ("n_neighbors", "n_clusters", "pca_components", "novelty_neighbors"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
                raise EmaeError(f"{name} must be an integer >= 2, got {value!r}")
        if not 0.0 < self.novelty_fpr < 1.0:
            raise EmaeError(f"novelty_fpr must be in (0, 1), got {self.novelty_fpr!r}")
        if not 0.0 <= self.min_dist <= 1.0:
            raise EmaeError(f"min_dist must be in [0, 1], got {self.min_dist!r}")
        need = max(self.n_neighbors, self.novelty_neighbors, self.n_clusters) + 1
        if n_rows < need:
            raise EmaeError(
                f"the embedding has {n_rows} rows; a map with n_neighbors={self.n_neighbors} "
                f"(novelty_neighbors={self.novelty_neighbors}) needs at least {need}"
            )

    def _check_fitted(self) -> None:
        if not hasattr(self, "embedding_"):
            raise NotFittedError("this LatentMap is not fitted yet; call fit first")

    def reduce(self, x: Any) -> np.ndarray:
        """Rows ``(M, D)`` in the PCA space of the fitted rows: ``(M, k)`` float32."""
        self._check_fitted()
        x = check_vectors(x, dims=self.n_features_in_)
        return ((x - self.mean_) / self.scale_) @ self.components_.T

    def fit(self, x: Any, y: Any = None) -> LatentMap:
        """Fit the map on vectors ``(N, D)``; ``y`` is ignored. Returns ``self``."""
        import umap
        from sklearn.decomposition import PCA

        x = check_vectors(x)
        self._check_params(len(x))
        self.n_features_in_ = x.shape[1]
        self.mean_ = x.mean(axis=0)
        std = x.std(axis=0)
        if self.scaling == "global":
            std = np.full_like(std, np.sqrt(np.mean(std**2)))
        self.scale_ = np.where(std > 0, std, 1.0).astype(np.float32)
        standard = (x - self.mean_) / self.scale_
        k = min(self.pca_components, x.shape[1], len(x) - 1)
        pca = PCA(n_components=k, random_state=self.seed).fit(standard)
        self.components_ = np.ascontiguousarray(pca.components_, dtype=np.float32)
        self.vectors_ = (standard @ self.components_.T).astype(np.float32)
        fitted = umap.UMAP(
            n_neighbors=self.n_neighbors,
            min_dist=self.min_dist,
            n_components=2,
            random_state=self.seed,
            n_jobs=1,
        )
        with warnings.catch_warnings():  # "n_jobs overridden by random_state": seeded on purpose
            warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
            self.embedding_ = fitted.fit_transform(self.vectors_).astype(np.float32)
        self.labels_ = self._cluster(self.embedding_)
        self.index_ = NearestNeighbors().fit(self.vectors_)
        distances, _ = self.index_.kneighbors(None, n_neighbors=self.novelty_neighbors)
        self.train_novelty_ = distances.mean(axis=1).astype(np.float32)
        self.novelty_threshold_ = float(np.quantile(self.train_novelty_, 1 - self.novelty_fpr))
        return self

    def _cluster(self, coords: np.ndarray) -> np.ndarray:
        if self.clusterer == "kmeans":
            from sklearn.cluster import KMeans

            km = KMeans(self.n_clusters, n_init=10, random_state=self.seed)
            return km.fit_predict(coords).astype(np.int64)
        from sklearn.cluster import HDBSCAN

        size = int(self.min_cluster_size or max(5, round(0.01 * len(coords))))
        samples = None if self.min_samples is None else min(int(self.min_samples), size)
        hdbscan = HDBSCAN(min_cluster_size=size, min_samples=samples, copy=True)
        return hdbscan.fit_predict(coords).astype(np.int64)

    def _neighbours(self, z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not hasattr(self, "index_"):
            self.index_ = NearestNeighbors().fit(self.vectors_)
        k = min(k, len(self.vectors_))
        parts = [
            self.index_.kneighbors(z[s : s + QUERY_ROWS], n_neighbors=k)
            for s in range(0, len(z), QUERY_ROWS)
        ]
        if not parts:
            return np.empty((0, k)), np.empty((0, k), dtype=np.int64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def place(self, x: Any) -> dict[str, np.ndarray]:
        """Everything about new rows ``(M, D)`` from one neighbour search, in bounded memory.

        Returns
        -------
        dict
            ``"coords"`` ``(M, 2)`` float32 (:meth:`transform`), ``"cluster"`` ``(M,)`` int64
            (:meth:`predict`), ``"novelty"`` ``(M,)`` float32 (:meth:`novelty_score`) and
            ``"novel"`` ``(M,)`` bool (``novelty > novelty_threshold_``).
        """
        z = self.reduce(x)
        k = max(self.n_neighbors, self.novelty_neighbors)
        distances, index = self._neighbours(z, k)
        d, i = distances[:, : self.n_neighbors], index[:, : self.n_neighbors]
        weights = 1.0 / np.maximum(d, 1e-6) ** 2
        weights /= weights.sum(axis=1, keepdims=True)
        coords = np.einsum("mk,mkc->mc", weights, self.embedding_[i]).astype(np.float32)
        votes = self.labels_[i] + 1  # (M, k), 0 = in no cluster
        counts = np.zeros((len(z), int(self.labels_.max()) + 2), dtype=np.int64)
        np.add.at(counts, (np.arange(len(z))[:, None], votes), 1)
        novelty = distances[:, : self.novelty_neighbors].mean(axis=1).astype(np.float32)
        novel = novelty > self.novelty_threshold_
        cluster = np.where(novel, -1, counts.argmax(axis=1) - 1).astype(np.int64)
        return {"coords": coords, "cluster": cluster, "novelty": novelty, "novel": novel}

    def transform(self, x: Any) -> np.ndarray:
        """Map coordinates of new rows ``(M, D)``: ``(M, 2)`` float32 (module doc)."""
        return self.place(x)["coords"]

    def novelty_score(self, x: Any) -> np.ndarray:
        """Mean distance of each row ``(M, D)`` to its nearest fitted rows: ``(M,)`` float32,
        higher is more novel."""
        return self.place(x)["novelty"]

    def predict(self, x: Any) -> np.ndarray:
        """Cluster of each row ``(M, D)``: ``(M,)`` int64, -1 for novel rows and rows whose
        neighbours are mostly in no cluster."""
        return self.place(x)["cluster"]

    def typicality_rank(self) -> np.ndarray:
        """Rank of each fitted row in its cluster, 0 = closest to the cluster's mean in the PCA
        space (the most typical): ``(N,)`` int64, -1 for rows in no cluster."""
        self._check_fitted()
        rank = np.full(len(self.labels_), -1, dtype=np.int64)
        for c in np.unique(self.labels_[self.labels_ >= 0]):
            rows = np.flatnonzero(self.labels_ == c)
            d = np.linalg.norm(self.vectors_[rows] - self.vectors_[rows].mean(axis=0), axis=1)
            rank[rows[np.argsort(d, kind="stable")]] = np.arange(len(rows))
        return rank

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The learned state as named arrays (for safetensors)."""
        self._check_fitted()
        arrays = {
            "mean": self.mean_,
            "scale": self.scale_,
            "components": self.components_,
            "vectors": self.vectors_,
            "embedding": self.embedding_,
            "labels": self.labels_,
            "train_novelty": self.train_novelty_,
            "novelty_threshold": np.asarray([self.novelty_threshold_], dtype=np.float64),
        }
        # safetensors writes the raw buffer: Fortran-ordered arrays (PCA's axes) must be copied
        return {name: np.ascontiguousarray(a) for name, a in arrays.items()}

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> LatentMap:
        """A fitted map from :meth:`get_params` and :meth:`to_arrays`; checks their shapes."""
        fitted = cls(**params)
        try:
            k, d = arrays["components"].shape
            n = len(arrays["vectors"])
            shapes = {
                "mean": (d,),
                "scale": (d,),
                "vectors": (n, k),
                "embedding": (n, 2),
                "labels": (n,),
                "train_novelty": (n,),
                "novelty_threshold": (1,),
            }
            wrong = [name for name, shape in shapes.items() if arrays[name].shape != shape]
        except (KeyError, ValueError, AttributeError) as exc:
            raise EmaeError(f"the map's arrays are incomplete or malformed ({exc})") from None
        if wrong:
            raise EmaeError(f"the map's arrays have unexpected shapes: {', '.join(wrong)}")
        fitted.mean_ = arrays["mean"].astype(np.float32)
        fitted.scale_ = arrays["scale"].astype(np.float32)
        fitted.components_ = arrays["components"].astype(np.float32)
        fitted.vectors_ = arrays["vectors"].astype(np.float32)
        fitted.embedding_ = arrays["embedding"].astype(np.float32)
        fitted.labels_ = arrays["labels"].astype(np.int64)
        fitted.train_novelty_ = arrays["train_novelty"].astype(np.float32)
        fitted.novelty_threshold_ = float(arrays["novelty_threshold"][0])
        fitted.n_features_in_ = int(d)
        return fitted
