"""The napari plugin, headless: the reader on real outputs, the widgets' functions, the manifest.

No viewer and no Qt: the reader's layer data tuples become layers through napari's own
``Layer.create`` and ``split_channels`` (what ``viewer.add_image`` does with ``channel_axis``),
and the widgets' functions take napari layer objects, which need no viewer.
"""

from __future__ import annotations

import shutil
import sys
import typing
from importlib import import_module, resources
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

napari = pytest.importorskip("napari")

from napari.layers import Image, Labels, Layer, Points  # noqa: E402
from napari.layers.utils.stack_utils import split_channels  # noqa: E402

from emae.commands.detect import detect  # noqa: E402
from emae.commands.score import score_images  # noqa: E402
from emae.data.labels import load_labels  # noqa: E402
from emae.errors import EmaeError  # noqa: E402
from emae.io import write_tiff  # noqa: E402
from emae.io.map_store import class_colours, create_map_store  # noqa: E402
from emae.napari import reader, widgets  # noqa: E402
from emae.synth.tissue import make_volume, to_uint8  # noqa: E402

SIZES = (30.0, 4.0, 4.0)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("napari")
    volume = to_uint8(make_volume((2, 80, 72), seed=6))
    volume[1, 30:46, 20:36] = 255  # a burnt square
    write_tiff(root / "em.tif", volume, axes="ZYX", pixel_size=SIZES)
    shutil.copytree(tiny_model, root / "run")
    return root


def test_the_reader_opens_a_score_tiff_over_its_source(data, tmp_path):
    out = tmp_path / "m.tif"
    score_images(data / "run", [data / "em.tif"], out, progress=False)
    read = reader.napari_get_reader(str(out))
    assert read is reader.read_outputs
    [(layer_data, kwargs, kind)] = read(str(out))
    assert kind == "image" and kwargs["colormap"] == "magma" and not kwargs["multiscale"]
    assert kwargs["scale"] == SIZES and kwargs["name"] == "anomaly (m.tif)"
    expected = tifffile.imread(out)
    np.testing.assert_array_equal(np.asarray(layer_data[:]), expected)
    low, high = kwargs["contrast_limits"]
    assert low == pytest.approx(expected.min()) and expected.min() < high <= expected.max()
    layer = Layer.create(layer_data, kwargs, kind)
    assert isinstance(layer, Image) and tuple(layer.scale) == SIZES


def test_the_reader_opens_a_detect_store_and_its_labels(data, tmp_path):
    from ome_zarr.writer import write_labels

    out = tmp_path / "d.zarr"
    small = dict(tile=48, overlap=8, chunk=40, scheduler="synchronous", progress=False)
    detect(data / "run", data / "em.tif", out, **small)
    picked = np.zeros((2, 80, 72), dtype=np.uint32)  # labels another tool added to the store
    picked[1, 30:46, 20:36] = 7
    write_labels(
        picked,
        zarr.open_group(str(out), mode="r+"),
        name="picked",
        axes="zyx",
        scaler=None,
        scale_factors=(2,),
        label_metadata={"colors": [{"label-value": 7, "rgba": [255, 0, 0, 255]}]},
    )
    layers = reader.napari_get_reader(str(out))(str(out))
    assert [(kw["name"], kind) for _, kw, kind in layers] == [
        ("anomaly (d.zarr)", "image"),
        ("anomaly regions", "labels"),
        ("picked regions", "labels"),
    ]
    (levels, kwargs, _), regions, picked_layer = layers
    assert kwargs["multiscale"] and levels[0].shape == (2, 80, 72) and len(levels) > 1
    assert kwargs["scale"] == SIZES and kwargs["colormap"] == "magma"
    np.testing.assert_array_equal(levels[0][:], zarr.open_array(str(out / "0"), mode="r")[:])
    image = Layer.create(*layers[0])
    assert image.multiscale and tuple(image.scale) == SIZES
    # emae detect's regions: each pixel the id of its row in the detections CSV.
    ids = [int(r.split(",")[0]) for r in (tmp_path / "d_detections.csv").read_text().split()[1:]]
    features = regions[1]["features"]
    assert sorted(features["index"]) == sorted(ids) and set(features["class"]) == {"anomaly"}
    labels = Layer.create(*regions)
    assert isinstance(labels, Labels) and tuple(labels.scale) == SIZES
    assert list(labels.features["area"]) == features["area"]
    level0 = np.asarray(regions[0][0][:] if regions[1]["multiscale"] else regions[0][:])
    assert set(np.unique(level0)) - {0} <= set(ids)
    # Labels written by ome-zarr-py: their colours.
    other = Layer.create(*picked_layer)
    assert isinstance(other, Labels) and tuple(other.scale) == SIZES
    np.testing.assert_allclose(other.colormap.map(np.array([7]))[0], [1, 0, 0, 1])


