"""Chunk-wise connected components equal whole-section labeling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from emae.volume.components import chunk_components, merge_components


def _chunked(values, mask, chunk):
    pieces = []
    for y0 in range(0, mask.shape[0], chunk[0]):
        for x0 in range(0, mask.shape[1], chunk[1]):
            sl = (slice(y0, y0 + chunk[0]), slice(x0, x0 + chunk[1]))
            pieces.append(chunk_components(values[sl], mask[sl], 0, y0, x0))
    return merge_components(pieces)


@pytest.mark.parametrize("chunk", [(7, 9), (16, 16), (5, 40), (64, 64)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunked_components_equal_whole_section_components(chunk, seed):
    rng = np.random.default_rng(seed)
    values = ndi.gaussian_filter(rng.random((48, 61)), 1.5)
    mask = values > np.quantile(values, 0.8)
    labels, n = ndi.label(mask, np.ones((3, 3), bool))
    found = _chunked(values, mask, chunk)
    assert len(found) == n
    expected = []
    for k, box in enumerate(ndi.find_objects(labels), start=1):
        yy, xx = np.nonzero(labels == k)
        expected.append(
            (
                len(yy),
                box[0].start,
                box[1].start,
                box[0].stop - 1,
                box[1].stop - 1,
                round(yy.mean(), 6),
                round(xx.mean(), 6),
                values[labels == k].max(),
            )
        )
    got = [
        (
            c["area"],
            c["y_min"],
            c["x_min"],
            c["y_max"],
            c["x_max"],
            round(c["centroid_y"], 6),
            round(c["centroid_x"], 6),
            c["peak"],
        )
        for c in found
    ]
    np.testing.assert_allclose(np.array(sorted(got)), np.array(sorted(expected)), rtol=1e-9)


def test_diagonal_touch_across_a_chunk_corner_merges():
    mask = np.zeros((8, 8), bool)
    mask[3, 3] = mask[4, 4] = True  # touch diagonally across the corner of 4x4 chunks
    found = _chunked(mask.astype(float), mask, (4, 4))
    assert len(found) == 1 and found[0]["area"] == 2
    anti = np.zeros((8, 8), bool)
    anti[3, 4] = anti[4, 3] = True  # the other diagonal
    assert len(_chunked(anti.astype(float), anti, (4, 4))) == 1


def test_different_classes_never_merge():
    mask = np.ones((4, 8), bool)
    left = chunk_components(np.ones((4, 4)), mask[:, :4], 0, 0, 0, class_index=1)
    right = chunk_components(np.ones((4, 4)), mask[:, 4:], 0, 0, 4, class_index=2)
    assert len(merge_components([left, right])) == 2


def test_reports_stream_sections_and_list_every_component_by_peak(tmp_path):
    """Sections finished from their chunks' records give write_reports (a one-pass iterator,
    one section held at a time) exactly the components of whole-section labeling, largest peak
    first."""
    import csv

    from emae.volume.done import read_manifest, write_chunk_record
    from emae.volume.qc import write_reports
    from emae.volume.sections import SectionJob, finish_section

    rng = np.random.default_rng(3)
    chunk, sections, markers, expected = 16, [], [], []
    for z in range(3):
        values = ndi.gaussian_filter(rng.random((40, 35)), 1.5)
        mask = values > np.quantile(values, 0.85)
        sections.append((values, mask))
        labels, n = ndi.label(mask, np.ones((3, 3), bool))
        expected += [
            (z, int((labels == k).sum()), float(values[labels == k].max())) for k in range(1, n + 1)
        ]
        for y0 in range(0, 40, chunk):
            for x0 in range(0, 35, chunk):
                sl = (slice(y0, y0 + chunk), slice(x0, x0 + chunk))
                h, w = mask[sl].shape
                qc = {"z": z, "y0": y0, "x0": x0, "height": h, "width": w}
                qc["anomalous_fraction"] = float(mask[sl].mean())
                markers.append((qc, [chunk_components(values[sl], mask[sl], z, y0, x0)]))
    out = tmp_path / "map.zarr"
    names: dict[int, list[str]] = {}
    for qc, pieces in markers:
        name = f"z{qc['z']}_y{qc['y0']}_x{qc['x0']}"
        write_chunk_record(out, name, qc, pieces)
        names.setdefault(qc["z"], []).append(name)
    job = SectionJob(str(out), "ZYX", 40, 35, threshold=None)
    for z, section in names.items():
        finish_section(z, section, job)
    consumed = []

    def one_pass():
        for z in range(3):
            consumed.append(z)
            m = read_manifest(out, z, pieces=False)
            yield z, m.tiles, m.detections

    result = write_reports(out, one_pass(), ["anomaly"])
    assert consumed == [0, 1, 2]
    with open(result["detections_csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert result["detections"] == len(rows) == len(expected)
    peaks = [float(r["peak"]) for r in rows]
    assert peaks == sorted(peaks, reverse=True)
    found = sorted((int(r["z"]), int(r["area"]), float(r["peak"])) for r in rows)
    assert [f[:2] for f in found] == [e[:2] for e in sorted(expected)]
    assert [f[2] for f in found] == pytest.approx([e[2] for e in sorted(expected)], rel=1e-5)
    assert {r["class"] for r in rows} == {"anomaly"}
    with open(result["qc_csv"], newline="") as f:
        qc_rows = list(csv.DictReader(f))
    summary = [r for r in qc_rows if r["tile"] == "all"]
    assert [int(r["z"]) for r in summary] == [0, 1, 2]
    for (_, mask), r in zip(sections, summary, strict=True):
        assert float(r["anomalous_fraction"]) == pytest.approx(mask.mean(), rel=1e-5)
    assert not list(tmp_path.glob(".detections-*"))  # the on-disk table is removed
