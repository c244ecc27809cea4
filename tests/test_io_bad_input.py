"""Bad input: each problem is one EmaeError line naming the file, and input files stay untouched."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image as PILImage

from emae.data.normalization import PercentileNormalizer, check_finite
from emae.errors import EmaeError
from emae.io import expand_inputs, open_image, write_ome_zarr

RNG = np.random.default_rng(2)
PAGE = RNG.integers(0, 255, (64, 64)).astype(np.uint8)


def _tiff(path: Path, array: np.ndarray = PAGE, **kwargs) -> str:
    tifffile.imwrite(path, array, photometric=kwargs.pop("photometric", "minisblack"), **kwargs)
    return str(path)


def _truncate(path: Path, keep: float = 0.5) -> str:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return str(path)


def _nan_array() -> np.ndarray:
    array = PAGE.astype(np.float32)
    array[40, 50] = np.nan
    return array


def missing(tmp: Path) -> str:
    return str(tmp / "nowhere.tif")


def empty_tiff(tmp: Path) -> str:
    (tmp / "empty.tif").write_bytes(b"")
    return str(tmp / "empty.tif")


def empty_npy(tmp: Path) -> str:
    (tmp / "empty.npy").write_bytes(b"")
    return str(tmp / "empty.npy")


def truncated_tiff(tmp: Path) -> str:
    return _truncate(Path(_tiff(tmp / "cut.tif", np.stack([PAGE] * 4))))


def truncated_tiled_tiff(tmp: Path) -> str:
    return _truncate(Path(_tiff(tmp / "cut.tif", tile=(16, 16), compression="zlib")), 0.7)


def text_as_tiff(tmp: Path) -> str:
    (tmp / "notes.tif").write_text("these are my notes, not an image\n")
    return str(tmp / "notes.tif")


def corrupt_png(tmp: Path) -> str:
    (tmp / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    return str(tmp / "bad.png")


def rgb_tiff(tmp: Path) -> str:
    return _tiff(tmp / "rgb.tif", np.stack([PAGE] * 3, axis=-1), photometric="rgb")


def npy(name: str, array: np.ndarray) -> Callable[[Path], str]:
    def make(tmp: Path) -> str:
        np.save(tmp / name, array, allow_pickle=True)
        return str(tmp / name)

    make.__name__ = name.replace(".npy", "")
    return make


def unsupported_extension(tmp: Path) -> str:
    PILImage.fromarray(PAGE).save(tmp / "image.bmp")
    return str(tmp / "image.bmp")


def zarr_not_a_store(tmp: Path) -> str:
    (tmp / "x.zarr").mkdir()
    (tmp / "x.zarr" / "readme.txt").write_text("hello")
    return str(tmp / "x.zarr")


def zarr_plain_group(tmp: Path) -> str:
    group = zarr.open_group(tmp / "g.zarr", mode="w", zarr_format=2)
    group.create_array("raw", shape=(4, 4), dtype="uint8")
    return str(tmp / "g.zarr")


def zarr_corrupt_metadata(tmp: Path) -> str:
    (tmp / "c.zarr").mkdir()
    (tmp / "c.zarr" / ".zarray").write_text("{not json")
    return str(tmp / "c.zarr")


def ome_broken_metadata(tmp: Path) -> str:
    write_ome_zarr(tmp / "b.zarr", PAGE, axes="YX")
    group = zarr.open_group(tmp / "b.zarr", mode="r+")
    ms = group.attrs["multiscales"]
    del ms[0]["datasets"][0]["coordinateTransformations"]
    group.attrs["multiscales"] = ms
    return str(tmp / "b.zarr")


def ome_channels(tmp: Path) -> str:
    group = zarr.open_group(tmp / "c.zarr", mode="w", zarr_format=2)
    group.create_array("0", shape=(3, 8, 8), dtype="uint8")
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}]
    axes.append({"name": "x", "type": "space"})
    scale = [{"type": "scale", "scale": [1, 1, 1]}]
    ms = {
        "version": "0.4",
        "axes": axes,
        "datasets": [{"path": "0", "coordinateTransformations": scale}],
    }
    group.attrs["multiscales"] = [ms]
    return str(tmp / "c.zarr")


def hdf5_missing_dataset(tmp: Path) -> str:
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp / "v.h5", "w") as f:
        f["raw"] = PAGE
        f["labels/mask"] = PAGE
    return f"{tmp / 'v.h5'}:/predictions"


def hdf5_no_dataset_named(tmp: Path) -> str:
    return hdf5_missing_dataset(tmp).split(":/")[0]


def folder(arrays: list[np.ndarray], name: str) -> Callable[[Path], str]:
    def make(tmp: Path) -> str:
        (tmp / "sections").mkdir()
        for i, array in enumerate(arrays):
            tifffile.imwrite(tmp / "sections" / f"s{i}.tif", array)
        return str(tmp / "sections")

    make.__name__ = name
    return make


def empty_folder(tmp: Path) -> str:
    (tmp / "nothing").mkdir()
    return str(tmp / "nothing")


# (make the input, problem expected in the message)
OPEN_CASES = [
    (missing, "no such file"),
    (empty_tiff, "empty"),
    (empty_npy, "empty"),
    (truncated_tiff, "truncated"),
    (truncated_tiled_tiff, "truncated"),
    (text_as_tiff, "not a readable TIFF"),
    (corrupt_png, "not a readable PNG"),
    (rgb_tiff, "channels"),
    (npy("4d.npy", np.zeros((2, 3, 8, 8), np.uint8)), "expected a 2D"),
    (npy("1d.npy", np.zeros(100, np.uint8)), "expected a 2D"),
    (npy("complex.npy", np.zeros((8, 8), np.complex64)), "dtype complex64"),
    (npy("bool.npy", np.zeros((8, 8), bool)), "dtype bool"),
    (npy("object.npy", np.array([[None, 1]], dtype=object)), "not a readable .npy"),
    (unsupported_extension, "unsupported file type '.bmp'"),
    (zarr_not_a_store, "not a zarr array or OME-Zarr group"),
    (zarr_plain_group, "without OME-Zarr 'multiscales'.*g.zarr/raw"),
    (zarr_corrupt_metadata, "zarr metadata"),
    (ome_broken_metadata, "coordinateTransformations"),
    (ome_channels, "3 channels"),
    (hdf5_missing_dataset, "'/predictions' not found; available datasets: /labels/mask, /raw"),
    (hdf5_no_dataset_named, "name a dataset"),
    (folder([PAGE, PAGE[:32]], "mixed_shapes"), "s1.tif: section of shape \\(32, 64\\)"),
    (folder([PAGE, PAGE.astype(np.uint16)], "mixed_dtypes"), "s1.tif: .*dtype uint16"),
    (folder([PAGE, np.stack([PAGE, PAGE])], "stack_in_folder"), "s1.tif: section of shape"),
    (empty_folder, "no zarr store"),
]


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _expect_one_line_error(action: Callable[[], object], source: str, message: str) -> None:
    with pytest.raises(EmaeError, match=message) as info:
        action()
    text = str(info.value)
    assert "\n" not in text
    assert Path(source.split(":/")[0]).name in text


@pytest.mark.parametrize(("make", "message"), OPEN_CASES, ids=[c[0].__name__ for c in OPEN_CASES])
def test_open_bad_input(tmp_path: Path, make: Callable[[Path], str], message: str) -> None:
    source = make(tmp_path)
    before = _hashes(tmp_path)
    _expect_one_line_error(lambda: open_image(source), source, message)
    assert _hashes(tmp_path) == before


def test_ome_level_out_of_range(tmp_path: Path) -> None:
    write_ome_zarr(tmp_path / "img.zarr", PAGE, axes="YX", n_levels=2)
    before = _hashes(tmp_path)
    source = str(tmp_path / "img.zarr")
    message = "scale level 2 out of range; available levels: 0 \\('0'\\), 1 \\('1'\\)"
    _expect_one_line_error(lambda: open_image(source, scale=2), source, message)
    _expect_one_line_error(lambda: open_image(source, scale=-1), source, "scale must be >= 0")
    assert _hashes(tmp_path) == before


@pytest.mark.parametrize("suffix", [".tif", ".npy"])
def test_nan_is_reported_with_the_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"nan{suffix}"
    _tiff(path, _nan_array()) if suffix == ".tif" else np.save(path, _nan_array())
    before = _hashes(tmp_path)
    image = open_image(path)
    _expect_one_line_error(lambda: check_finite(image), str(path), "NaN or infinite.*y=40, x=50")
    _expect_one_line_error(lambda: PercentileNormalizer.fit(image), str(path), "NaN")
    assert _hashes(tmp_path) == before


def test_nan_found_by_sampling_a_large_image(tmp_path: Path) -> None:
    array = np.full((512, 512), np.nan, np.float32)
    np.save(tmp_path / "nan.npy", array)
    image = open_image(tmp_path / "nan.npy")
    _expect_one_line_error(
        lambda: check_finite(image, 10_000, seed=0), str(tmp_path / "nan.npy"), "patch at"
    )


def test_corrupt_chunk_fails_on_read_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "img.zarr"
    write_ome_zarr(path, PAGE, axes="YX", chunks=(32, 32), n_levels=1)
    (path / "0" / "1" / "1").write_bytes(b"definitely not blosc")
    before = _hashes(tmp_path)
    image = open_image(path)
    np.testing.assert_array_equal(image[:32, :32], PAGE[:32, :32])
    _expect_one_line_error(lambda: image[32:, 32:], str(path), "cannot read region")
    assert _hashes(tmp_path) == before


def test_hdf5_without_h5py_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "v.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    monkeypatch.setitem(sys.modules, "h5py", None)
    source = f"{tmp_path / 'v.h5'}:/raw"
    _expect_one_line_error(lambda: open_image(source), source, "needs h5py")


def test_expand_inputs_bad_patterns(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("text")
    before = _hashes(tmp_path)
    cases = [
        (str(tmp_path / "missing.tif"), "no such file"),
        (f"{tmp_path}/*.tif", "matches no image"),
        (str(tmp_path / "notes.txt"), "unsupported file type '.txt'"),
        (str(tmp_path), "no zarr store"),
    ]
    for pattern, message in cases:
        _expect_one_line_error(lambda p=pattern: expand_inputs([p]), pattern, message)
    assert _hashes(tmp_path) == before


def test_tiff_codec_needing_imagecodecs(tmp_path: Path) -> None:
    try:
        import imagecodecs  # noqa: F401

        pytest.skip("imagecodecs is installed")
    except ImportError:
        pass
    path = Path(_tiff(tmp_path / "lzw.tif", compression="zlib"))
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].tags["Compression"].valueoffset
    data = bytearray(path.read_bytes())
    data[offset : offset + 2] = (5).to_bytes(2, "little")  # claim LZW compression
    path.write_bytes(bytes(data))
    _expect_one_line_error(lambda: open_image(path), str(path), "LZW .*imagecodecs")