def test_the_reader_gives_one_coloured_layer_per_class(tmp_path):
    classes = ["burnt", "clean", "fold"]
    out = tmp_path / "p.zarr"
    images = create_map_store(
        out, (2, 64, 48), "ZYX", chunks=(1, 32, 32), classes=classes, pixel_size=SIZES
    )
    probs = zarr.open_array(str(images["probabilities"] / "0"), mode="r+")
    values = np.arange(3, dtype=np.uint8)[:, None, None, None] * 100
    probs[:] = np.broadcast_to(values, probs.shape).copy()
    [anomaly, (data_, kwargs, kind)] = reader.read_outputs(str(out))
    assert anomaly[1]["name"] == "anomaly (p.zarr)" and kind == "image"
    assert kwargs["channel_axis"] == 0 and kwargs["name"] == classes
    split = split_channels(data_, **kwargs)  # what viewer.add_image(channel_axis=0) does
    assert [kw["name"] for _, kw, _ in split] == classes
    assert [kw["visible"] for _, kw, _ in split] == [True, False, True]  # clean hidden
    assert all(list(kw["contrast_limits"]) == [0, 255] for _, kw, _ in split)
    assert all(tuple(kw["scale"]) == SIZES for _, kw, _ in split)
    for (_, kw, _), colour in zip(split, class_colours(classes), strict=True):
        rgb = [int(colour[i : i + 2], 16) / 255 for i in (0, 2, 4)]
        np.testing.assert_allclose(kw["colormap"].colors[-1][:3], rgb)
    layers = [Layer.create(d, kw, k) for d, kw, k in split]
    assert [layer.name for layer in layers] == classes
    first = layers[2].data[0] if layers[2].multiscale else layers[2].data
    assert np.asarray(first[0]).max() == 200 and tuple(first.shape) == (2, 64, 48)


def test_the_reader_declines_what_emae_did_not_write(data, tmp_path):
    volume = to_uint8(make_volume((1, 64, 64), seed=1))[0]
    tifffile.imwrite(tmp_path / "user.tif", volume)
    zarr.open_group(str(tmp_path / "user.zarr"), mode="w").create_array("0", data=volume)
    for path in ("user.tif", "user.zarr", "missing.zarr"):
        assert reader.napari_get_reader(str(tmp_path / path)) is None
    assert reader.napari_get_reader(str(data / "em.tif")) is None  # an emae image, not a map
    assert reader.napari_get_reader([str(data / "em.tif"), str(data / "em.tif")]) is None


def test_the_score_widget_gives_the_map_of_emae_score(data, tmp_path):
    out = tmp_path / "s.tif"
    score_images(data / "run", [data / "em.tif"], out, progress=False)
    volume = tifffile.imread(data / "em.tif")
    source = Image(volume, scale=SIZES, translate=(0, 5, 5), name="em")
    [(anomaly, kwargs, kind), (above, above_kwargs, above_kind)] = widgets.score_image_layer(
        source, data / "run"
    )
    np.testing.assert_array_equal(anomaly, tifffile.imread(out))  # exactly emae score's map
    assert anomaly.dtype == np.float32 and kind == "image" and above_kind == "labels"
    assert kwargs["name"] == "anomaly (run)" and kwargs["colormap"] == "magma"
    assert kwargs["scale"] == SIZES and kwargs["translate"] == (0, 5, 5)
    threshold = kwargs["metadata"]["emae"]["pixel_threshold"]
    np.testing.assert_array_equal(above, anomaly > threshold)
    assert above_kwargs["scale"] == SIZES and above_kwargs["name"] == "above threshold (run)"
    # One section of a 2D layer is the same map too.
    [(section, *_), _] = widgets.score_image_layer(Image(volume[1]), data / "run")
    one = tmp_path / "one.tif"
    tifffile.imwrite(tmp_path / "one_in.tif", volume[1])
    score_images(data / "run", [tmp_path / "one_in.tif"], one, progress=False)
    np.testing.assert_array_equal(section, tifffile.imread(one))


def test_the_score_widget_checks_the_dtype_like_emae_score(data):
    wide = Image(tifffile.imread(data / "em.tif").astype(np.uint16) * 200, name="wide")
    with pytest.raises(EmaeError, match=r"layer 'wide'.*uint16.*uint8.*tick 'rescale'"):
        widgets.score_image_layer(wide, data / "run")
    [(anomaly, *_), _] = widgets.score_image_layer(wide, data / "run", rescale=True)
    assert anomaly.shape == (2, 80, 72) and np.isfinite(anomaly).all()
    with pytest.raises(EmaeError, match=r"layer 'rgb'.*RGB"):
        widgets.score_image_layer(
            Image(np.zeros((8, 8, 3), np.uint8), rgb=True, name="rgb"), data / "run"
        )


