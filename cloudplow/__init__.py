"""cloudplow: quota-aware staged uploads of a media library through a pool of rclone accounts."""

__version__ = "0.1.0"
