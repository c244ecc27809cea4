"""Restoring EM images with autoencoders: denoising and filling holes.

:class:`~emae.restore.restorer.Restorer` turns raw tiles into restored tiles with a trained
model (a blind-spot U-Net or a denoising autoencoder for noise; an inpainting autoencoder for
holes, marked NaN in the tile); :mod:`emae.restore.cast` writes the result back into the
input's dtype. Whole volumes are restored chunk by chunk by :mod:`emae.volume.restore`, through
the same tiling and tasks as ``emae detect``; the commands are in :mod:`emae.commands.restore`.
"""

from emae.restore.cast import cast_to
from emae.restore.restorer import Restorer

__all__ = ["Restorer", "cast_to"]
