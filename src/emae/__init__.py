"""emae: find artifacts and anomalies in electron-microscopy images with autoencoders."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("emae")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
