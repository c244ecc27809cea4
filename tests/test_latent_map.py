"""The LatentMap estimator and its folder: contract, clustering, novelty, placement, no pickle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score, roc_auc_score

from emae.errors import EmaeError, NotFittedError
from emae.folders.latent_map import load_latent_map, save_latent_map
from emae.latent import map as latent_map
from emae.latent.map import LatentMap

pytest.importorskip("umap")


def blobs(seed: int, n: int = 120, centres: int = 4, dims: int = 24) -> tuple[np.ndarray, ...]:
    """Gaussian blobs ``(centres * n, dims)`` around well separated centres, with their blob."""
    rng = np.random.default_rng(seed)
    where = np.random.default_rng(99).normal(size=(centres, dims)) * 6
    y = np.repeat(np.arange(centres), n)
    return (where[y] + rng.normal(size=(len(y), dims))).astype(np.float32), y


@pytest.fixture(scope="module")
def fitted() -> tuple[LatentMap, np.ndarray, np.ndarray]:
    """A map fitted on blobs 0-2; blob 3 is kept apart as novel data."""
    x, y = blobs(0)
    known = y < 3
    return LatentMap(n_neighbors=10).fit(x[known]), x, y


def test_estimator_contract(fitted):
    fitted_map, x, _ = fitted
    fresh = clone(fitted_map)
    assert fresh.get_params() == fitted_map.get_params()
    assert not hasattr(fresh, "embedding_")
    with pytest.raises(NotFittedError, match="not fitted"):
        fresh.transform(x)
    assert fitted_map.embedding_.shape == (360, 2)
    assert fitted_map.labels_.shape == (360,)
    assert fitted_map.n_features_in_ == 24


def test_clusters_recover_the_blobs(fitted):
    fitted_map, _, y = fitted
    assert adjusted_rand_score(y[y < 3], fitted_map.labels_) > 0.95


def test_new_rows_of_known_blobs_land_in_their_cluster_and_near_their_points(fitted):
    fitted_map, _, _ = fitted
    x, y = blobs(1)
    known = y < 3
    placed = fitted_map.place(x[known])
    # the cluster of most of each blob's fitted rows
    expected = {
        k: np.bincount(fitted_map.labels_[y[y < 3] == k] + 1).argmax() - 1 for k in range(3)
    }
    hits = placed["cluster"] == np.array([expected[k] for k in y[known]])
    assert hits.mean() > 0.9
    for k in range(3):  # placed inside the blob's region of the map
        centre = fitted_map.embedding_[fitted_map.labels_ == expected[k]].mean(axis=0)
        spread = np.ptp(fitted_map.embedding_, axis=0).max()
        far = np.linalg.norm(placed["coords"][y[known] == k] - centre, axis=1)
        assert np.median(far) < 0.15 * spread
    assert placed["novel"].mean() < 0.15


def test_novelty_finds_the_held_out_blob(fitted):
    fitted_map, _, _ = fitted
    x, y = blobs(2)
    score = fitted_map.novelty_score(x)
    assert roc_auc_score(y == 3, score) > 0.99
    assert (fitted_map.predict(x[y == 3]) == -1).mean() > 0.95
    # the threshold flags about novelty_fpr of the fitted rows
    share = (fitted_map.train_novelty_ > fitted_map.novelty_threshold_).mean()
    assert share == pytest.approx(fitted_map.novelty_fpr, abs=0.01)


def test_placing_in_small_queries_gives_the_same_result(fitted, monkeypatch):
    fitted_map, x, _ = fitted
    whole = fitted_map.place(x)
    monkeypatch.setattr(latent_map, "QUERY_ROWS", 7)
    parts = fitted_map.place(x)
    for key in whole:
        np.testing.assert_array_equal(whole[key], parts[key])


def test_kmeans_puts_every_row_in_one_of_k_clusters():
    x, y = blobs(3, n=40)
    km = LatentMap(clusterer="kmeans", n_clusters=4, n_neighbors=8).fit(x)
    assert set(km.labels_) == {0, 1, 2, 3}
    assert adjusted_rand_score(y, km.labels_) > 0.95


def test_typicality_rank_orders_each_cluster_from_its_centre(fitted):
    fitted_map, _, _ = fitted
    rank = fitted_map.typicality_rank()
    c = fitted_map.labels_[0]
    rows = np.flatnonzero(fitted_map.labels_ == c)
    d = np.linalg.norm(fitted_map.vectors_[rows] - fitted_map.vectors_[rows].mean(0), axis=1)
    assert rank[rows[d.argmin()]] == 0 and rank[rows[d.argmax()]] == len(rows) - 1
    assert (rank[fitted_map.labels_ < 0] == -1).all()


def test_folder_round_trip_places_new_data_exactly_like_the_fitted_map(fitted, tmp_path):
    fitted_map, x, _ = fitted
    save_latent_map(tmp_path / "map", fitted_map, {"model": {"weights_sha256": "abc"}})
    loaded = load_latent_map(tmp_path / "map")
    assert loaded.embedding == {"model": {"weights_sha256": "abc"}}
    assert loaded.map.get_params() == fitted_map.get_params()
    a, b = fitted_map.place(x), loaded.map.place(x)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    # only JSON and safetensors: nothing that could be unpickled
    assert sorted(p.name for p in (tmp_path / "map").iterdir()) == [
        "config.json",
        "map.safetensors",
    ]


def test_corrupted_or_foreign_map_folders_are_refused(fitted, tmp_path):
    fitted_map, _, _ = fitted
    path = save_latent_map(tmp_path / "map", fitted_map, {})
    arrays = path / "map.safetensors"
    data = bytearray(arrays.read_bytes())
    data[-5] ^= 0xFF
    arrays.write_bytes(bytes(data))
    with pytest.raises(EmaeError, match="does not match the checksum"):
        load_latent_map(path)
    with pytest.raises(EmaeError, match="not a latent-map folder"):
        load_latent_map(tmp_path)
    other = tmp_path / "model"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"kind": "classifier"}))
    with pytest.raises(EmaeError, match="a classifier folder, not an latent-map one"):
        load_latent_map(other)
    # and a save never replaces a folder that is not a latent map
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("user data")
    with pytest.raises(EmaeError, match="not an emae latent-map folder"):
        save_latent_map(tmp_path / "data", fitted_map, {}, overwrite=True)
    assert (tmp_path / "data" / "keep.txt").read_text() == "user data"


def test_bad_vectors_are_refused_in_one_line(fitted):
    fitted_map, x, _ = fitted
    with pytest.raises(EmaeError, match="needs at least 16"):
        LatentMap().fit(x[:10])
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(EmaeError, match=r"1 rows hold NaN or infinite values \(rows \[3\]\)"):
        LatentMap().fit(bad)
    with pytest.raises(EmaeError, match="have 5 values per row; this map was fitted on 24"):
        fitted_map.transform(x[:, :5])
    with pytest.raises(EmaeError, match="clusterer must be"):
        LatentMap(clusterer="dbscan").fit(x)
