"""Readers: every supported format opens lazily with the right axes, shape, dtype and pixels."""

from __future__ import annotations

import logging
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image as PILImage

from emae.io import expand_inputs, open_image, write_ome_zarr

RNG = np.random.default_rng(0)
STACK = RNG.integers(0, 60000, (3, 40, 50)).astype(np.uint16)


def _cast(array: np.ndarray, dtype: str) -> np.ndarray:
    return (array % 251).astype(dtype) if dtype == "uint8" else array.astype(dtype)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize(
    "layout",
    [
        {},
        {"bigtiff": True},
        {"tile": (16, 16)},
        {"tile": (16, 16), "compression": "zlib"},
        {"rowsperstrip": 8, "compression": "zlib"},
    ],
    ids=["contiguous", "bigtiff", "tiled", "tiled-zlib", "striped-zlib"],
)
def test_tiff_stack_and_page(tmp_path: Path, dtype: str, layout: dict) -> None:
    stack = _cast(STACK, dtype)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack", metadata={"axes": "ZYX"}, **layout)
    image = open_image(path)
    assert (image.axes, image.shape, image.dtype) == ("ZYX", (3, 40, 50), np.dtype(dtype))
    np.testing.assert_array_equal(image[:], stack)
    np.testing.assert_array_equal(image.read_patch(2, 5, 7, 16), stack[2, 5:21, 7:23])
    page = tmp_path / "page.tif"
    tifffile.imwrite(page, stack[1], photometric="minisblack", **layout)
    image = open_image(page)
    assert (image.axes, image.shape) == ("YX", (40, 50))
    np.testing.assert_array_equal(image[3:9, ...], stack[1, 3:9])


def test_tiff_without_axes_metadata_and_pyramid_levels(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, STACK, photometric="minisblack")  # axes stored as "QYX"
    assert open_image(path).axes == "ZYX"
    pyramid = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(pyramid) as tif:
        tif.write(STACK[0], subifds=1, photometric="minisblack", tile=(16, 16))
        tif.write(STACK[0, ::2, ::2], subfiletype=1, photometric="minisblack", tile=(16, 16))
    level = open_image(pyramid, scale=1)
    assert level.shape == (20, 25)
    np.testing.assert_array_equal(level[:], STACK[0, ::2, ::2])


def test_png_and_jpeg(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gray = (STACK[0] % 256).astype(np.uint8)
    PILImage.fromarray(gray).save(tmp_path / "g.png")
    np.testing.assert_array_equal(open_image(tmp_path / "g.png")[:], gray)
    PILImage.fromarray(STACK[0]).save(tmp_path / "g16.png")
    image = open_image(tmp_path / "g16.png")
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image[:], STACK[0])
    PILImage.fromarray(gray).save(tmp_path / "g.jpg")
    assert open_image(tmp_path / "g.jpg").shape == (40, 50)
    rgb = np.stack([gray] * 3, axis=-1)
    PILImage.fromarray(rgb).save(tmp_path / "rgb.png")
    with caplog.at_level(logging.WARNING, logger="emae.io.readers"):
        image = open_image(tmp_path / "rgb.png")
    assert "converting RGB" in caplog.text
    np.testing.assert_array_equal(image[:], gray)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_arrays_and_group_members(tmp_path: Path, zarr_format: int) -> None:
    group = zarr.open_group(tmp_path / "store.zarr", mode="w", zarr_format=zarr_format)
    group.create_array("anomaly", shape=(1, 3, 40, 50), dtype="float32", chunks=(1, 1, 16, 16))
    group["anomaly"][...] = STACK[None].astype(np.float32)
    image = open_image(tmp_path / "store.zarr" / "anomaly")
    assert (image.axes, image.shape, image.dtype) == ("ZYX", (3, 40, 50), np.float32)
    assert image.data.chunks == (1, 16, 16)
    np.testing.assert_array_equal(image[1], STACK[1])
    np.testing.assert_array_equal(image[..., 3], STACK[..., 3])
    array = zarr.create_array(tmp_path / "a.zarr", shape=(40, 50), dtype="uint16", zarr_format=2)
    array[...] = STACK[0]
    np.testing.assert_array_equal(open_image(str(tmp_path / "a.zarr"))[:], STACK[0])


