"""Outputs as viewers read them: ome-zarr-py, ome-zarr-models and napari-ome-zarr's reader.

An OME-Zarr input with a 30 x 4 x 4 nm pixel size is mapped by ``emae score`` and ``emae
detect``; each output opens at its root in every reader, validates, and carries the input's
pixel size, so that it overlays the input in napari or neuroglancer.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile
import zarr

from emae.cli import main
from emae.io import open_image
from emae.synth.tissue import make_volume, to_uint8

DETECT = ["--chunk", "40", "--tile", "48", "--overlap", "8", "--scheduler", "synchronous"]
SIZES = (30.0, 4.0, 4.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_model):
    from ome_zarr.writer import write_image

    root = tmp_path_factory.mktemp("viewers")
    volume = to_uint8(make_volume((2, 80, 72), seed=5))
    group = zarr.open_group(str(root / "em.zarr"), mode="w")
    write_image(
        volume,
        group,
        axes="zyx",
        scale=dict(zip("zyx", SIZES, strict=True)),
        axes_units={a: "nanometer" for a in "zyx"},
        scale_factors=(2,),
        storage_options={"chunks": (1, 40, 36)},
    )
    tifffile.imwrite(root / "em.tif", volume, photometric="minisblack")
    shutil.copytree(tiny_model, root / "run")
    return root


def _outputs(data, tmp_path):
    score = tmp_path / "score.zarr"
    detect = tmp_path / "detect.zarr"
    assert main(["-q", "score", f"{data}/run", f"{data}/em.zarr", "--out", str(score)]) == 0
    assert (
        main(["-q", "detect", f"{data}/run", f"{data}/em.zarr", "--out", str(detect), *DETECT]) == 0
    )
    return score, detect


def test_outputs_carry_the_input_pixel_size(data, tmp_path):
    assert open_image(data / "em.zarr").pixel_size == SIZES
    score, detect = _outputs(data, tmp_path)
    for out in (score, detect):
        assert open_image(out).pixel_size == SIZES
    assert open_image(detect, scale=1).pixel_size == (30.0, 8.0, 8.0)  # level 1: 2x2 means
    tif = tmp_path / "m.tif"
    assert main(["-q", "score", f"{data}/run", f"{data}/em.zarr", "--out", str(tif)]) == 0
    assert open_image(tif).pixel_size == SIZES
    with tifffile.TiffFile(tif) as f:  # what Fiji reads: pixels per centimeter
        x_res = f.pages[0].tags["XResolution"].value
    assert 1e7 * x_res[1] / x_res[0] == pytest.approx(4.0)


def test_score_and_detect_write_the_same_layout_every_reader_opens(data, tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models.v04.image import Image as NGFFImage

    for out in _outputs(data, tmp_path):
        nodes = list(Reader(parse_url(str(out)))())
        assert nodes and nodes[0].data[0].shape == (2, 80, 72)
        scale = nodes[0].metadata["coordinateTransformations"][0][0]["scale"]
        assert scale == list(SIZES)
        model = NGFFImage.from_zarr(zarr.open_group(str(out), mode="r"))
        assert [a.unit for a in model.attributes.multiscales[0].axes] == ["nanometer"] * 3
        assert zarr.open_array(str(out / "0"), mode="r").dtype == np.float32


def test_napari_ome_zarr_reads_the_root(data, tmp_path):
    from napari_ome_zarr import napari_get_reader

    for out in _outputs(data, tmp_path):
        reader = napari_get_reader(str(out))
        assert reader is not None
        layers = reader(str(out))
        data_, kwargs, kind = layers[0]
        assert kind == "image"
        assert data_[0].shape == (2, 80, 72)
        assert list(kwargs["scale"]) == list(SIZES)


def test_info_shows_and_pixel_size_supplies_the_size(data, tmp_path, capsys):
    assert main(["info", f"{data}/em.zarr"]) == 0
    assert "pixel size=30 x 4 x 4 nm" in capsys.readouterr().out
    out = tmp_path / "m.zarr"
    argv = ["-q", "score", f"{data}/run", f"{data}/em.tif", "--out", str(out)]
    assert main([*argv, "--pixel-size", "35,0.005um,5"]) == 0
    assert open_image(out).pixel_size == pytest.approx((35.0, 5.0, 5.0))
    assert main([*argv, "--pixel-size", "five", "--overwrite"]) == 1
    assert "--pixel-size: cannot read 'five'" in capsys.readouterr().err


def test_detections_are_ngff_labels_with_the_csv_ids(data, tmp_path):
    import csv

    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader
    from ome_zarr_models.v04.image_label import ImageLabel

    _, detect = _outputs(data, tmp_path)
    labels = zarr.open_array(str(detect / "labels" / "anomaly" / "0"), mode="r")[:]
    with open(tmp_path / "detect_detections.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["class"] == "anomaly"]
    assert rows, "the tiny model flags some pixels"
    ids = np.unique(labels[labels > 0])
    assert sorted(int(r["id"]) for r in rows) == ids.tolist()
    for r in rows:
        where = np.argwhere(labels == int(r["id"]))
        assert len(where) == int(r["area"])
        assert where.min(0).tolist() == [int(r["z"]), int(r["y_min"]), int(r["x_min"])]
        assert where.max(0).tolist() == [int(r["z"]), int(r["y_max"]), int(r["x_max"])]
    group = zarr.open_group(str(detect / "labels" / "anomaly"), mode="r")
    ImageLabel.from_zarr(group)  # validates the NGFF image-label metadata
    assert open_image(detect / "labels" / "anomaly").pixel_size == SIZES
    nodes = list(Reader(parse_url(str(detect)))())
    assert any(node.load(Label) for node in nodes)  # ome-zarr-py finds the labels


def test_napari_ome_zarr_shows_detections_as_a_labels_layer(data, tmp_path):
    from napari_ome_zarr import napari_get_reader

    _, detect = _outputs(data, tmp_path)
    layers = napari_get_reader(str(detect))(str(detect))
    kinds = [kind for _, _, kind in layers]
    assert kinds.count("labels") == 1 and kinds[0] == "image"
