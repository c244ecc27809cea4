"""Whole volumes: tiling, chunk tasks on Dask, connected components, QC, label images."""
