"""Tests for cloudplow.scan: real temporary trees, rclone glob semantics, open files, sizes."""

from __future__ import annotations

import errno
import fnmatch
import json
import math
import os
import re
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cloudplow import scan as scan_module
from cloudplow.scan import (
    HISTOGRAM_BUCKETS,
    QueuedFile,
    ScanResult,
    compile_excludes,
    open_files_under,
    scan,
    size_distribution,
)

NOW = 1_700_000_000.0
HOUR = 3600.0
DESIGN_EXCLUDES = ("**partial~", "**_HIDDEN~", ".unionfs/**")
on_linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="open files are read from /proc"
)


def write_file(path: Path, size: int, mtime: float) -> None:
    """Given a path, a size and an mtime, create that file (sparse, so sizes cost no disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size)
    os.utime(path, (mtime, mtime))


def scan_all(source: Path, **overrides: Any) -> ScanResult:
    """Given a source, return scan() with settings that let every old file through."""
    settings: dict[str, Any] = {
        "now": NOW,
        "min_age_seconds": 0.0,
        "exclude": (),
        "exclude_open_files": False,
    }
    settings.update(overrides)
    return scan(source, **settings)


def paths_of(result: ScanResult) -> list[str]:
    return [queued.path for queued in result.files]


class FakeListing:
    """A stand-in for an os.scandir iterator that can reorder entries or fail part way."""

    def __init__(
        self,
        real: Any,
        *,
        reverse: bool = False,
        before_yield: Callable[[os.DirEntry[str]], None] | None = None,
        fail_after: int | None = None,
        failure: OSError | None = None,
    ) -> None:
        self._real = real
        entries = list(real)
        self._entries: Iterator[os.DirEntry[str]] = iter(entries[::-1] if reverse else entries)
        self._before_yield = before_yield
        self._fail_after = fail_after
        self._failure = failure or OSError(errno.EIO, "Input/output error")
        self._yielded = 0

    def __enter__(self) -> FakeListing:
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()

    def close(self) -> None:
        self._real.close()

    def __iter__(self) -> FakeListing:
        return self

    def __next__(self) -> os.DirEntry[str]:
        if self._fail_after is not None and self._yielded >= self._fail_after:
            raise self._failure
        entry = next(self._entries)
        if self._before_yield is not None:
            self._before_yield(entry)
        self._yielded += 1
        return entry


@pytest.fixture
def media_tree(tmp_path: Path) -> Path:
    source = tmp_path / "Media"
    write_file(source / "Movies" / "Heat (1995)" / "Heat.mkv", 4_000_000_000, NOW - 10 * HOUR)
    write_file(source / "Movies" / "Heat (1995)" / "Heat.en.srt", 80_000, NOW - 9 * HOUR)
    write_file(source / "TV" / "Show" / "Season 01" / "S01E01.mkv", 1_500_000_000, NOW - 5 * HOUR)
    write_file(source / "TV" / "Show" / "Season 01" / "S01E02.mkv", 1_600_000_000, NOW - 4 * HOUR)
    write_file(source / "readme.txt", 0, NOW - 48 * HOUR)
    return source


# --- walking a real tree ---------------------------------------------------


def test_scan_lists_nested_files_with_size_and_mtime_sorted_by_path(media_tree: Path) -> None:
    result = scan_all(media_tree)

    assert result.files == (
        QueuedFile("Movies/Heat (1995)/Heat.en.srt", 80_000, NOW - 9 * HOUR),
        QueuedFile("Movies/Heat (1995)/Heat.mkv", 4_000_000_000, NOW - 10 * HOUR),
        QueuedFile("TV/Show/Season 01/S01E01.mkv", 1_500_000_000, NOW - 5 * HOUR),
        QueuedFile("TV/Show/Season 01/S01E02.mkv", 1_600_000_000, NOW - 4 * HOUR),
        QueuedFile("readme.txt", 0, NOW - 48 * HOUR),
    )
    assert result.oldest_mtime == NOW - 48 * HOUR
    assert result.distribution.count == 5
    assert result.distribution.total_bytes == 7_100_080_000
    assert result.distribution.max == 4_000_000_000
    assert (
        result.skipped_young,
        result.skipped_excluded,
        result.skipped_open,
        result.skipped_unreadable,
    ) == (0, 0, 0, 0)


def test_scan_accepts_a_string_source_and_an_empty_folder(tmp_path: Path) -> None:
    result = scan_all(tmp_path)

    assert result.files == ()
    assert result.oldest_mtime is None
    assert result.distribution.count == 0


def test_scan_raises_when_the_source_itself_is_missing(tmp_path: Path) -> None:
    # An unmounted source must not look like an empty queue.
    with pytest.raises(FileNotFoundError):
        scan_all(tmp_path / "not-mounted")


def test_scan_raises_when_the_source_is_a_file(tmp_path: Path) -> None:
    write_file(tmp_path / "file", 1, NOW - HOUR)
    with pytest.raises(NotADirectoryError):
        scan_all(tmp_path / "file")


def test_scan_order_is_independent_of_listing_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # "a.b" < "a/b" < "a0" in code point order: a walk that sorts per directory
    # would put "a/b" first.
    for relative in ("a/b", "a.b", "a0", "B", "b", "a/a/z", "é", "z"):
        write_file(tmp_path / relative, 1, NOW - HOUR)
    listed_in_order = scan_all(tmp_path)

    real_scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda path: FakeListing(real_scandir(path), reverse=True))
    listed_reversed = scan_all(tmp_path)

    assert listed_reversed == listed_in_order
    assert paths_of(listed_in_order) == ["B", "a.b", "a/a/z", "a/b", "a0", "b", "z", "é"]


# --- minimum age -----------------------------------------------------------


def test_min_age_uses_the_given_now(tmp_path: Path) -> None:
    min_age = 300.0
    write_file(tmp_path / "old.mkv", 10, NOW - 3600)
    write_file(tmp_path / "exactly-old-enough.mkv", 10, NOW - min_age)
    write_file(tmp_path / "almost.mkv", 10, NOW - min_age + 0.5)
    write_file(tmp_path / "fresh.mkv", 10, NOW - 1)
    write_file(tmp_path / "future.mkv", 10, NOW + 60)

    result = scan_all(tmp_path, min_age_seconds=min_age)

    assert paths_of(result) == ["exactly-old-enough.mkv", "old.mkv"]
    assert result.skipped_young == 3
    assert result.oldest_mtime == NOW - 3600


def test_min_age_follows_now_not_the_wall_clock(tmp_path: Path) -> None:
    write_file(tmp_path / "x.mkv", 10, NOW)

    assert scan_all(tmp_path, now=NOW + 299, min_age_seconds=300).skipped_young == 1
    assert paths_of(scan_all(tmp_path, now=NOW + 300, min_age_seconds=300)) == ["x.mkv"]


# --- rclone exclude patterns -----------------------------------------------

EXCLUDE_CASES = [
    # pattern, relative path, is_dir, excluded
    ("*.partial~", "x.partial~", False, True),
    ("*.partial~", "a/b/x.partial~", False, True),
    ("*.partial~", "a/x.partial~.mkv", False, False),
    ("*.partial~", "a.partial~", True, False),  # no "/" and no "**": a file rule only
    ("b/*.mkv", "a/b/x.mkv", False, True),
    ("b/*.mkv", "b/x.mkv", False, True),
    ("b/*.mkv", "ab/x.mkv", False, False),
    ("b/*.mkv", "a/b/c/x.mkv", False, False),
    ("/top.mkv", "top.mkv", False, True),
    ("/top.mkv", "a/top.mkv", False, False),
    ("/Movies/*.nfo", "Movies/x.nfo", False, True),
    ("/Movies/*.nfo", "TV/Movies/x.nfo", False, False),
    ("?.mkv", "a.mkv", False, True),
    ("?.mkv", "d/a.mkv", False, True),
    ("?.mkv", "ab.mkv", False, False),
    ("a?b", "a/b", False, False),
    ("[ab].mkv", "a.mkv", False, True),
    ("[ab].mkv", "c.mkv", False, False),
    ("[a-c]x", "bx", False, True),
    ("[a-c]x", "dx", False, False),
    ("[^ab].mkv", "c.mkv", False, True),
    ("[^ab].mkv", "a.mkv", False, False),
    # rclone hands classes to Go's regexp, where "!" is a literal, not negation.
    ("[!a].mkv", "!.mkv", False, True),
    ("[!a].mkv", "b.mkv", False, False),
    ("[[:digit:]]*.mkv", "1x.mkv", False, True),
    ("[[:digit:]]*.mkv", "x1.mkv", False, False),
    (r"[\]]x", "]x", False, True),
    ("*.{mkv,mp4}", "x.mkv", False, True),
    ("*.{mkv,mp4}", "d/x.mp4", False, True),
    ("*.{mkv,mp4}", "x.avi", False, False),
    ("{a,b{c,d}}.txt", "bd.txt", False, True),
    ("{a,b{c,d}}.txt", "b.txt", False, False),
    ("{{\\d{4}}}.mkv", "1999.mkv", False, True),
    ("{{\\d{4}}}.mkv", "199.mkv", False, False),
    ("a\\*b", "a*b", False, True),
    ("a\\*b", "axb", False, False),
    ("*.mkv", "x.mkv\n", False, False),  # "$" would match before the newline
    # the sample excludes from DESIGN.md
    ("**partial~", "Movies/Heat.mkv.partial~", False, True),
    ("**partial~", "partial~", False, True),
    ("**partial~", "Movies/Heat.mkv", False, False),
    ("**partial~", "x.partial~", True, False),  # directories are matched as "x.partial~/"
    ("**_HIDDEN~", "TV/Show/S01E01.mkv_HIDDEN~", False, True),
    ("**_HIDDEN~", "TV/Show_HIDDEN~/S01E01.mkv", False, False),
    (".unionfs/**", ".unionfs", True, True),
    (".unionfs/**", ".unionfs/Movies/x.mkv_HIDDEN~", False, True),
    (".unionfs/**", "Movies/.unionfs/x", False, True),
    (".unionfs/**", "x.unionfs/y", False, False),
    (".unionfs/**", ".unionfs", False, False),
    # directory rules: excluding "dir/" is excluding "dir/**"
    ("tmp/", "tmp", True, True),
    ("tmp/", "a/tmp", True, True),
    ("tmp/", "tmp", False, False),
    ("tmp/", "tmp/x.mkv", False, True),
    ("tmp/", "tmpx", True, False),
    ("/tmp/", "a/tmp", True, False),
    ("dir/**", "dir", True, True),
    ("dir/**", "dir/x", False, True),
    ("dir/**", "a/dir/x/y", False, True),
    ("dir/**", "adir/x", False, False),
    ("dir/**", "dir", False, False),
    ("/dir/**", "a/dir", True, False),
    ("**", "any/thing/at/all", False, True),
    ("**", "d", True, True),
    ("*", "a/x", False, True),
    ("*", "d", True, True),  # rclone adds "/**" as a directory rule for "*"
]


@pytest.mark.parametrize(("pattern", "relative_path", "is_dir", "excluded"), EXCLUDE_CASES)
def test_exclude_patterns_follow_rclone(
    pattern: str, relative_path: str, is_dir: bool, excluded: bool
) -> None:
    assert compile_excludes([pattern])(relative_path, is_dir) is excluded


def test_several_exclude_patterns_combine() -> None:
    is_excluded = compile_excludes(DESIGN_EXCLUDES)

    assert is_excluded("Movies/a.mkv.partial~", False)
    assert is_excluded("Movies/a.mkv_HIDDEN~", False)
    assert is_excluded(".unionfs", True)
    assert not is_excluded("Movies/a.mkv", False)
    assert not is_excluded("Movies", True)
    assert not compile_excludes([])("anything", False)


INVALID_PATTERNS = [
    *("***", "a***b"),  # too many stars
    *("ab[c", "ab]c", "[]", "[z-a]", "[a[b]"),  # character classes
    *("ab{c", "ab}c", "{{(}}", "{{a"),  # braces and embedded regexps
    "a\\",  # trailing backslash
]


@pytest.mark.parametrize("pattern", INVALID_PATTERNS)
def test_invalid_exclude_patterns_raise_naming_the_pattern(pattern: str) -> None:
    with pytest.raises(ValueError, match="invalid exclude pattern"):
        compile_excludes([pattern])


@given(
    pattern=st.text(alphabet="ab*?", min_size=1, max_size=8),
    name=st.text(alphabet="ab", min_size=1, max_size=8),
)
def test_globs_match_like_fnmatch_within_one_path_element(pattern: str, name: str) -> None:
    assume("***" not in pattern)
    assert compile_excludes([pattern])(name, False) is fnmatch.fnmatchcase(name, pattern)


def rclone_file_rule(glob: str) -> re.Pattern[str]:
    """
    Given a glob over the characters "ab/*?", return the regexp rclone's
    globToRegexp builds for it, searched as rclone searches it.
    """
    anchor = "^" if glob.startswith("/") else "(^|/)"
    body = glob.removeprefix("/")
    body = re.sub(r"\*\*|\*|\?", lambda wild: {"**": ".*", "*": "[^/]*", "?": "[^/]"}[wild[0]], body)
    return re.compile(anchor + body + r"\Z", re.DOTALL)


@given(
    globs=st.lists(st.text(alphabet="ab/*?", max_size=7), min_size=1, max_size=3),
    path=st.text(alphabet="ab/", min_size=1, max_size=9),
)
def test_combined_rules_match_what_rclone_searches_for(globs: list[str], path: str) -> None:
    assume(not any("***" in glob or glob.endswith("/") for glob in globs))
    # rclone applies a glob to files unless it is a directory rule; "**" makes
    # it apply to both, which does not change the file answer.
    expected = any(rclone_file_rule(glob).search(path) for glob in globs)
    assert compile_excludes(globs)(path, False) is expected


def test_scan_applies_the_design_excludes_and_prunes_excluded_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_file(tmp_path / "Movies" / "Heat.mkv", 100, NOW - HOUR)
    write_file(tmp_path / "Movies" / "Heat.mkv.partial~", 50, NOW - HOUR)
    write_file(tmp_path / "TV" / "S01E01.mkv_HIDDEN~", 0, NOW - HOUR)
    write_file(tmp_path / ".unionfs" / "Movies" / "Old.mkv_HIDDEN~", 0, NOW - HOUR)
    write_file(tmp_path / "Downloads" / "tmp" / "a.mkv", 10, NOW - HOUR)
    listed: list[str] = []
    real_scandir = os.scandir

    def recording_scandir(path: str) -> Any:
        listed.append(os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", recording_scandir)
    result = scan_all(tmp_path, exclude=[*DESIGN_EXCLUDES, "tmp/"])

    assert paths_of(result) == ["Movies/Heat.mkv"]
    # two files, plus the ".unionfs" and "Downloads/tmp" directories once each
    assert result.skipped_excluded == 4
    assert str(tmp_path / ".unionfs") not in listed
    assert str(tmp_path / "Downloads" / "tmp") not in listed


def test_scan_rejects_an_invalid_pattern_before_walking(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'\*\*\*'"):
        scan_all(tmp_path, exclude=["***"])


# --- what is not a regular file ---------------------------------------------


def test_symlinks_and_special_files_are_skipped(tmp_path: Path) -> None:
    source = tmp_path / "source"
    outside = tmp_path / "outside"
    write_file(source / "real.mkv", 10, NOW - HOUR)
    write_file(outside / "elsewhere.mkv", 10, NOW - HOUR)
    (source / "link-to-file.mkv").symlink_to(source / "real.mkv")
    (source / "link-to-dir").symlink_to(outside, target_is_directory=True)
    (source / "dangling.mkv").symlink_to(tmp_path / "nothing-here")
    os.mkfifo(source / "pipe")

    result = scan_all(source)

    assert paths_of(result) == ["real.mkv"]
    assert (
        result.skipped_young,
        result.skipped_excluded,
        result.skipped_open,
        result.skipped_unreadable,
    ) == (0, 0, 0, 0)


# --- unreadable and vanishing entries ---------------------------------------


def test_a_directory_that_cannot_be_listed_is_counted_and_the_walk_goes_on(
    media_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = str(media_tree / "TV" / "Show")
    real_scandir = os.scandir

    def scandir_refusing_one(path: str) -> Any:
        if os.fspath(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir_refusing_one)
    result = scan_all(media_tree)

    assert result.skipped_unreadable == 1
    assert paths_of(result) == [
        "Movies/Heat (1995)/Heat.en.srt",
        "Movies/Heat (1995)/Heat.mkv",
        "readme.txt",
    ]


def _scan_without_privileges(source: Path) -> tuple[list[str], int]:
    """
    Given a source, scan it as an unprivileged user and return the paths found
    and skipped_unreadable. As root, where permission bits do not stop reads,
    the scan runs in a child process that has dropped to uid/gid 65534.
    """
    if os.geteuid() != 0:
        result = scan_all(source)
        return paths_of(result), result.skipped_unreadable
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        exit_status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            result = scan_all(source)
            message = {"paths": paths_of(result), "unreadable": result.skipped_unreadable}
            exit_status = 0
        except BaseException:
            message = {"error": traceback.format_exc()}
        with os.fdopen(write_end, "w") as pipe:
            json.dump(message, pipe)
        os._exit(exit_status)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        message = json.load(pipe)
    _, wait_status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0, message.get("error")
    return message["paths"], message["unreadable"]


def test_a_directory_without_read_permission_is_counted_and_the_walk_goes_on() -> None:
    # Not under tmp_path: its parents are private to root, and the scan runs
    # as an unprivileged user that must reach the tree.
    source = Path(tempfile.mkdtemp(prefix="cloudplow-scan-"))
    try:
        write_file(source / "open" / "a.mkv", 10, NOW - HOUR)
        write_file(source / "locked" / "secret.mkv", 10, NOW - HOUR)
        for directory in (source, source / "open"):
            directory.chmod(0o755)
        (source / "open" / "a.mkv").chmod(0o644)
        (source / "locked").chmod(0o000)

        paths, unreadable = _scan_without_privileges(source)
    finally:
        (source / "locked").chmod(0o755)
        shutil.rmtree(source)

    assert paths == ["open/a.mkv"]
    assert unreadable == 1


def test_a_directory_removed_mid_walk_is_skipped_silently(
    media_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doomed = str(media_tree / "TV" / "Show" / "Season 01")
    real_scandir = os.scandir

    def scandir_after_removal(path: str) -> Any:
        if path == doomed:
            # Moved out of the source rather than deleted: rmtree itself calls
            # os.scandir, which is patched here.
            os.rename(doomed, media_tree.parent / "moved-away")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir_after_removal)
    result = scan_all(media_tree)

    assert "TV/Show/Season 01/S01E01.mkv" not in paths_of(result)
    assert len(result.files) == 3
    assert result.skipped_unreadable == 0


def test_a_file_removed_between_listing_and_stat_is_skipped_silently(
    media_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_scandir = os.scandir

    def remove_one(entry: os.DirEntry[str]) -> None:
        if entry.name == "Heat.mkv":
            os.unlink(entry.path)

    monkeypatch.setattr(os, "scandir", lambda path: FakeListing(real_scandir(path), before_yield=remove_one))
    result = scan_all(media_tree)

    assert "Movies/Heat (1995)/Heat.mkv" not in paths_of(result)
    assert len(result.files) == 4
    assert result.skipped_unreadable == 0


def test_a_listing_that_fails_part_way_keeps_what_was_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a.mkv", "b.mkv", "c.mkv"):
        write_file(tmp_path / "flaky" / name, 1, NOW - HOUR)
    write_file(tmp_path / "fine.mkv", 1, NOW - HOUR)
    flaky = str(tmp_path / "flaky")
    real_scandir = os.scandir

    def scandir_failing_in_one(path: str) -> Any:
        listing = real_scandir(path)
        if os.fspath(path) == flaky:
            return FakeListing(listing, fail_after=1)
        return listing

    monkeypatch.setattr(os, "scandir", scandir_failing_in_one)
    result = scan_all(tmp_path)

    assert result.skipped_unreadable == 1
    assert len(result.files) == 2
    assert "fine.mkv" in paths_of(result)


def test_a_listing_whose_directory_vanishes_part_way_is_not_unreadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a.mkv", "b.mkv"):
        write_file(tmp_path / "going" / name, 1, NOW - HOUR)
    going = str(tmp_path / "going")
    real_scandir = os.scandir
    vanished = FileNotFoundError(errno.ENOENT, "No such file or directory")

    def scandir_vanishing(path: str) -> Any:
        listing = real_scandir(path)
        if path == going:
            return FakeListing(listing, fail_after=1, failure=vanished)
        return listing

    monkeypatch.setattr(os, "scandir", scandir_vanishing)
    result = scan_all(tmp_path)

    assert result.skipped_unreadable == 0
    assert len(result.files) == 1


# --- open files ---------------------------------------------------------------


@on_linux_only
def test_open_files_under_finds_a_file_this_process_holds_open(tmp_path: Path) -> None:
    busy = tmp_path / "Movies" / "busy.mkv"
    idle = tmp_path / "Movies" / "idle.mkv"
    write_file(busy, 10, NOW - HOUR)
    write_file(idle, 10, NOW - HOUR)
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere.mkv"
    write_file(elsewhere, 10, NOW - HOUR)
    try:
        directory_descriptor = os.open(tmp_path / "Movies", os.O_RDONLY)
        try:
            with open(busy, "rb"), open(elsewhere, "rb"):
                found = open_files_under(tmp_path)
        finally:
            os.close(directory_descriptor)
    finally:
        elsewhere.unlink()

    assert os.path.realpath(busy) in found
    assert os.path.realpath(idle) not in found
    assert os.path.realpath(elsewhere) not in found
    assert os.path.realpath(tmp_path / "Movies") not in found  # a directory, not a file
    assert open_files_under(tmp_path) == set()


@on_linux_only
def test_scan_skips_a_file_held_open_through_a_symlinked_source(tmp_path: Path) -> None:
    real_source = tmp_path / "real"
    write_file(real_source / "Movies" / "busy.mkv", 10, NOW - HOUR)
    write_file(real_source / "Movies" / "done.mkv", 10, NOW - HOUR)
    linked_source = tmp_path / "linked"
    linked_source.symlink_to(real_source, target_is_directory=True)

    with open(linked_source / "Movies" / "busy.mkv", "ab"):
        skipping = scan_all(linked_source, exclude_open_files=True)
        not_skipping = scan_all(linked_source, exclude_open_files=False)

    assert paths_of(skipping) == ["Movies/done.mkv"]
    assert skipping.skipped_open == 1
    assert paths_of(not_skipping) == ["Movies/busy.mkv", "Movies/done.mkv"]
    assert not_skipping.skipped_open == 0


def test_scan_uses_an_explicit_open_file_set(tmp_path: Path) -> None:
    write_file(tmp_path / "a.mkv", 10, NOW - HOUR)
    write_file(tmp_path / "b.mkv", 10, NOW - HOUR)
    open_files = {os.path.realpath(tmp_path / "b.mkv")}

    result = scan_all(tmp_path, exclude_open_files=True, open_files=open_files)
    ignored = scan_all(tmp_path, exclude_open_files=False, open_files=open_files)

    assert paths_of(result) == ["a.mkv"]
    assert result.skipped_open == 1
    assert paths_of(ignored) == ["a.mkv", "b.mkv"]


def test_open_files_under_is_empty_without_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan_module.sys, "platform", "darwin")
    with open(tmp_path / "x", "wb"):
        assert open_files_under(tmp_path) == set()


# --- size distribution ----------------------------------------------------------


def test_size_distribution_exact_nearest_rank_percentiles() -> None:
    one_to_hundred = size_distribution(list(range(100, 0, -1)))
    assert (one_to_hundred.p50, one_to_hundred.p90, one_to_hundred.p95, one_to_hundred.p99) == (
        50,
        90,
        95,
        99,
    )
    assert one_to_hundred.max == 100
    assert one_to_hundred.total_bytes == 5050

    # 95% of 20 is exactly rank 19; a float product lands on 19.000000000000004 or
    # 18.999999999999996 depending on the factor, and a ceiling would move it.
    twenty = size_distribution(list(range(1, 21)))
    assert (twenty.p50, twenty.p90, twenty.p95, twenty.p99) == (10, 18, 19, 20)

    single = size_distribution([7])
    assert (single.p50, single.p99, single.max, single.count) == (7, 7, 7, 1)

    skewed = size_distribution([1] * 9 + [1_000])
    assert (skewed.p50, skewed.p90, skewed.p95) == (1, 1, 1_000)


def test_size_distribution_of_nothing_is_zeros() -> None:
    empty = size_distribution([])
    assert (empty.count, empty.total_bytes, empty.p50, empty.p99, empty.max) == (0, 0, 0, 0, 0)
    assert empty.buckets == tuple((bound, 0) for bound in HISTOGRAM_BUCKETS)


def test_size_distribution_buckets_are_cumulative_and_inclusive() -> None:
    sizes = [0, 1_000_000, 1_000_001, 5_000_000_000, 200_000_000_000]
    buckets = dict(size_distribution(sizes).buckets)

    assert buckets[1e6] == 2  # "le": a size equal to the bound falls in it
    assert buckets[1e7] == 3
    assert buckets[5e9] == 4
    assert buckets[1e11] == 4
    assert buckets[math.inf] == 5
    assert [bound for bound, _ in size_distribution(sizes).buckets] == list(HISTOGRAM_BUCKETS)


def test_histogram_bounds_are_the_agreed_ones() -> None:
    agreed = (1e6, 1e7, 1e8, 5e8, 1e9, 2e9, 5e9, 1e10, 2e10, 5e10, 1e11, math.inf)
    assert agreed == HISTOGRAM_BUCKETS


def test_size_distribution_rejects_negative_sizes() -> None:
    with pytest.raises(ValueError, match="negative"):
        size_distribution([5, -1])


def test_size_distribution_to_dict_is_json() -> None:
    as_dict = size_distribution([1, 2_000_000]).to_dict()

    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["count"] == 2
    assert as_dict["total_bytes"] == 2_000_001
    assert as_dict["buckets"][0] == {"le": 1_000_000, "count": 1}
    assert as_dict["buckets"][-1] == {"le": "+Inf", "count": 2}


@given(st.lists(st.integers(min_value=0, max_value=10**12), max_size=300))
def test_size_distribution_invariants(sizes: list[int]) -> None:
    distribution = size_distribution(sizes)

    assert distribution.count == len(sizes)
    assert distribution.total_bytes == sum(sizes)
    assert distribution.p50 <= distribution.p90 <= distribution.p95 <= distribution.p99
    assert distribution.p99 <= distribution.max
    counts = [count for _, count in distribution.buckets]
    assert counts == sorted(counts)
    assert counts[-1] == len(sizes)
    assert distribution.buckets[-1][0] == math.inf
    for bound, count in distribution.buckets:
        assert count == sum(1 for size in sizes if size <= bound)
    if sizes:
        assert distribution.max == max(sizes)
        assert distribution.p50 in sizes
        # nearest rank: at least half of the sizes are at most p50
        assert sum(1 for size in sizes if size <= distribution.p50) * 2 >= len(sizes)


def test_scan_distribution_matches_its_files(media_tree: Path) -> None:
    result = scan_all(media_tree)

    assert result.distribution == size_distribution([queued.size for queued in result.files])


def test_a_name_with_a_newline_is_not_queued(tmp_path: Path) -> None:
    (tmp_path / "two\nlines.mkv").write_bytes(b"x")
    (tmp_path / "fine.mkv").write_bytes(b"x")

    result = scan(tmp_path, now=10**10, min_age_seconds=0, exclude=(), exclude_open_files=False)

    assert [queued.path for queued in result.files] == ["fine.mkv"]
    assert result.skipped_unreadable == 1
