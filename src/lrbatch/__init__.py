"""lrbatch: how the best learning rate changes with the batch size, measured."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lrbatch")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
