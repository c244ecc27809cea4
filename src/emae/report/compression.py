"""Report section of ``emae compress`` containers: rate, distortion and what the images look like.

The containers of one input (one per quality level) are measured on the same region: the first
:data:`SECTIONS` sections, at most :data:`SIDE` pixels square from the top-left corner, extended
to whole chunks so that the bits counted are exactly those of the chunks decoded. On that region
the report draws emae's rate-distortion points beside JPEG and JPEG 2000 (Pillow, on the same
pixels) and shows a crop of the original beside each level's decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emae.report.sections import Block, Section, _figure, _fmt

SECTIONS = 4
SIDE = 1024
CROP = 192


def _region(meta: dict) -> tuple[str, int, int]:
    """``--region`` text of the measured region, and its height and width."""
    shape, chunk = meta["shape"], int(meta["chunk"])
    h, w = (min(-(-min(SIDE, s) // chunk) * chunk, s) for s in shape[-2:])
    yx = f"0:{h},0:{w}"
    return (f"0:{min(SECTIONS, shape[0])},{yx}" if len(shape) == 3 else yx), h, w


def _measured(container: Path) -> dict:
    """Bits per pixel and PSNR of ``container`` on its region, with the original and decoding
    as ``(n, h, w)`` arrays."""
    from emae.commands.compress import decode_region
    from emae.compress.container import chunk_file, read_meta
    from emae.compress.quality import psnr
    from emae.io import open_image
    from emae.volume.plan import plan_sections

    meta = read_meta(container)
    region, h, w = _region(meta)
    decoded, failed = decode_region(container, region)
    image = open_image(meta["source"], scale=int(meta["scale"]))
    n = min(SECTIONS, image.n_sections)
    yx = (slice(0, h), slice(0, w))
    if image.ndim == 3:  # section by section: every reader indexes one section lazily
        original = np.stack([np.asarray(image.data[(z, *yx)]) for z in range(n)])
    else:
        original = np.asarray(image.data[yx])
    original, decoded = original.reshape(-1, h, w), decoded.reshape(-1, h, w)
    shape = (image.n_sections, *image.yx_shape)
    chunks = [c for z, cs in plan_sections(shape, int(meta["chunk"])).items() if z < n for c in cs]
    size = sum(chunk_file(container, c).stat().st_size for c in chunks if c.y0 < h and c.x0 < w)
    return {
        "container": container,
        "meta": meta,
        "bpp": 8 * size / original.size,
        "psnr": float(np.mean([psnr(a, b) for a, b in zip(original, decoded, strict=True)])),
        "original": original,
        "decoded": decoded,
        "failed": failed,
    }


def _rd_figure(rows: list[dict], peers: dict[str, list[dict]]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6), layout="constrained")
    for name, points in peers.items():
        pts = sorted(points, key=lambda p: p["bpp"])
        ax.plot([p["bpp"] for p in pts], [p["psnr"] for p in pts], "o-", ms=3, lw=1, label=name)
    ax.plot([r["bpp"] for r in rows], [r["psnr"] for r in rows], "o-", color="k", lw=2.2,
            label="emae codec")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _crops_figure(rows: list[dict]):
    import matplotlib.pyplot as plt

    original = rows[0]["original"][0]
    h, w = original.shape
    y, x = max(0, (h - CROP) // 2), max(0, (w - CROP) // 2)
    crop = (slice(y, y + CROP), slice(x, x + CROP))
    panels = [("original", original[crop])]
    panels += [(f"{r['bpp']:.3f} bpp, {r['psnr']:.1f} dB", r["decoded"][0][crop]) for r in rows]
    low, high = np.percentile(original[crop], [0.5, 99.5])
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.7), layout="constrained")
    for ax, (title, image) in zip(np.atleast_1d(axes), panels, strict=True):
        ax.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    return fig


def compression_section(containers: Sequence[Path]) -> Section | None:
    """Rate-distortion of the containers of one input, against JPEG and JPEG 2000, with crops."""
    from emae.compress.quality import classic_curve

    if not containers:
        return None
    rows = sorted((_measured(Path(c)) for c in containers), key=lambda r: r["bpp"])
    images = [im for im in rows[0]["original"]]
    peers = {}
    if rows[0]["original"].dtype == np.uint8:  # Pillow's codecs take 8-bit images
        peers = {name: classic_curve(images, name) for name in ("JPEG", "JPEG 2000")}
    table: Block = {
        "type": "table",
        "id": "compression-levels",
        "caption": "Each quality level on the measured region (PSNR against the original)",
        "header": ["container", "codec lambda", "bits per pixel", "PSNR (dB)", "ratio"],
        "rows": [
            [
                r["container"].name,
                _fmt(r["meta"]["model"].get("rd_lambda")),
                _fmt(r["bpp"]),
                _fmt(r["psnr"], 2),
                _fmt(8 * r["original"].itemsize / r["bpp"], 1),
            ]
            for r in rows
        ],
    }
    n, h, w = rows[0]["original"].shape
    blocks: list[Block] = [
        {
            "type": "kv",
            "caption": "Compression",
            "items": [
                ("input", rows[0]["meta"]["source"]),
                ("measured on", f"{n} section(s), {h} x {w} pixels from the top-left corner"),
                ("chunk", f"{rows[0]['meta']['chunk']} pixels, each decodable on its own"),
            ],
        },
        table,
        _figure(
            _rd_figure(rows, peers),
            "Rate-distortion on the measured region: emae's codecs and, on the same pixels, "
            "JPEG and JPEG 2000 (Pillow). bench/bench_compress.py compares with WebP and JPEG XL "
            "on held-out real EM.",
            "rate-distortion curves",
        ),
        _figure(_crops_figure(rows), "A crop of the first section and its decodings", "crops"),
    ]
    failed = [name for r in rows for name in r["failed"]]
    section: Section = {
        "id": "compression",
        "title": "Compression",
        "blocks": blocks,
        "highlights": [
            (
                "compression (bits per pixel, PSNR)",
                ", ".join(f"{r['bpp']:.3f} bpp / {r['psnr']:.1f} dB" for r in rows),
            )
        ],
    }
    if failed:
        lost = ", ".join(failed[:5])
        section["alerts"] = [f"{len(failed)} compressed chunk(s) could not be decoded: {lost}"]
    return section
