"""Sizes and durations at the edges: parse what users write, format what they read.

Inside cloudplow sizes are always integers of bytes and durations floats of
seconds; this module is the only place that knows about "750GB" or "12h".
"""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)(b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(value: object) -> int:
    """
    Given a size as users write it, return it in bytes.

    `750GB` is decimal (10^9), `750GiB` binary (2^30), and rclone's bare
    suffix `750G` is binary too, as rclone reads it. A plain integer is bytes.
    Raise ValueError for anything else, including negative sizes and booleans.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 750GB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative, got {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as 750GB, got {value!r}")
    match = _SIZE_RE.match(value)
    if not match:
        raise ValueError(f"expected a size such as 750GB, 750GiB, 750G or bytes, got {value!r}")
    number, prefix, binary, byte_suffix = match.groups()
    power = _POWERS[prefix.lower()]
    if binary and not prefix:
        raise ValueError(f"expected a size such as 750GB, 750GiB, 750G or bytes, got {value!r}")
    decimal = bool(byte_suffix) and not binary and power > 0
    base = 1000 if decimal else 1024
    size = float(number) * base**power
    if not size.is_integer() and power == 0:
        raise ValueError(f"a size in bytes must be a whole number, got {value!r}")
    return int(size)


def parse_duration(value: object) -> float:
    """
    Given a duration as users write it (`30s`, `5m`, `12h`, `1d`, `1h30m` or a
    number of seconds), return it in seconds. Raise ValueError otherwise.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30m, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as 30m, got {value!r}")
    text = value.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    if not text or _DURATION_RE.sub("", text) != "":
        raise ValueError(f"expected a duration such as 30s, 5m, 12h or 1d, got {value!r}")
    return sum(float(n) * _DURATION_SECONDS[unit] for n, unit in _DURATION_RE.findall(text))


def format_size(size_bytes: float) -> str:
    """Given bytes, return a short decimal size for people, such as `1.50 GB`."""
    sign = "-" if size_bytes < 0 else ""
    remaining = abs(float(size_bytes))
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if remaining < 1000 or unit == "TB":
            return f"{sign}{remaining:.0f} {unit}" if unit == "B" else f"{sign}{remaining:.2f} {unit}"
        remaining /= 1000
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """Given seconds, return a short duration for people, such as `3h12m` or `45s`."""
    seconds = max(0, round(seconds))
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    text = "".join(parts)
    if not days and not hours and (seconds or not text):
        text += f"{seconds}s"
    return text
