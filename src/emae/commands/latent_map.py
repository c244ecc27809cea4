"""``emae map``: fit a latent map on an embedding, or apply a fitted map to a new embedding.

Fitting (:func:`fit_map`) writes a map folder (:mod:`emae.folders.latent_map`)::

    MAP/config.json, map.safetensors   the fitted LatentMap, loadable without pickle
    MAP/points.parquet                 every row of the embedding (without its vector) with
                                       map_x, map_y, cluster, novelty, novel, fitted
    MAP/clusters.csv                   cluster, rows, share, mean anomaly, label composition
    MAP/map_clusters.png, map_labels.png, map_anomaly.png
    MAP/montages/cluster_K.png         the cluster's most and least typical patches

Applying (:func:`apply_map`) places a new embedding of the same model in the map and writes
``OUT/points.parquet``, ``OUT/sections.csv`` (rows and novel share per image and section),
``OUT/clusters.csv``, ``OUT/map_new.png`` and ``OUT/map_novelty.png``, and ``OUT/apply.json``.

Both read the embedding one part at a time (fitting reads only the vectors and ``feat_*``
columns of every part to draw the ``max_fit`` rows it fits on). Nothing that grows with the
embedding stays in memory: the placed rows go to ``points.parquet`` part by part, the tables
are counted part by part, and the scatter plots draw a uniform random sample of at most
``max_points`` rows (:class:`~emae.latent.tally.MapTally`); what stays is the fitted rows, one
part, the counts per cluster and per section, and the sample.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emae.data.labels import LabeledSample, LabeledSet
from emae.data.objects import object_patches
from emae.data.patches import PatchLocation, read_patches
from emae.errors import EmaeError, config_error
from emae.folders.latent_map import load_latent_map, save_latent_map
from emae.io.atomic import atomic_dir, atomic_file
from emae.io.embedding import (
    embedding_rows,
    feature_names,
    iter_parts,
    pyarrow_modules,
    read_meta,
)
from emae.io.provenance import check_not_input
from emae.io.readers import open_image
from emae.latent.config import MapConfig
from emae.latent.map import LatentMap
from emae.latent.tally import MAX_POINTS, MapTally
from emae.report.latent_figures import (
    anomaly_map_figure,
    categorical_map,
    continuous_map,
    montage_figure,
)

logger = logging.getLogger(__name__)

APPLY = "apply.json"
CLUSTER_FIELDS = ["cluster", "rows", "share", "novel_share", "mean_anomaly", "labels"]
SECTION_FIELDS = ["source", "z", "rows", "novel_share"]
#: Clusters whose most typical patch is drawn on the map (the largest).
THUMBS = 12
FEATURE_PREFIX = "feat_"


def _with_features(frame: Any, vectors: np.ndarray, where: str) -> np.ndarray:
    """The vectors with the ``feat_*`` columns appended; NaN in them is refused by name."""
    names = [c for c in frame.columns if str(c).startswith(FEATURE_PREFIX)]
    if not names:
        return vectors
    values = frame[names].to_numpy(dtype=np.float64)
    bad = [n for n, ok in zip(names, np.isfinite(values).all(axis=0), strict=True) if not ok]
    if bad:
        raise EmaeError(f"{where}: feature columns {bad} hold NaN or infinite values")
    return np.concatenate([vectors, values.astype(np.float32)], axis=1)


def _fit_rows(path: Path, n_rows: int, config: MapConfig) -> tuple[np.ndarray, np.ndarray]:
    """The seeded sample of rows the map is fitted on: ``(indices, vectors)``."""
    take = np.arange(n_rows)
    if n_rows > config.max_fit:
        rng = np.random.default_rng(config.seed)
        take = np.sort(rng.choice(n_rows, config.max_fit, replace=False))
    chosen, start = [], 0
    for frame, vectors in iter_parts(path, columns=feature_names(path)):
        stop = start + len(frame)
        local = take[(take >= start) & (take < stop)] - start
        chosen.append(_with_features(frame, vectors, str(path))[local])
        start = stop
    return take, np.concatenate(chosen)


def read_rows_patches(frame: Any, meta: dict[str, Any]) -> list[np.ndarray]:
    """The patches of embedding rows, read again from their sources (for montages)."""
    patch = int(meta["patch_size"])
    variant = meta.get("config", {}).get("input", "surrounding")
    out, images = [], {}
    for row in frame.itertuples(index=False):
        if row.y is None or (isinstance(row.y, float) and np.isnan(row.y)):
            sample = LabeledSample(row.source, None, None, None, str(row.label))
            labeled = LabeledSet((sample,), (str(row.label),), (), "image")
            out.append(object_patches(labeled, patch, variant)[0][0])
            continue
        image = images.get(row.source) or images.setdefault(row.source, open_image(row.source))
        z = 0 if row.z is None or row.z != row.z else int(row.z)
        loc = PatchLocation(0, z, int(row.y) - patch // 2, int(row.x) - patch // 2)
        out.append(read_patches([image], [loc], patch)[0])
    return out


def _write_table(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> list[dict[str, Any]]:
    """A CSV table of ``rows`` (atomically); returns the rows."""
    with atomic_file(path, overwrite=True) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _save_png(fig: Any, path: Path) -> None:
    with atomic_file(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png")


def _place_all(
    path: Path,
    fitted: LatentMap,
    fit_index: np.ndarray | None,
    writer_path: Path,
    max_points: int,
) -> MapTally:
    """Place every row of the embedding, part by part, into ``points.parquet``; returns the
    tally of the placed rows (:class:`~emae.latent.tally.MapTally`: tables, a plot sample and
    the fitted rows), so that memory does not grow with the embedding."""
    pa, pq = pyarrow_modules()
    tally = MapTally(max_points, fit_index)
    start, writer = 0, None
    try:
        for frame, vectors in iter_parts(path):
            placed = fitted.place(_with_features(frame, vectors, str(path)))
            frame = frame.assign(
                map_x=placed["coords"][:, 0],
                map_y=placed["coords"][:, 1],
                cluster=placed["cluster"],
                novelty=placed["novelty"],
                novel=placed["novel"],
                fitted=False,
            )
            if fit_index is not None:
                rows = np.arange(start, start + len(frame))
                where = np.searchsorted(fit_index, rows)
                hit = (where < len(fit_index)) & (
                    fit_index[np.minimum(where, len(fit_index) - 1)] == rows
                )
                j = where[hit]
                frame.loc[hit, ["map_x", "map_y"]] = fitted.embedding_[j]
                frame.loc[hit, "cluster"] = fitted.labels_[j]
                frame.loc[hit, "novelty"] = fitted.train_novelty_[j]
                frame.loc[hit, "novel"] = fitted.train_novelty_[j] > fitted.novelty_threshold_
                frame.loc[hit, "fitted"] = True
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(writer_path, table.schema)
            writer.write_table(table)
            tally.add(frame)
            start += len(frame)
    finally:
        if writer is not None:
            writer.close()
    return tally


def fit_map(
    embedding: str | Path,
    out: str | Path,
    *,
    config: MapConfig | None = None,
    overwrite: bool = False,
    max_points: int = MAX_POINTS,
    **options: Any,
) -> dict[str, Any]:
    """Fit a :class:`LatentMap` on an embedding of ``emae embed`` and write the map folder.

    The tables count every row; the scatter plots draw a uniform random sample of at most
    ``max_points`` rows (:class:`~emae.latent.tally.MapTally`).

    Returns
    -------
    dict
        ``out``, ``rows``, ``fitted_rows``, ``clusters`` (number, not counting -1),
        ``unclustered_share``, ``novelty_threshold``, ``seconds``.
    """
    try:
        config = config or MapConfig(**options)
    except Exception as exc:
        raise config_error(exc, "options", set(options)) from None
    embedding, out = Path(embedding), Path(out)
    check_not_input(out, [embedding])
    meta = read_meta(embedding)
    start = time.perf_counter()
    n_rows = embedding_rows(embedding)
    fit_index, vectors = _fit_rows(embedding, n_rows, config)
    params = config.model_dump(exclude={"max_fit", "montage"})
    fitted = LatentMap(**params).fit(vectors)
    ranks = fitted.typicality_rank()

    def write_files(folder: Path) -> None:
        tally = _place_all(embedding, fitted, fit_index, folder / "points.parquet", max_points)
        clusters = _write_table(folder / "clusters.csv", tally.cluster_rows(), CLUSTER_FIELDS)
        _figures(folder, tally, meta, fitted, ranks, config.montage)
        summary.update(
            rows=tally.rows,
            clusters=sum(1 for c in clusters if c["cluster"] >= 0),
            unclustered_share=round(tally.unclustered_share(), 6),
        )

    summary: dict[str, Any] = {"out": str(out), "fitted_rows": len(fit_index)}
    info = {
        **{k: meta[k] for k in ("model", "vector", "patch_size", "dims")},
        "source": str(embedding),
    }
    save_latent_map(out, fitted, info, extra=write_files, overwrite=overwrite)
    summary["novelty_threshold"] = fitted.novelty_threshold_
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary


def _shown(tally: MapTally) -> str:
    """A title's note on the rows drawn when they are a sample."""
    return f" ({tally.max_points:,} of {tally.rows:,} rows)" if tally.sampled else ""


