"""The bounded-memory tally of a latent map's placed rows: tables equal those of all rows."""

from __future__ import annotations

import numpy as np
import pytest

from emae.errors import EmaeError
from emae.latent.tally import MapTally

pd = pytest.importorskip("pandas")


def _rows(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    anomaly = rng.random(n)
    anomaly[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "source": rng.choice(["a.tif", "b.zarr"], n),
            "z": np.where(rng.random(n) < 0.05, np.nan, rng.integers(0, 4, n)),
            "label": rng.choice(["clean", "scratch", None], n, p=[0.6, 0.3, 0.1]),
            "cluster": rng.integers(-1, 5, n),
            "novel": rng.random(n) < 0.2,
            "anomaly": anomaly,
            "map_x": rng.normal(size=n),
        }
    )


def _tally(frame: pd.DataFrame, sizes: list[int], **kwargs) -> MapTally:
    tally = MapTally(**kwargs)
    for start, stop in zip(np.cumsum([0, *sizes[:-1]]), np.cumsum(sizes), strict=True):
        tally.add(frame.iloc[start:stop].reset_index(drop=True))  # each part has its own index
    return tally


def test_tables_equal_those_of_the_whole_table_computed_by_pandas():
    frame = _rows(1000)
    tally = _tally(frame, [300, 1, 699], max_points=50)
    assert tally.rows == 1000 and tally.sampled
    clusters = {r["cluster"]: r for r in tally.cluster_rows()}
    assert [r["rows"] for r in tally.cluster_rows()] == sorted(
        frame.cluster.value_counts(), reverse=True
    )
    for c, group in frame.groupby("cluster"):
        row = clusters[c]
        assert row["rows"] == len(group) and row["share"] == round(len(group) / 1000, 6)
        assert row["novel_share"] == pytest.approx(group.novel.mean(), abs=1e-6)
        assert row["mean_anomaly"] == pytest.approx(group.anomaly.mean(), abs=1e-6)
        counts = group.label.astype(str).value_counts()
        assert row["labels"].split(", ")[0] == f"{counts.index[0]}: {counts.iloc[0]}"
        assert sum(int(x.split(": ")[1]) for x in row["labels"].split(", ")) == len(group)
    z = frame.z.fillna(0).astype(int)
    by_section = frame.assign(z=z).groupby(["source", "z"]).novel
    sections = {(r["source"], r["z"]): r for r in tally.section_rows()}
    assert len(sections) == by_section.ngroups
    for (source, zz), group in by_section:
        assert sections[(source, zz)]["rows"] == len(group)
        assert sections[(source, zz)]["novel_share"] == pytest.approx(group.mean(), abs=1e-6)
    shares = [r["novel_share"] for r in tally.section_rows()]
    assert shares == sorted(shares, reverse=True)
    assert tally.novel_share() == pytest.approx(frame.novel.mean())
    assert tally.unclustered_share() == pytest.approx((frame.cluster < 0).mean())


def test_the_plot_sample_is_uniform_bounded_and_independent_of_the_parts():
    frame = _rows(5000, seed=1)
    one = _tally(frame, [5000], max_points=400).sample()
    many = _tally(frame, [1000, 7, 1993, 2000], max_points=400).sample()
    assert len(one) == 400
    pd.testing.assert_frame_equal(one, many)
    # drawn from every part (the rows' order kept), not the first rows
    assert (one.map_x.isin(frame.map_x[:1000])).mean() == pytest.approx(0.2, abs=0.06)
    small = _tally(frame[:300], [300], max_points=400)
    assert not small.sampled and len(small.sample()) == 300
    pd.testing.assert_frame_equal(small.sample(), frame[:300].reset_index(drop=True))


def test_the_fitted_rows_are_kept_whole_in_order():
    frame = _rows(900, seed=2)
    fit_index = np.array([0, 5, 299, 300, 301, 899])
    tally = _tally(frame, [300, 300, 300], max_points=10, fit_index=fit_index)
    expected = frame.iloc[fit_index].reset_index(drop=True)
    pd.testing.assert_frame_equal(tally.fitted_rows(), expected)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_a_bad_sample_size_is_refused(bad):
    with pytest.raises(EmaeError, match="max_points must be an int >= 1"):
        MapTally(max_points=bad)
