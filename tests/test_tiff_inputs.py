"""Files written by other tools go through ``emae info``, ``emae score`` and ``emae detect``.

Every case holds the same pixels, so every reader must give the same map; the input file must be
left byte for byte as it was. Reader-level tests cover TIFF stores (never "missing chunks") and
TIFFs whose pages were saved as separate series.
"""

from __future__ import annotations

import hashlib
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from emae.cli import main
from emae.errors import EmaeError
from emae.io import open_image
from emae.synth.tissue import make_volume, to_uint8

VOLUME = to_uint8(make_volume((2, 128, 128), seed=7))
GRAY = {"photometric": "minisblack"}  # a (Z, Y, X) stack, not planar RGB
DETECT = ["--chunk", "64", "--tile", "48", "--overlap", "16", "--scheduler", "synchronous"]


# Writers of other tools: each writes VOLUME (or its first section) under `tmp` and returns the
# source to pass to emae and the file or folder that holds it.


def tiff_contiguous(tmp: Path) -> tuple[str, Path]:
    tifffile.imwrite(tmp / "a.tif", VOLUME, **GRAY)
    return str(tmp / "a.tif"), tmp / "a.tif"


def tiff_series_per_page(tmp: Path) -> tuple[str, Path]:
    with tifffile.TiffWriter(tmp / "a.tif") as tif:
        for section in VOLUME:
            tif.write(section)  # shape metadata per write: one series per page
    return str(tmp / "a.tif"), tmp / "a.tif"


def tiff_pages_without_metadata(tmp: Path) -> tuple[str, Path]:
    with tifffile.TiffWriter(tmp / "a.tif") as tif:
        for section in VOLUME:
            tif.write(section, metadata=None, contiguous=False)
    return str(tmp / "a.tif"), tmp / "a.tif"


def tiff_bigtiff(tmp: Path) -> tuple[str, Path]:
    tifffile.imwrite(tmp / "a.tif", VOLUME, bigtiff=True, **GRAY)
    return str(tmp / "a.tif"), tmp / "a.tif"


def tiff_tiled(tmp: Path) -> tuple[str, Path]:
    tifffile.imwrite(tmp / "a.tif", VOLUME, tile=(64, 64), **GRAY)
    return str(tmp / "a.tif"), tmp / "a.tif"


def tiff_zlib(tmp: Path) -> tuple[str, Path]:
    tifffile.imwrite(tmp / "a.tif", VOLUME, compression="zlib", rowsperstrip=32, **GRAY)
    return str(tmp / "a.tif"), tmp / "a.tif"


def tiff_tiled_zlib(tmp: Path) -> tuple[str, Path]:
    tifffile.imwrite(tmp / "a.tiff", VOLUME, tile=(64, 64), compression="zlib", **GRAY)
    return str(tmp / "a.tiff"), tmp / "a.tiff"


def hdf5(tmp: Path) -> tuple[str, Path]:
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp / "a.h5", "w") as f:
        f.create_dataset("em/raw", data=VOLUME, chunks=(1, 64, 64), compression="gzip")
    return f"{tmp / 'a.h5'}:/em/raw", tmp / "a.h5"


def png(tmp: Path) -> tuple[str, Path]:
    from PIL import Image as PILImage

    PILImage.fromarray(VOLUME[0]).save(tmp / "a.png")
    return str(tmp / "a.png"), tmp / "a.png"


def npy(tmp: Path) -> tuple[str, Path]:
    np.save(tmp / "a.npy", VOLUME)
    return str(tmp / "a.npy"), tmp / "a.npy"


def ome_zarr(tmp: Path) -> tuple[str, Path]:
    from ome_zarr.writer import write_image  # ome-zarr-py, a dev dependency

    group = zarr.open_group(str(tmp / "a.zarr"), mode="w")
    write_image(
        VOLUME, group, axes="zyx", scale_factors=(2,), storage_options={"chunks": (1, 64, 64)}
    )
    return str(tmp / "a.zarr"), tmp / "a.zarr"


WRITERS = [
    tiff_contiguous,
    tiff_series_per_page,
    tiff_pages_without_metadata,
    tiff_bigtiff,
    tiff_tiled,
    tiff_zlib,
    tiff_tiled_zlib,
    hdf5,
    png,
    npy,
    ome_zarr,
]