def _figures(
    folder: Path,
    tally: MapTally,
    meta: dict[str, Any],
    fitted: LatentMap,
    ranks: np.ndarray,
    per_row: int,
) -> None:
    points = tally.sample()
    coords = points[["map_x", "map_y"]].to_numpy()
    clusters = points["cluster"].to_numpy()
    if points["label"].notna().any():
        labels = points["label"].fillna("(none)").astype(str).to_numpy()
        title = f"latent map by label{_shown(tally)}"
        _save_png(categorical_map(coords, labels, title), folder / "map_labels.png")
    if "anomaly" in points and points["anomaly"].notna().any():
        _save_png(
            anomaly_map_figure(coords, points["anomaly"].to_numpy()), folder / "map_anomaly.png"
        )
    (folder / "montages").mkdir()
    exemplars: list[Any] = []
    fitted_rows = tally.fitted_rows()
    for c in np.unique(fitted.labels_[fitted.labels_ >= 0]):
        members = np.flatnonzero(fitted.labels_ == c)
        order = members[np.argsort(ranks[members], kind="stable")]
        typical, atypical = order[:per_row], order[::-1][:per_row]
        patches = read_rows_patches(fitted_rows.iloc[np.concatenate([typical, atypical])], meta)
        fig = montage_figure(
            patches[: len(typical)], patches[len(typical) :], f"cluster {c} ({len(members)} rows)"
        )
        _save_png(fig, folder / "montages" / f"cluster_{c}.png")
        exemplars.append((len(members), np.median(fitted.embedding_[members], axis=0), patches[0]))
    exemplars = [(xy, patch) for _, xy, patch in sorted(exemplars, key=lambda e: -e[0])[:THUMBS]]
    title = f"latent map by cluster{_shown(tally)} (each with its most typical patch)"
    _save_png(
        categorical_map(coords, clusters, title, unassigned=-1, thumbnails=exemplars),
        folder / "map_clusters.png",
    )


