"""Rate and distortion of decoded images, and the classic codecs to compare with.

:func:`psnr` measures a decoded image against its original; :func:`classic_curve` codes the
same images with JPEG or JPEG 2000 through Pillow (no extra dependency) at several settings, so
the report can draw emae's points beside them. The full comparison, with WebP, JPEG XL and
MS-SSIM, is ``bench/bench_compress.py``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

#: Pillow settings of the classic codecs: JPEG quality, JPEG 2000 compression ratio.
CLASSIC = {"JPEG": (5, 10, 20, 40, 70, 90), "JPEG 2000": (200, 100, 50, 25, 12, 6, 3)}


def psnr(original: np.ndarray, decoded: np.ndarray, peak: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB; ``peak`` defaults to the dtype's maximum for integer
    images and to the original's range for float images."""
    a, b = np.asarray(original, np.float64), np.asarray(decoded, np.float64)
    if peak is None:
        dtype = np.asarray(original).dtype
        peak = float(np.iinfo(dtype).max) if dtype.kind in "ui" else float(np.ptp(a)) or 1.0
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def _classic(image: np.ndarray, codec: str, setting: float) -> tuple[int, np.ndarray]:
    from PIL import Image

    buffer = io.BytesIO()
    if codec == "JPEG":
        Image.fromarray(image).save(buffer, "JPEG", quality=int(setting), optimize=True)
    else:
        Image.fromarray(image).save(
            buffer, "JPEG2000", quality_mode="rates", quality_layers=[float(setting)]
        )
    data = buffer.getvalue()
    return len(data), np.asarray(Image.open(io.BytesIO(data)))


def classic_curve(images: Sequence[np.ndarray], codec: str) -> list[dict[str, float]]:
    """Mean bits per pixel and PSNR of uint8 ``images`` ``(H, W)`` coded with ``codec``
    (``"JPEG"`` or ``"JPEG 2000"``) at each of its :data:`CLASSIC` settings."""
    points = []
    for setting in CLASSIC[codec]:
        pairs = [(im, _classic(np.asarray(im, np.uint8), codec, setting)) for im in images]
        points.append(
            {
                "setting": setting,
                "bpp": float(np.mean([8 * n / im.size for im, (n, _) in pairs])),
                "psnr": float(np.mean([psnr(im, d) for im, (_, d) in pairs])),
            }
        )
    return points
