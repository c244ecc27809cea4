"""Writers: TIFF and OME-Zarr round trips, atomicity, overwrite rules and NGFF metadata."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr

from emae.errors import EmaeError
from emae.io import (
    build_pyramid,
    create_ome_zarr,
    open_image,
    validate_ngff,
    write_image,
    write_ome_zarr,
    write_tiff,
    writers,
)

RNG = np.random.default_rng(1)
STACK = RNG.integers(0, 255, (2, 37, 45)).astype(np.uint8)


@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize("axes", ["YX", "ZYX"])
def test_write_tiff_round_trip(tmp_path: Path, compression: str | None, axes: str) -> None:
    array = STACK if axes == "ZYX" else STACK[0]
    path = write_tiff(tmp_path / "out.tif", array, axes=axes, compression=compression)
    image = open_image(path)
    assert image.axes == axes
    np.testing.assert_array_equal(image[:], array)
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]  # no temporary file left


def test_write_tiff_tiles_compressed_and_uses_bigtiff_when_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = np.zeros((600, 700), np.float32)
    write_tiff(tmp_path / "tiled.tif", big, axes="YX", compression="zlib")
    with tifffile.TiffFile(tmp_path / "tiled.tif") as tif:
        assert tif.pages[0].is_tiled and not tif.is_bigtiff
    monkeypatch.setattr(writers, "BIGTIFF_BYTES", 100)
    write_tiff(tmp_path / "big.tif", STACK, axes="ZYX")
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.is_bigtiff
    np.testing.assert_array_equal(open_image(tmp_path / "big.tif")[:], STACK)


def test_write_tiff_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "out.tif"
    write_tiff(path, STACK[0], axes="YX")
    with pytest.raises(EmaeError, match="already exists"):
        write_tiff(path, STACK[1], axes="YX")
    np.testing.assert_array_equal(open_image(path)[:], STACK[0])
    write_tiff(path, STACK[1], axes="YX", overwrite=True)
    np.testing.assert_array_equal(open_image(path)[:], STACK[1])
    with pytest.raises(EmaeError, match="axes"):
        write_tiff(tmp_path / "bad.tif", STACK, axes="YX")


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(writers.tifffile, "imwrite", boom)
    with pytest.raises(OSError, match="disk full"):
        write_tiff(tmp_path / "out.tif", STACK, axes="ZYX")
    assert list(tmp_path.iterdir()) == []


def test_write_ome_zarr_metadata_and_levels(tmp_path: Path) -> None:
    path = write_ome_zarr(
        tmp_path / "img.zarr", STACK, axes="ZYX", chunks=(1, 16, 16), pixel_size=(50, 4, 4)
    )
    attrs = zarr.open_group(path, mode="r").attrs.asdict()
    validate_ngff(attrs)
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4"
    assert ms["axes"][0] == {"name": "z", "type": "space", "unit": "nanometer"}
    assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2"]
    assert ms["datasets"][2]["coordinateTransformations"][0]["scale"] == [50.0, 16.0, 16.0]
    assert (path / "0" / ".zarray").is_file() and (path / "0" / "1" / "2" / "0").is_file()
    shapes = [open_image(path, scale=s).shape for s in range(3)]
    assert shapes == [(2, 37, 45), (2, 19, 23), (2, 10, 12)]
    level1 = open_image(path, scale=1)[:]
    expected = STACK[:, :36, :44].reshape(2, 18, 2, 22, 2).mean(axis=(2, 4))
    np.testing.assert_array_equal(level1[:, :18, :22], np.rint(expected).astype(np.uint8))
    np.testing.assert_array_equal(
        level1[:, 18, :22], np.rint(STACK[:, 36, :44].reshape(2, 22, 2).mean(-1))
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.zarr"]


def test_create_fill_and_build_pyramid_matches_write(tmp_path: Path) -> None:
    array = RNG.random((3, 50, 70)).astype(np.float32)
    write_ome_zarr(tmp_path / "ref.zarr", array, axes="ZYX", chunks=(1, 16, 16))
    group = create_ome_zarr(
        tmp_path / "out.zarr", array.shape, array.dtype, axes="ZYX", chunks=(1, 16, 16)
    )
    for z in range(3):
        for y in range(0, 50, 16):
            group["0"][z, y : y + 16] = array[z, y : y + 16]
    build_pyramid(tmp_path / "out.zarr")
    for level in range(3):
        np.testing.assert_array_equal(
            open_image(tmp_path / "out.zarr", scale=level)[:],
            open_image(tmp_path / "ref.zarr", scale=level)[:],
        )


def test_ome_zarr_overwrite_rules(tmp_path: Path) -> None:
    path = tmp_path / "img.zarr"
    write_ome_zarr(path, STACK[0], axes="YX")
    with pytest.raises(EmaeError, match="already exists"):
        write_ome_zarr(path, STACK[1], axes="YX")
    write_ome_zarr(path, STACK[1], axes="YX", overwrite=True)
    np.testing.assert_array_equal(open_image(path)[:], STACK[1])
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me")
    with pytest.raises(EmaeError, match="not an emae image store"):
        write_ome_zarr(precious, STACK[0], axes="YX", overwrite=True)
    with pytest.raises(EmaeError, match="not an emae image store"):
        create_ome_zarr(precious, (4, 4), "uint8", axes="YX", overwrite=True)
    assert (precious / "thesis.txt").read_text() == "keep me"
    (tmp_path / "empty.zarr").mkdir()
    write_ome_zarr(tmp_path / "empty.zarr", STACK[0], axes="YX")


def test_write_image_dispatches_on_suffix(tmp_path: Path) -> None:
    for name in ("a.tif", "b.zarr"):
        np.testing.assert_array_equal(
            open_image(write_image(tmp_path / name, STACK, axes="ZYX"))[:], STACK
        )
    with pytest.raises(EmaeError, match=r"cannot write '\.png'"):
        write_image(tmp_path / "c.png", STACK, axes="ZYX")
    with pytest.raises(EmaeError, match="dtype complex64"):
        write_image(tmp_path / "d.zarr", STACK.astype(np.complex64), axes="ZYX")


def _valid_attrs() -> dict[str, Any]:
    axes = [
        {"name": n, "type": t}
        for n, t in [
            ("t", "time"),
            ("c", "channel"),
            ("z", "space"),
            ("y", "space"),
            ("x", "space"),
        ]
    ]
    scale = {"type": "scale", "scale": [1, 1, 1, 1, 1]}
    datasets = [{"path": "0", "coordinateTransformations": [scale]}]
    return {"multiscales": [{"version": "0.4", "axes": axes, "datasets": datasets}]}


def _break(attrs: dict[str, Any], change: str) -> dict[str, Any]:
    attrs = copy.deepcopy(attrs)
    ms = attrs["multiscales"][0]
    if change == "no multiscales":
        return {}
    if change == "empty multiscales":
        attrs["multiscales"] = []
    elif change == "no version":
        del ms["version"]
    elif change == "unknown version":
        ms["version"] = "0.1"
    elif change == "no axes":
        del ms["axes"]
    elif change == "duplicate axis":
        ms["axes"][3]["name"] = "x"
    elif change == "one space axis":
        del ms["axes"][3:]
    elif change == "space before channel":
        ms["axes"][1], ms["axes"][2] = ms["axes"][2], ms["axes"][1]
    elif change == "no datasets":
        ms["datasets"] = []
    elif change == "dataset without path":
        del ms["datasets"][0]["path"]
    elif change == "no transforms":
        del ms["datasets"][0]["coordinateTransformations"]
    elif change == "translation first":
        ms["datasets"][0]["coordinateTransformations"] = [
            {"type": "translation", "translation": [0] * 5}
        ]
    elif change == "scale of wrong length":
        ms["datasets"][0]["coordinateTransformations"][0]["scale"] = [1, 1, 1]
    return attrs


BROKEN = [
    ("no multiscales", "multiscales"),
    ("empty multiscales", "multiscales"),
    ("no version", "version"),
    ("unknown version", "version"),
    ("no axes", "axes"),
    ("duplicate axis", "unique"),
    ("one space axis", "space"),
    ("space before channel", "ordered"),
    ("no datasets", "datasets"),
    ("dataset without path", "path"),
    ("no transforms", "coordinateTransformations"),
    ("translation first", "scale"),
    ("scale of wrong length", "5 values"),
]


def test_validate_ngff_accepts_valid_v04_and_v05() -> None:
    attrs = _valid_attrs()
    validate_ngff(attrs)
    ms = attrs["multiscales"][0]
    del ms["version"]
    validate_ngff({"ome": {"version": "0.5", "multiscales": [ms]}})


@pytest.mark.parametrize(("change", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_validate_ngff_names_what_is_wrong(change: str, message: str) -> None:
    with pytest.raises(EmaeError, match=message) as info:
        validate_ngff(_break(_valid_attrs(), change), path="img.zarr")
    assert str(info.value).startswith("img.zarr: ") and "\n" not in str(info.value)


def test_channel_axis_images_carry_channel_names_and_build_pyramids(tmp_path):
    import zarr

    from emae.io.ngff import validate_ngff
    from emae.io.ome_zarr import build_pyramid, create_ome_zarr

    path = tmp_path / "probs.zarr"
    create_ome_zarr(
        path,
        (3, 2, 40, 30),
        "uint8",
        axes="CZYX",
        chunks=(1, 1, 16, 16),
        channel_names=["clean", "dust", "fold"],
    )
    group = zarr.open_group(str(path), mode="r+")
    validate_ngff(group.attrs.asdict())
    axes = group.attrs["multiscales"][0]["axes"]
    assert [a["type"] for a in axes] == ["channel", "space", "space", "space"]
    assert [c["label"] for c in group.attrs["omero"]["channels"]] == ["clean", "dust", "fold"]
    group["0"][1] = 200
    build_pyramid(path)
    assert group["1"].shape == (3, 2, 20, 15) and (group["1"][1] == 200).all()
    assert (group["1"][0] == 0).all()
    with pytest.raises(EmaeError, match="channel name"):
        create_ome_zarr(tmp_path / "x.zarr", (2, 8, 8), "uint8", axes="CYX")


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_pyramid_means_of_small_integers_in_float32_equal_float64(dtype: str) -> None:
    """Levels of uint8 probabilities and uint16 images are averaged in float32: exactly the
    float64 result, odd edges included."""
    from emae.io.ome_zarr import _downsample_mean

    info = np.iinfo(dtype) if dtype != "float32" else None
    rng = np.random.default_rng(0)
    for shape in [(3, 8, 6), (2, 7, 9), (1, 1, 5)]:
        if info is None:
            block = rng.normal(size=shape).astype(dtype)
        else:
            block = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
        pad = [(0, 0), (0, shape[1] % 2), (0, shape[2] % 2)]
        wide = np.pad(block.astype(np.float64), pad, mode="edge")
        h, w = wide.shape[1] // 2, wide.shape[2] // 2
        expected = wide.reshape(shape[0], h, 2, w, 2).mean(axis=(-3, -1))
        if info is not None:
            expected = np.rint(expected)
        got = _downsample_mean(block, np.dtype(dtype))
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, expected.astype(dtype))
