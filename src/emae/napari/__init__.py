"""emae's napari plugin (``pip install "emae[napari]"``), declared by ``napari.yaml``.

- :mod:`emae.napari.reader`: opens map stores (``OUT.zarr``) and score TIFF maps as layers that
  overlay their source.
- :mod:`emae.napari.widgets`: "Score with a model" (the anomaly map of an image layer) and
  "Points to labels CSV" (labelled points for ``emae finetune``).

Importing this package imports neither napari nor torch; its modules do.
"""