def test_points_round_trip_through_the_labels_csv(data, tmp_path):
    points = Points(
        [[0, 10.4, 20.6], [1, 38.0, 28.0], [1, 70.2, 5.5]],
        features={"label": ["clean", "burnt", "clean"]},
        name="picks",
    )
    out = tmp_path / "labels.csv"
    assert widgets.write_points_csv(points, data / "em.tif", out) == out
    labeled = load_labels(out, patch_size=9)
    got = [(s.z, s.y, s.x, s.label) for s in labeled.samples]
    assert got == [(0, 10, 21, "clean"), (1, 38, 28, "burnt"), (1, 70, 6, "clean")]
    assert {s.image for s in labeled.samples} == {str(data / "em.tif")}
    assert out.read_text().splitlines()[0] == "image,x,y,z,label"
    with pytest.raises(EmaeError, match="already exists; tick 'overwrite'"):
        widgets.write_points_csv(points, data / "em.tif", out)
    widgets.write_points_csv(points, data / "em.tif", out, overwrite=True)
    (tmp_path / "notes.csv").write_text("my notes\n")
    with pytest.raises(EmaeError, match="not a labels CSV"):
        widgets.write_points_csv(points, data / "em.tif", tmp_path / "notes.csv", overwrite=True)


def test_points_without_labels_or_outside_the_image_are_refused(data, tmp_path):
    out = tmp_path / "labels.csv"
    unlabelled = Points([[0, 1, 1], [0, 2, 2], [1, 3, 3]], features={"label": ["a", "", None]})
    with pytest.raises(EmaeError, match=r"^2 of 3 points have no label \(points 1, 2\)"):
        widgets.write_points_csv(unlabelled, data / "em.tif", out)
    with pytest.raises(EmaeError, match="has no 'label' feature"):
        widgets.write_points_csv(Points([[0, 1, 1]], name="bare"), data / "em.tif", out)
    flat = Points([[1, 1]], features={"label": ["a"]})
    with pytest.raises(EmaeError, match=r"3D image \(ZYX\) takes points with 3 coordinates"):
        widgets.write_points_csv(flat, data / "em.tif", out)
    outside = Points([[0, 1, 1], [2, 1, 1]], features={"label": ["a", "b"]})
    with pytest.raises(EmaeError, match=r"point 1 .* outside the image of shape \(2, 80, 72\)"):
        widgets.write_points_csv(outside, data / "em.tif", out)
    with pytest.raises(EmaeError, match="the output is the input"):
        widgets.points_to_labels_csv([[0, 1, 1]], ["a"], data / "em.tif", data / "em.tif")
    assert not out.exists()


def test_the_manifest_validates_and_its_commands_resolve():
    import npe2

    path = resources.files("emae.napari") / "napari.yaml"
    manifest = npe2.PluginManifest.from_file(str(path))
    assert manifest.name == "emae"
    for command in manifest.contributions.commands:
        module, name = command.python_name.split(":")
        assert callable(getattr(import_module(module), name))
    assert {r.command for r in manifest.contributions.readers} == {"emae.get_reader"}
    assert [w.display_name for w in manifest.contributions.widgets] == [
        "Score with a model",
        "Points to labels CSV",
    ]
    # The factories' options name real parameters, and the annotations resolve for magicgui.
    for factory, function in (
        (widgets.score_widget, widgets.score_image_layer),
        (widgets.points_widget, widgets.write_points_csv),
    ):
        assert set(factory.keywords["param_options"]) <= set(typing.get_type_hints(function))


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
def test_the_plugin_is_declared_in_pyproject():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["napari.manifest"] == {
        "emae": "emae.napari:napari.yaml"
    }
    extra = project["project"]["optional-dependencies"]["napari"]
    assert {e.split(">")[0] for e in extra} == {"napari", "npe2", "napari-ome-zarr"}
    assert "napari/napari.yaml" in project["tool"]["setuptools"]["package-data"]["emae"]


def test_npe2_finds_the_plugin_and_reads_with_it(tmp_path):
    from importlib.metadata import entry_points

    import npe2

    if not [e for e in entry_points(group="napari.manifest") if e.name == "emae"]:
        pytest.skip("emae is installed without its napari entry point; reinstall it")
    write_tiff(tmp_path / "m.tif", np.ones((8, 8), np.float32), axes="YX", kind="anomaly map")
    manager = npe2.PluginManager.instance()
    manager.discover()
    readers = [r.command for r in manager.iter_compatible_readers([str(tmp_path / "m.tif")])]
    assert "emae.get_reader" in readers
    [(_, kwargs, kind)] = npe2.read([str(tmp_path / "m.tif")], stack=False, plugin_name="emae")
    assert kind == "image" and kwargs["name"] == "anomaly (m.tif)"
