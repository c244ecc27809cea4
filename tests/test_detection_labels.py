"""Detections painted as label images hold the CSV's ids, across chunk borders and classes."""

from __future__ import annotations

import csv

import numpy as np
import zarr

from emae.io.map_store import create_map_store
from emae.volume.components import chunk_components
from emae.volume.done import read_manifest, write_chunk_record
from emae.volume.labels import create_label_images, write_label_properties
from emae.volume.qc import write_reports
from emae.volume.sections import SectionJob, finish_section, label_section

CHUNK = 16


def _markers(probs: np.ndarray, anomaly: np.ndarray, threshold: float):
    """What detect's chunks record: per chunk its QC numbers and component pieces."""
    _, h, w = anomaly.shape
    for z in range(anomaly.shape[0]):
        for y0 in range(0, h, CHUNK):
            for x0 in range(0, w, CHUNK):
                a = anomaly[z, y0 : y0 + CHUNK, x0 : x0 + CHUNK]
                p = probs[:, z, y0 : y0 + CHUNK, x0 : x0 + CHUNK]
                qc = {"z": z, "y0": y0, "x0": x0, "height": a.shape[0], "width": a.shape[1]}
                qc["anomalous_fraction"] = float((a > threshold).mean())
                pieces = [chunk_components(a, a > threshold, z, y0, x0, 0)]
                best = p.argmax(0)
                found = (best == 0) & (p[0] >= 128)
                pieces.append(chunk_components(p[0] / 255, found, z, y0, x0, 1))
                yield qc, pieces


def test_regions_across_chunks_get_their_csv_ids(tmp_path):
    shape = (2, 40, 40)
    anomaly = np.zeros(shape, np.float32)
    anomaly[0, 10:22, 10:22] = 5  # crosses four chunks
    anomaly[1, 30:34, 2:5] = 3
    probs = np.zeros((2, *shape), np.uint8)
    probs[1] = 255  # clean everywhere ...
    probs[0, 1, 5:25, 14:19], probs[1, 1, 5:25, 14:19] = 230, 25  # ... but a dust stripe
    out = tmp_path / "o.zarr"
    create_map_store(out, shape, "ZYX", chunks=(1, CHUNK, CHUNK), classes=("dust", "clean"))
    zarr.open_array(str(out / "0"), mode="r+")[:] = anomaly
    zarr.open_array(str(out / "probabilities" / "0"), mode="r+")[:] = probs
    create_label_images(out, shape, "ZYX", (1, CHUNK, CHUNK), ["anomaly", "classes"], None)
    names: dict[int, list[str]] = {}
    for qc, pieces in _markers(probs, anomaly, 1.0):
        name = f"z{qc['z']}_y{qc['y0']}_x{qc['x0']}"
        write_chunk_record(out, name, qc, pieces)
        names.setdefault(qc["z"], []).append(name)
    job = SectionJob(str(out), "ZYX", 40, 40, threshold=1.0, classes=("dust", "clean"))
    counts = [finish_section(z, names[z], job) for z in range(2)]
    label_section(0, 1, job)
    label_section(1, 1 + counts[0], job)
    found = []
    result = write_reports(
        out,
        ((z, m.tiles, m.detections) for z in range(2) for m in [read_manifest(out, z)]),
        ["anomaly", "dust", "clean"],
        on_detection=lambda d: found.append(d) or True,
    )
    write_label_properties(out, ["anomaly", "classes"], found)
    with open(tmp_path / "o_detections.csv", newline="") as f:
        rows = {int(r["id"]): r for r in csv.DictReader(f)}
    assert result["detections"] == len(rows) == 3
    for name, cls in (("anomaly", "anomaly"), ("classes", "dust")):
        painted = zarr.open_array(str(out / "labels" / name / "0"), mode="r")[:]
        for i, r in rows.items():
            if r["class"] != cls:
                assert not (painted == i).any()
                continue
            where = np.argwhere(painted == i)
            assert len(where) == int(r["area"])
            assert where.min(0).tolist() == [int(r["z"]), int(r["y_min"]), int(r["x_min"])]
    square = zarr.open_array(str(out / "labels" / "anomaly" / "0"), mode="r")[0, 10:22, 10:22]
    assert len(np.unique(square)) == 1  # one id across the four chunks
    attrs = zarr.open_group(str(out / "labels"), mode="r").attrs.asdict()
    assert attrs["labels"] == ["anomaly", "classes"]
    props = zarr.open_group(str(out / "labels" / "classes"), mode="r").attrs["image-label"]
    assert [p["class"] for p in props["properties"]] == ["dust"]
    assert props["properties"][0]["area"] == 20 * 5


def test_a_sparse_pyramid_built_from_its_painted_regions_equals_the_full_one(tmp_path):
    from emae.io.ome_zarr import build_pyramid, create_ome_zarr

    shape, chunks = (3, 200, 150), (1, 32, 32)
    painted = [
        (slice(1, 2), slice(40, 72), slice(96, 128)),
        (slice(2, 3), slice(192, 200), slice(0, 32)),
    ]
    stores = []
    for name in ("full", "sparse"):
        group = create_ome_zarr(
            tmp_path / name, shape, np.uint32, axes="ZYX", chunks=chunks, downsampling="nearest"
        )
        for i, region in enumerate(painted):
            group["0"][region] = i + 7
        stores.append(group)
    # Written but not declared: the sparse build must leave its blocks alone (never read them).
    stores[1]["0"][0, 0:4, 0:4] = 99
    build_pyramid(tmp_path / "full", method="nearest")
    build_pyramid(tmp_path / "sparse", method="nearest", regions=painted)
    levels = sorted(stores[0].array_keys())
    assert len(levels) >= 3
    for level in levels[1:]:
        np.testing.assert_array_equal(stores[1][level][:], stores[0][level][:])
    assert stores[1]["2"][:].max() == 8  # the painted ids reach the coarse levels
