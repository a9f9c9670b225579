"""harness: measure what weight decay really does with your optimizer (Loshchilov & Hutter)."""

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "harness-wd"  # pyproject.toml's name (PyPI's `harness` is another package)

UNKNOWN_VERSION = "0+unknown"  # a source tree on PYTHONPATH that was never installed
__version__ = UNKNOWN_VERSION
for _name in (DISTRIBUTION, "harness"):  # "harness": an install made before the rename
    try:
        __version__ = version(_name)  # the one version: pyproject.toml, via package metadata
        break
    except PackageNotFoundError:
        continue
