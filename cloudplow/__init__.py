"""cloudplow: quota-aware staged uploads of a media library through a pool of rclone accounts."""

from importlib import metadata

try:
    # The installed distribution's version (pyproject.toml), so one number is released and logged.
    __version__ = metadata.version("cloudplow")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
