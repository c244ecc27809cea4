"""``emae denoise``: a volume without its noise, in its own dtype, chunk by chunk.

See :mod:`emae.commands.restore` for the outputs, resuming and the chunks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emae.commands.restore import restore_volume
from emae.restore import Restorer
from emae.restore.noise import WINDOW, NoiseModel


def denoise(
    model: str | Path,
    source: str | Path,
    out: str | Path,
    *,
    precision: str = "fp32",
    noise: str | NoiseModel | None = "auto",
    window: float = WINDOW,
    **options: Any,
) -> dict[str, Any]:
    """Denoise a 2D image or ``"ZYX"`` volume into ``out`` (:mod:`emae.commands.restore`).

    Parameters
    ----------
    model
        A model folder of ``emae pretrain --model blind-spot`` (recommended: it learns from the
        noisy data alone) or ``--model denoising-ae``.
    source
        Any input :func:`emae.io.open_image` reads.
    out
        ``.zarr`` or ``.tif``/``.tiff``.
    precision
        Of the forward passes: ``"fp32"`` (default), ``"bf16"`` or ``"auto"``.
    noise
        How a blind-spot model's prediction is combined with the noisy pixel
        (:mod:`emae.restore.noise`): ``"auto"`` (default: ``"fit"`` for a blind-spot model,
        ``"off"`` for a denoising autoencoder, whose output already saw the pixel), ``"fit"``
        (a Poisson-Gaussian noise model fitted on the input), ``"A,B"`` (noise variance
        ``A * intensity + B`` in the input's units, e.g. from a calibration) or ``"off"`` (the
        prediction alone; also None); a :class:`~emae.restore.noise.NoiseModel` in Python.
    window
        Gaussian sigma (pixels) of the prior's local variance in that combination.
    **options
        ``dtype`` (None: the input's; ``"float32"``), ``overlap``, ``chunk``,
        ``workers``, ``scheduler``, ``scale``, ``retries``, ``threads``, ``device``,
        ``overwrite``, ``progress``, ``rescale``, ``pixel_size``: as for
        :func:`emae.commands.detect.detect`.

    Returns
    -------
    dict
        ``out``, ``table``, ``seconds`` and ``megapixels_per_s`` (the chunks), ``startup_seconds``,
        ``total_seconds``, ``chunks`` (done, skipped), ``noise`` (the noise model used, or
        None), ``pixels``, ``replaced_pixels``, ``clipped_pixels``.
    """
    if isinstance(noise, str) and noise not in ("auto", "fit"):
        noise = None if noise == "off" else NoiseModel.parse(noise)
    restorer = Restorer.from_folder(
        model, "denoise", precision=precision, noise=noise, window=window
    )
    return restore_volume(restorer, model, source, out, **options)
