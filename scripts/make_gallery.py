"""Write ``docs/images/gallery.png``: every synthetic artifact type on a synthetic section.

Usage: ``python scripts/make_gallery.py [--seed N] [--size PIXELS]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emae.synth.gallery import write_gallery

OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "gallery.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the section and artifacts")
    parser.add_argument("--size", type=int, default=256, help="section height = width, pixels")
    args = parser.parse_args()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    path = write_gallery(OUT, seed=args.seed, size=args.size)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
