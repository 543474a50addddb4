"""The installed essencekit version; a leaf module, so reading it imports nothing else of ours."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("essencekit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
