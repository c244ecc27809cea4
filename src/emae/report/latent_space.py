"""The report's latent-space section: the map, its clusters with montages, novelty of new data per
section, and what a generative model makes.

Every number and figure is read from the folders of ``emae map`` (``clusters.csv`` and its PNGs),
``emae map --apply`` (``apply.json``, ``sections.csv``) and ``emae generate`` (``generate.json``
and its PNGs); nothing is recomputed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from emae.report.sections import Block, Section, _file, _fmt, _json, _read_csv

#: Montages shown: those of the largest clusters.
MONTAGES = 6
#: Rows of the clusters and sections tables.
TABLE_ROWS = 15


def _clusters_table(folder: Path) -> Block | None:
    rows = _read_csv(folder / "clusters.csv")
    if not rows:
        return None
    labelled = any(r.get("labels") for r in rows)
    header = ["cluster", "patches", "share", "mean anomaly"] + (["labels"] if labelled else [])
    body = []
    for r in rows[:TABLE_ROWS]:
        name = "none (outliers)" if r["cluster"] == "-1" else r["cluster"]
        share = f"{100 * float(r['share']):.1f}%"
        cells = [
            name,
            r["rows"],
            share,
            _fmt(float(r["mean_anomaly"])) if r["mean_anomaly"] else "–",
        ]
        body.append(cells + ([r.get("labels", "")] if labelled else []))
    caption = "Clusters, largest first" + (
        f" ({len(rows) - TABLE_ROWS} more in clusters.csv)" if len(rows) > TABLE_ROWS else ""
    )
    return {
        "type": "table",
        "id": "latent-clusters",
        "caption": caption,
        "header": header,
        "rows": body,
    }


def map_blocks(folder: Path) -> list[Block]:
    """A fitted map: what it was fitted on, the map figures, the clusters and their montages."""
    config = _json(folder / "config.json")
    embedding, params = config.get("embedding", {}), config.get("params", {})
    rows = _read_csv(folder / "clusters.csv")
    clustered = [r for r in rows if r["cluster"] != "-1"]
    items = [
        ("map folder", str(folder)),
        ("model", embedding.get("model", {}).get("path", "–")),
        (
            "vectors",
            f"{embedding.get('vector', '–')}, {embedding.get('dims', '–')} values",
        ),
        ("patches", f"{sum(int(r['rows']) for r in rows):,}"),
        ("clusters", f"{len(clustered)} ({params.get('clusterer', '–')})"),
    ]
    blocks: list[Block] = [{"type": "kv", "caption": "Latent map", "items": items}]
    blocks += _file(
        folder / "map_clusters.png",
        "Each patch on the UMAP of its vector, by cluster (grey: in no cluster)",
        "map by cluster",
    )
    blocks += _file(
        folder / "map_labels.png",
        "The same map by the patches' labels (never seen by the clustering)",
        "map by label",
    )
    blocks += _file(folder / "map_anomaly.png", "The same map by anomaly score", "map by anomaly")
    table = _clusters_table(folder)
    if table is not None:
        blocks.append(table)
    for r in clustered[:MONTAGES]:
        blocks += _file(
            folder / "montages" / f"cluster_{r['cluster']}.png",
            f"Cluster {r['cluster']} ({r['rows']} patches): its most and least typical patches",
            f"cluster {r['cluster']}",
        )  # fmt: skip
    return blocks


def apply_blocks(folder: Path) -> tuple[list[Block], list[str]]:
    """New data placed in a map: novelty per section; and the highlight lines."""
    record = _json(folder / "apply.json")
    share = record.get("novel_share")
    items = [
        ("new data", str(folder)),
        ("map", record.get("map", "–")),
        ("patches", f"{record.get('rows', 0):,}"),
        ("outside every known cluster", "–" if share is None else f"{100 * share:.1f}%"),
    ]
    blocks: list[Block] = [{"type": "kv", "caption": "New data on the map", "items": items}]
    sections = _read_csv(folder / "sections.csv")
    if sections:
        blocks.append(
            {
                "type": "table",
                "id": "latent-novelty",
                "caption": "Sections with the largest share of patches outside every known cluster",
                "header": ["image", "section", "patches", "novel share"],
                "rows": [
                    [
                        Path(r["source"]).name,
                        r["z"],
                        r["rows"],
                        f"{100 * float(r['novel_share']):.1f}%",
                    ]
                    for r in sections[:TABLE_ROWS]
                ],
            }
        )
    blocks += _file(folder / "map_new.png", "The new patches on the fitted map", "new data")
    blocks += _file(
        folder / "map_novelty.png", "Their novelty (distance to the fitted patches)", "novelty"
    )
    lines = []
    if sections:
        top = sections[0]
        lines.append(
            f"{100 * float(top['novel_share']):.1f}% of section {top['z']} of "
            f"{Path(top['source']).name} falls outside every known cluster"
        )
    return blocks, lines


def generate_blocks(folder: Path) -> list[Block]:
    """Prior samples, interpolations and traversals of ``emae generate``."""
    record = _json(folder / "generate.json")
    blocks: list[Block] = [
        {
            "type": "kv",
            "caption": "Generation",
            "items": [("model", f"{record.get('model', '–')} ({record.get('model_name', '–')})")]
            + [
                (k, v) for k, v in record.items() if isinstance(v, str) and v.startswith("left out")
            ],
        }
    ]
    captions = {
        "samples": "Draws from the prior, decoded",
        "interpolations": "Interpolations between pairs of patches (their codes mixed linearly)",
        "traversals": "Latent traversals: one unit swept from -3 to +3 sd per row, most "
        "informative unit (largest mean KL) first",
    }
    for name in record.get("made", []):
        blocks += _file(folder / f"{name}.png", captions.get(name, name), name)
    return blocks


def latent_section(
    maps: Sequence[Path], applied: Sequence[Path], generated: Sequence[Path]
) -> Section | None:
    """One section for every map, applied map and generation given."""
    if not (maps or applied or generated):
        return None
    blocks: list[Block] = []
    highlights = []
    for folder in maps:
        blocks += map_blocks(folder)
    for folder in applied:
        more, lines = apply_blocks(folder)
        blocks += more
        highlights += [("novelty", line) for line in lines]
    for folder in generated:
        blocks += generate_blocks(folder)
    return {"id": "latent", "title": "Latent space", "blocks": blocks, "highlights": highlights}