def sha256(path: Path) -> str:
    """Digest of a file, or of every file (names and bytes) under a folder."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        digest.update(str(f.relative_to(path.parent)).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model) -> Path:
    root = tmp_path_factory.mktemp("tiff_inputs")
    shutil.copytree(tiny_model, root / "run")
    return root / "run"


@pytest.fixture(scope="module")
def reference(run, tmp_path_factory) -> np.ndarray:
    """The score map of VOLUME given as an in-memory-like .npy: every reader must match it."""
    tmp = tmp_path_factory.mktemp("reference")
    np.save(tmp / "v.npy", VOLUME)
    assert main(["-q", "score", str(run), str(tmp / "v.npy"), "--out", str(tmp / "m.tif")]) == 0
    return tifffile.imread(tmp / "m.tif")


@pytest.mark.parametrize("write", WRITERS, ids=lambda w: w.__name__)
def test_other_tools_files_go_through_info_score_and_detect(
    write, tmp_path, run, reference, capsys
):
    (tmp_path / "in").mkdir()
    source, stored = write(tmp_path / "in")
    before = sha256(stored)
    shape = VOLUME[0].shape if write is png else VOLUME.shape
    expected = reference[0] if write is png else reference

    assert main(["info", source]) == 0
    info = capsys.readouterr().out
    assert f"shape={'x'.join(map(str, shape))} dtype=uint8" in info

    assert main(["-q", "score", str(run), source, "--out", str(tmp_path / "m.tif")]) == 0
    scored = tifffile.imread(tmp_path / "m.tif")
    assert scored.shape == shape
    np.testing.assert_allclose(scored, expected, rtol=1e-5, atol=1e-6)

    assert main(["-q", "detect", str(run), source, "--out", str(tmp_path / "d.zarr"), *DETECT]) == 0
    mapped = zarr.open_array(str(tmp_path / "d.zarr" / "0"), mode="r")[:]
    assert mapped.shape == shape
    mapped = mapped.astype(np.float32)
    assert np.isfinite(mapped).all() and mapped.std() > 0

    assert sha256(stored) == before


# Reader level


def test_tiff_stores_never_report_missing_chunks(tmp_path):
    for write in (tiff_tiled_zlib, tiff_pages_without_metadata, tiff_series_per_page):
        (tmp_path / write.__name__).mkdir()
        source, _ = write(tmp_path / write.__name__)
        assert open_image(source).data.missing_chunks is None, write.__name__
    # A real zarr store still counts the chunks that were never written.
    array = zarr.create_array(
        str(tmp_path / "part.zarr"), shape=(2, 64, 64), chunks=(1, 32, 32), dtype="uint8"
    )
    array[0] = 1
    assert open_image(tmp_path / "part.zarr").data.missing_chunks == 4


def test_pages_saved_as_series_open_as_a_lazy_stack(tmp_path, monkeypatch):
    path = tmp_path / "pages.tif"
    volume = np.concatenate([VOLUME, VOLUME[::-1, ::-1]]).astype(">u2")  # big-endian
    with tifffile.TiffWriter(path) as tif:
        tif.write(volume[0])
        tif.write(volume[1], compression="zlib")
        tif.write(volume[2], tile=(64, 64), compression="zlib")
        tif.write(volume[3], tile=(32, 32))
    assert len(tifffile.TiffFile(path).series) == 4
    image = open_image(path)
    assert image.axes == "ZYX" and image.shape == (4, 128, 128)
    assert image.dtype == np.dtype("uint16") and image.data.chunks == (1, 128, 128)
    np.testing.assert_array_equal(image[:], volume)
    np.testing.assert_array_equal(image[1:4:2, 5:70, 60:], volume[1:4:2, 5:70, 60:])
    # One section's region decodes only that page.
    opened = []
    aszarr = tifffile.TiffPage.aszarr
    monkeypatch.setattr(tifffile.TiffPage, "aszarr", lambda p, **k: opened.append(p) or aszarr(p))
    np.testing.assert_array_equal(image[2, :10, :10], volume[2, :10, :10])
    assert [p.index for p in opened] == [2]
    monkeypatch.undo()
    # It pickles by path, as every image does.
    again = pickle.loads(pickle.dumps(image))
    assert len(pickle.dumps(image)) < 1000
    np.testing.assert_array_equal(again[3], volume[3])


@pytest.mark.parametrize(
    ("pages", "found"),
    [
        ([VOLUME[0], VOLUME[1, :64]], "2 image series (1 x 128x128 uint8, 1 x 64x128 uint8)"),
        ([VOLUME[0], VOLUME[1].astype(np.float32)], "(1 x 128x128 uint8, 1 x 128x128 float32)"),
        ([VOLUME, VOLUME[0]], "2 image series (1 x 2x128x128 uint8, 1 x 128x128 uint8)"),
    ],
    ids=["shapes", "dtypes", "stack-and-page"],
)
def test_series_that_differ_are_refused_in_one_line(tmp_path, pages, found):
    path = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(path) as tif:
        for page in pages:
            tif.write(page, **GRAY)
    with pytest.raises(EmaeError) as exc:
        open_image(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: TIFF holds ") and found in message
    assert "\n" not in message
