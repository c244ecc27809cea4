"""Image input and output: lazy readers for TIFF, zarr/OME-Zarr, HDF5, NumPy and PNG/JPEG files,
and atomic TIFF and OME-Zarr writers."""

from emae.io.image import Image
from emae.io.ngff import validate_ngff
from emae.io.ome_zarr import build_pyramid, create_ome_zarr, write_ome_zarr
from emae.io.readers import open_image
from emae.io.sources import expand_inputs
from emae.io.writers import write_image, write_tiff

__all__ = [
    "Image",
    "build_pyramid",
    "create_ome_zarr",
    "expand_inputs",
    "open_image",
    "validate_ngff",
    "write_image",
    "write_ome_zarr",
    "write_tiff",
]
