"""Seeded, reproducible workloads for bench/simulate.py, as cloudplow queues.

Every workload is a list of `QueuedFile` sorted by path, as a scan returns it
(the order plain rclone and shell loops upload in). Sizes are decimal bytes.

- `media`: a library as Plex/Jellyfin users keep it: films of 1 to 60 GB and
  TV episodes of 0.3 to 5 GB, each with its small companions (nfo, artwork,
  subtitles: a few kB to a few MB), plus season and show artwork; about half
  the bytes are films.
- `large`: files of 10 to 80 GB, uniform (remuxes, disk images).
- `small`: files of 0.1 to 100 MB, uniform (music, photos, documents).
- a file of sizes, one integer of bytes per line (`--sizes`): a user's library.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from cloudplow.scan import QueuedFile

KB = 10**3
MB = 10**6
GB = 10**9


def _lognormal_between(rng: random.Random, median: float, sigma: float, low: float, high: float) -> int:
    return int(min(high, max(low, rng.lognormvariate(math.log(median), sigma))))


def _uniform(rng: random.Random, low: float, high: float) -> int:
    return int(rng.uniform(low, high))


def media(total_bytes: int, seed: int = 1) -> list[QueuedFile]:
    """Given a total, return a media library of about that many bytes."""
    rng = random.Random(seed)
    files: list[tuple[str, int]] = []
    film_bytes = tv_bytes = 0
    film_number = show_number = 0
    while film_bytes + tv_bytes < total_bytes:
        if film_bytes <= tv_bytes:
            film_number += 1
            folder = f"Movies/Film {film_number:05d} ({1950 + film_number % 75})"
            name = folder.split("/")[1]
            size = _lognormal_between(rng, 8 * GB, 0.9, 1 * GB, 60 * GB)
            film_bytes += size
            files.append((f"{folder}/{name}.mkv", size))
            files.append((f"{folder}/{name}.nfo", _uniform(rng, 2 * KB, 20 * KB)))
            files.append((f"{folder}/poster.jpg", _uniform(rng, 100 * KB, 3 * MB)))
            files.append((f"{folder}/fanart.jpg", _uniform(rng, 300 * KB, 5 * MB)))
            for language in ("en", "fr", "de")[: rng.randint(0, 3)]:
                files.append((f"{folder}/{name}.{language}.srt", _uniform(rng, 30 * KB, 150 * KB)))
        else:
            show_number += 1
            show = f"TV/Show {show_number:04d}"
            files.append((f"{show}/tvshow.nfo", _uniform(rng, 2 * KB, 10 * KB)))
            files.append((f"{show}/poster.jpg", _uniform(rng, 200 * KB, 3 * MB)))
            files.append((f"{show}/fanart.jpg", _uniform(rng, 500 * KB, 5 * MB)))
            quality = rng.choice((0.5, 1.2, 2.5))  # SD, 720p, 1080p medians in GB
            for season in range(1, rng.randint(1, 8) + 1):
                folder = f"{show}/Season {season:02d}"
                files.append((f"{folder}/season{season:02d}-poster.jpg", _uniform(rng, 200 * KB, 2 * MB)))
                for episode in range(1, rng.randint(6, 24) + 1):
                    stem = f"{folder}/Show {show_number:04d} - S{season:02d}E{episode:02d}"
                    size = _lognormal_between(rng, quality * GB, 0.35, 0.3 * GB, 5 * GB)
                    tv_bytes += size
                    files.append((f"{stem}.mkv", size))
                    files.append((f"{stem}.nfo", _uniform(rng, 1 * KB, 10 * KB)))
                    files.append((f"{stem}-thumb.jpg", _uniform(rng, 50 * KB, 500 * KB)))
                    files.append((f"{stem}.en.srt", _uniform(rng, 20 * KB, 120 * KB)))
    return _queue(files)


def uniform(total_bytes: int, low: int, high: int, seed: int = 1, prefix: str = "file") -> list[QueuedFile]:
    """Given a total and a size range, return files of uniform sizes adding up to about the total."""
    rng = random.Random(seed)
    files: list[tuple[str, int]] = []
    total = 0
    while total < total_bytes:
        size = _uniform(rng, low, high)
        total += size
        files.append((f"{prefix}/{len(files) // 1000:05d}/{prefix}-{len(files):08d}.bin", size))
    return _queue(files)


def large(total_bytes: int, seed: int = 1) -> list[QueuedFile]:
    return uniform(total_bytes, 10 * GB, 80 * GB, seed, "large")


def small(total_bytes: int, seed: int = 1) -> list[QueuedFile]:
    return uniform(total_bytes, 100 * KB, 100 * MB, seed, "small")


def from_sizes_file(path: Path) -> list[QueuedFile]:
    """
    Given a file with one integer of bytes per line (blank lines and lines
    starting with # ignored), return one queued file per size, in file order.
    Raise ValueError naming the line of anything else.
    """
    files: list[tuple[str, int]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if not text.isdigit():
            raise ValueError(f"{path}:{number}: expected an integer of bytes, got {text!r}")
        files.append((f"file-{len(files):08d}", int(text)))
    return [QueuedFile(name, size, 0.0) for name, size in files]


def _queue(files: list[tuple[str, int]]) -> list[QueuedFile]:
    return [QueuedFile(path, size, 0.0) for path, size in sorted(files)]
