"""harness: measure what weight decay really does with your optimizer (Loshchilov & Hutter)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("harness")  # the one version: pyproject.toml, via package metadata
except PackageNotFoundError:  # a source tree on PYTHONPATH that was never installed
    __version__ = "0+unknown"
