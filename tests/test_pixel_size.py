"""Physical pixel sizes read from files written by other tools, and the --pixel-size option."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile
import zarr

from emae.errors import EmaeError
from emae.io import open_image
from emae.io.pixel_size import parse_pixel_size, to_nm

VOLUME = np.random.default_rng(0).integers(0, 255, (3, 64, 48), dtype=np.uint8)


def test_ome_zarr_written_by_ome_zarr_py(tmp_path):
    from ome_zarr.writer import write_image

    group = zarr.open_group(str(tmp_path / "a.zarr"), mode="w")
    write_image(
        VOLUME,
        group,
        axes="zyx",
        scale={"z": 30.0, "y": 4.0, "x": 4.0},
        axes_units={a: "nanometer" for a in "zyx"},
        scale_factors=(2,),
        storage_options={"chunks": (1, 32, 32)},
    )
    assert open_image(tmp_path / "a.zarr").pixel_size == (30.0, 4.0, 4.0)
    assert open_image(tmp_path / "a.zarr", scale=1).pixel_size == (30.0, 8.0, 8.0)


def test_ome_tiff_in_micrometers(tmp_path):
    tifffile.imwrite(
        tmp_path / "a.ome.tif",
        VOLUME,
        ome=True,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 0.004,
            "PhysicalSizeY": 0.004,
            "PhysicalSizeZ": 0.03,
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeYUnit": "µm",
            "PhysicalSizeZUnit": "µm",
        },
    )
    assert open_image(tmp_path / "a.ome.tif").pixel_size == pytest.approx((30.0, 4.0, 4.0))


def test_imagej_tiff_resolution_and_spacing(tmp_path):
    tifffile.imwrite(
        tmp_path / "a.tif",
        VOLUME,
        imagej=True,
        resolution=(1 / 0.004, 1 / 0.005),
        metadata={"spacing": 0.03, "unit": "um", "axes": "ZYX"},
    )
    assert open_image(tmp_path / "a.tif").pixel_size == pytest.approx((30.0, 5.0, 4.0))


def test_a_print_resolution_in_inches_is_no_pixel_size(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", VOLUME[0], resolution=(72, 72), resolutionunit="INCH")
    assert open_image(tmp_path / "a.tif").pixel_size is None
    tifffile.imwrite(
        tmp_path / "b.tif", VOLUME[0], resolution=(1e5, 1e5), resolutionunit="CENTIMETER"
    )
    assert open_image(tmp_path / "b.tif").pixel_size == pytest.approx((100.0, 100.0))


def test_hdf5_element_size_um(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["raw"] = VOLUME
        f["raw"].attrs["element_size_um"] = [0.03, 0.004, 0.004]
    assert open_image(f"{tmp_path / 'a.h5'}:/raw").pixel_size == pytest.approx((30.0, 4.0, 4.0))


def test_files_without_sizes_and_the_user_override(tmp_path):
    np.save(tmp_path / "a.npy", VOLUME)
    image = open_image(tmp_path / "a.npy")
    assert image.pixel_size is None and image.pixel_size_text() == "unknown"
    given = image.with_pixel_size(parse_pixel_size("30,4,4"))
    assert given.pixel_size == (30.0, 4.0, 4.0) and given.pixel_size_text() == "30 x 4 x 4 nm"
    assert image.with_pixel_size(parse_pixel_size("4")).pixel_size == (None, 4.0, 4.0)
    assert parse_pixel_size("0.004um,4nm") == pytest.approx((4.0, 4.0))
    with pytest.raises(EmaeError, match="--pixel-size: cannot read 'four'"):
        parse_pixel_size("four")
    assert to_nm(3, "furlong") is None