def _same_model(map_info: dict[str, Any], meta: dict[str, Any], where: tuple[Path, Path]) -> None:
    """Refuse an embedding of another model, vector kind or vector size than the map's."""
    a, b = map_info.get("model", {}), meta.get("model", {})
    if a.get("weights_sha256") != b.get("weights_sha256"):
        raise EmaeError(
            f"{where[1]} was embedded with model {b.get('path')}, but the map {where[0]} was "
            f"fitted on model {a.get('path')}; embed the data with the map's model"
        )
    for key in ("vector", "dims", "patch_size"):
        if map_info.get(key) != meta.get(key):
            raise EmaeError(
                f"{where[1]} has {key} {meta.get(key)!r}, the map {where[0]} {map_info.get(key)!r}"
            )


def apply_map(
    map_folder: str | Path,
    embedding: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    max_points: int = MAX_POINTS,
) -> dict[str, Any]:
    """Place a new embedding in a fitted map: coordinates, clusters, novelty (module doc).

    The tables count every row; the scatter plots draw at most ``max_points`` of them.

    Returns
    -------
    dict
        ``out``, ``rows``, ``novel_share``, ``sections`` (the 5 with the largest novel share),
        ``seconds``.
    """
    map_folder, embedding, out = Path(map_folder), Path(embedding), Path(out)
    check_not_input(out, [map_folder, embedding])
    loaded = load_latent_map(map_folder)
    meta = read_meta(embedding)
    _same_model(loaded.embedding, meta, (map_folder, embedding))
    start = time.perf_counter()
    summary: dict[str, Any] = {"out": str(out)}

    def is_apply(path: Path) -> bool:
        return (path / APPLY).is_file()

    with atomic_dir(
        out, overwrite=overwrite, replaceable=is_apply, kind="an emae map --apply output"
    ) as tmp:
        tally = _place_all(embedding, loaded.map, None, tmp / "points.parquet", max_points)
        _write_table(tmp / "clusters.csv", tally.cluster_rows(), CLUSTER_FIELDS)
        sections = _write_table(tmp / "sections.csv", tally.section_rows(), SECTION_FIELDS)
        points = tally.sample()
        coords = points[["map_x", "map_y"]].to_numpy()
        _save_png(
            categorical_map(
                coords,
                np.where(points["novel"], "novel", points["cluster"].astype(str)),
                f"new data on the fitted map{_shown(tally)} (grey: the fitted rows)",
                background=loaded.map.embedding_,
            ),
            tmp / "map_new.png",
        )
        _save_png(
            continuous_map(
                coords,
                points["novelty"].to_numpy(),
                f"novelty of the new data{_shown(tally)}",
                "novelty (distance to the fitted rows; larger = newer)",
            ),
            tmp / "map_novelty.png",
        )
        summary.update(
            rows=tally.rows,
            novel_share=round(tally.novel_share(), 6),
            novelty_threshold=loaded.map.novelty_threshold_,
            sections=sections[:5],
            seconds=round(time.perf_counter() - start, 3),
            map=str(map_folder),
        )
        (tmp / APPLY).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def sections_text(rows: Sequence[dict[str, Any]]) -> list[str]:
    """``"3.2% of section 418 of stack.zarr falls outside every known cluster"`` lines."""
    return [
        f"{100 * r['novel_share']:.1f}% of section {r['z']} of {Path(r['source']).name} "
        f"falls outside every known cluster ({r['rows']} patches)"
        for r in rows
    ]