def test_ome_zarr_v04_levels(tmp_path: Path) -> None:
    write_ome_zarr(tmp_path / "img.zarr", STACK, axes="ZYX", chunks=(1, 16, 16), n_levels=3)
    assert open_image(tmp_path / "img.zarr").shape == (3, 40, 50)
    assert open_image(tmp_path / "img.zarr", scale=2).shape == (3, 10, 13)
    np.testing.assert_array_equal(open_image(tmp_path / "img.zarr" / "0")[:], STACK)


def test_ome_zarr_v05_tczyx_squeezes_singletons(tmp_path: Path) -> None:
    group = zarr.open_group(tmp_path / "v5.zarr", mode="w", zarr_format=3)
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}]
    axes += [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    datasets = []
    for level, f in ((0, 1), (1, 2)):
        level_data = STACK[:, ::f, ::f][None, None]
        group.create_array(
            f"s{level}", shape=level_data.shape, dtype="uint16", chunks=(1, 1, 1, 8, 8)
        )
        group[f"s{level}"][...] = level_data
        scale = [1.0, 1.0, 40.0, 4.0 * f, 4.0 * f]
        datasets.append(
            {"path": f"s{level}", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]}
    image = open_image(tmp_path / "v5.zarr", scale=1)
    assert (image.axes, image.shape) == ("ZYX", (3, 20, 25))
    np.testing.assert_array_equal(image[2], STACK[2, ::2, ::2])


def test_hdf5_dataset(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "vol.h5", "w") as f:
        f.create_dataset("/raw/em", data=STACK, chunks=(1, 16, 16))
    image = open_image(f"{tmp_path / 'vol.h5'}:/raw/em")
    assert (image.axes, image.shape, image.path) == (
        "ZYX",
        (3, 40, 50),
        f"{tmp_path / 'vol.h5'}:/raw/em",
    )
    np.testing.assert_array_equal(image.read_patch(1, 2, 3, 8), STACK[1, 2:10, 3:11])
    np.testing.assert_array_equal(open_image(tmp_path / "vol.h5")[:], STACK)  # the only dataset


def test_npy_is_memory_mapped(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", STACK[:1])
    image = open_image(tmp_path / "a.npy")
    assert image.axes == "YX"
    assert isinstance(image.data._data, np.memmap)
    patch = image[:]
    np.testing.assert_array_equal(patch, STACK[0])
    patch[0, 0] += 1  # reads are independent, writable arrays
    assert image[0, 0] == STACK[0, 0, 0]


def test_folder_of_sections_is_a_natural_order_stack(tmp_path: Path) -> None:
    folder = tmp_path / "sections"
    folder.mkdir()
    for z, name in enumerate(["s1.tif", "s2.png", "s10.tif"]):
        if name.endswith(".png"):
            PILImage.fromarray(STACK[z]).save(folder / name)
        else:
            tifffile.imwrite(folder / name, STACK[z])
    (folder / "notes.txt").write_text("ignored")
    image = open_image(folder)
    assert (image.axes, image.shape, image.dtype) == ("ZYX", (3, 40, 50), np.uint16)
    np.testing.assert_array_equal(image[:], STACK)
    np.testing.assert_array_equal(image[2, 4:8, 1:5], STACK[2, 4:8, 1:5])
    np.testing.assert_array_equal(image[::2, 0], STACK[::2, 0])


def test_expand_inputs(tmp_path: Path) -> None:
    folder = tmp_path / "sections"
    folder.mkdir()
    for z in (1, 2, 10):
        tifffile.imwrite(folder / f"s{z}.tif", STACK[0])
    np.save(tmp_path / "a.npy", STACK)
    write_ome_zarr(tmp_path / "b.zarr", STACK, axes="ZYX")
    (tmp_path / "readme.txt").write_text("not an image")
    assert expand_inputs([folder]) == [str(folder)]
    assert expand_inputs([f"{folder}/*.tif"]) == [str(folder / f"s{z}.tif") for z in (1, 2, 10)]
    (tmp_path / "v.h5").write_bytes(b"")
    everything = expand_inputs([f"{tmp_path}/*", tmp_path / "a.npy", f"{tmp_path / 'v.h5'}:/raw"])
    expected = [tmp_path / "a.npy", tmp_path / "b.zarr", folder, tmp_path / "v.h5"]
    assert everything == [*map(str, expected), f"{tmp_path / 'v.h5'}:/raw"]


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_reading_a_patch_reads_only_nearby_chunks(tmp_path: Path) -> None:
    size, tile = 8192, 256
    full_bytes = size * size
    tiles = (np.full((tile, tile), i % 256, np.uint8) for i in range((size // tile) ** 2))
    path = tmp_path / "big.tif"
    tifffile.imwrite(
        path, tiles, shape=(size, size), dtype=np.uint8, tile=(tile, tile), compression="zlib"
    )
    store = tmp_path / "big.zarr"
    array = zarr.create_array(store, shape=(size, size), dtype="uint8", chunks=(tile, tile))
    array[4096:4352, 4096:4352] = 7

    def read_tiff() -> None:
        patch = open_image(path).read_patch(0, 4096, 4096, 256)
        assert patch.shape == (256, 256) and patch[0, 0] == (16 * 32 + 16) % 256

    def read_zarr() -> None:
        assert (open_image(store).read_patch(0, 4096, 4096, 256) == 7).all()

    assert _peak_bytes(read_tiff) < full_bytes / 16
    assert _peak_bytes(read_zarr) < full_bytes / 16


def test_images_pickle_by_source_not_by_pixels(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((512, 512), np.uint16))
    tifffile.imwrite(tmp_path / "t.tif", STACK, photometric="minisblack", tile=(16, 16))
    write_ome_zarr(tmp_path / "o.zarr", STACK, axes="ZYX", n_levels=2)
    for source, scale in [("a.npy", 0), ("t.tif", 0), ("o.zarr", 1)]:
        image = open_image(tmp_path / source, scale=scale)
        data = pickle.dumps(image)
        assert len(data) < 1000
        again = pickle.loads(data)
        assert again.shape == image.shape
        np.testing.assert_array_equal(again[:], image[:])


def test_big_endian_data_reads_in_native_order(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "be.tif", STACK, byteorder=">", photometric="minisblack")
    np.save(tmp_path / "be.npy", STACK.astype(">u2"))
    for name in ("be.tif", "be.npy"):
        image = open_image(tmp_path / name)
        assert image.dtype == np.dtype("=u2") and image[:].dtype == np.dtype("=u2")
        np.testing.assert_array_equal(image[:], STACK)


def test_opening_warns_when_every_read_decodes_a_huge_chunk(tmp_path: Path, caplog) -> None:
    import logging

    import zarr

    from emae.io import readers

    small = zarr.create_array(tmp_path / "small.zarr", shape=(64, 64), chunks=(32, 32), dtype="u1")
    big = zarr.create_array(tmp_path / "big.zarr", shape=(64, 64), chunks=(64, 64), dtype="u1")
    small[:] = big[:] = 1
    with caplog.at_level(logging.WARNING, logger="emae.io.readers"):
        readers.LARGE_CHUNK_BYTES, old = 2048, readers.LARGE_CHUNK_BYTES
        try:
            open_image(tmp_path / "small.zarr")
            assert not caplog.records
            open_image(tmp_path / "big.zarr")
        finally:
            readers.LARGE_CHUNK_BYTES = old
    assert "every read decodes a whole chunk of 64x64" in caplog.text
