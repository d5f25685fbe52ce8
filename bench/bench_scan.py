"""Benchmark of cloudplow.scan on a synthetic media library (not run by the tests).

Builds a tree of N sparse files (default 1,000,000) under a temporary folder in
/tmp, laid out like a library (shows / seasons / episodes, a few partial and
hidden files, a .unionfs folder), scans it the way an upload session does, and
reports the scan time and the peak resident memory. The tree is removed
afterwards.

    .venv/bin/python bench/bench_scan.py [N] [--files-per-directory 25] [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path

from cloudplow.scan import open_files_under, scan

DIRECTORIES_PER_PARENT = 100
MIN_AGE_SECONDS = 300.0
EXCLUDES = ("**partial~", "**_HIDDEN~", ".unionfs/**")


def build_tree(root: Path, file_count: int, files_per_directory: int, now: float) -> int:
    """
    Given an empty folder, a number of files and how many go in one folder,
    create that many sparse files with log-uniform sizes (1 kB to 50 GB) and
    mtimes over the last week; return how many are young enough to be skipped.
    """
    generator = random.Random(1)  # the same tree every run
    young = 0
    created = 0
    directory_index = 0
    while created < file_count:
        show, season = divmod(directory_index, DIRECTORIES_PER_PARENT)
        directory = os.path.join(root, f"Show {show:05d}", f"Season {season:02d}")
        if directory_index % 997 == 0:
            directory = os.path.join(root, ".unionfs", f"Show {show:05d}")
        os.makedirs(directory)
        for episode in range(min(files_per_directory, file_count - created)):
            name = f"Show {show:05d} - S{season:02d}E{episode:02d} - Episode Title.mkv"
            if created % 101 == 0:
                name += ".partial~"
            elif created % 103 == 0:
                name += "_HIDDEN~"
            size = int(10 ** generator.uniform(3, 10.7))
            age = generator.uniform(0, 7 * 86400)
            young += age < MIN_AGE_SECONDS
            descriptor = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.ftruncate(descriptor, size)
                os.utime(descriptor, (now - age, now - age))
            finally:
                os.close(descriptor)
            created += 1
        directory_index += 1
    return young


def bare_walk(root: Path) -> int:
    """
    Given a folder, walk it with os.scandir and lstat every regular file, doing
    nothing else; return the file count. This is the floor any scan pays in
    system calls, measured to put the scan time in context on a busy machine.
    """
    file_count = 0
    pending = [os.fspath(root)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    entry.stat(follow_symlinks=False)
                    file_count += 1
                elif entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
    return file_count


def peak_rss_mebibytes() -> float:
    """Return this process's peak resident set size so far, in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="?", type=int, default=1_000_000, help="number of files")
    parser.add_argument("--files-per-directory", type=int, default=25)
    parser.add_argument("--runs", type=int, default=2, help="scans of the same tree")
    arguments = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="cloudplow-bench-scan-", dir="/tmp"))
    try:
        now = time.time()
        started = time.perf_counter()
        build_tree(root, arguments.files, arguments.files_per_directory, now)
        print(f"built {arguments.files:,} files in {time.perf_counter() - started:.1f} s at {root}")
        baseline_rss = peak_rss_mebibytes()

        started = time.perf_counter()
        open_files = open_files_under(root)
        print(f"open_files_under: {time.perf_counter() - started:.3f} s, {len(open_files)} open")

        for run in range(1, arguments.runs + 1):
            started = time.perf_counter()
            bare_walk(root)
            print(f"bare scandir+lstat walk {run}: {time.perf_counter() - started:.2f} s")
            started = time.perf_counter()
            result = scan(
                root,
                now=now,
                min_age_seconds=MIN_AGE_SECONDS,
                exclude=EXCLUDES,
                exclude_open_files=True,
            )
            elapsed = time.perf_counter() - started
            print(
                f"scan run {run}: {elapsed:.2f} s "
                f"({arguments.files / elapsed:,.0f} files/s), "
                f"{len(result.files):,} queued, {result.distribution.total_bytes / 1e12:.1f} TB, "
                f"skipped young={result.skipped_young} excluded={result.skipped_excluded} "
                f"open={result.skipped_open} unreadable={result.skipped_unreadable}"
            )
            # Let this result go before the next run, so the peak is one scan's.
            del result
        peak_rss = peak_rss_mebibytes()
        print(
            f"peak RSS: {peak_rss:.0f} MiB (before scanning {baseline_rss:.0f} MiB, "
            f"scan adds {peak_rss - baseline_rss:.0f} MiB, "
            f"{(peak_rss - baseline_rss) * 1024 * 1024 / arguments.files:.0f} bytes per file)"
        )
    finally:
        started = time.perf_counter()
        shutil.rmtree(root)
        print(f"removed the tree in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
