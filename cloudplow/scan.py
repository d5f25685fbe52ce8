"""The source folder becomes the upload queue here.

An upload session starts by scanning the uploader's source folder: this module
walks it once, drops what the filters say must stay (excluded names, files
still too young, files some process still has open), and hands the rest to
the planner as a sorted tuple of (path, size, mtime) together with the size
distribution that the queue metrics and the check trigger report.

    source folder ─► scan() ─► ScanResult.files ─► planner ─► stages
                                └► ScanResult.distribution ─► metrics

Exclude patterns mean what they mean to rclone (https://rclone.org/filtering/),
translated the way rclone's own `fs/filter` does it, so a line copied from an
rclone filter file excludes the same files here. Nothing in this module reads
the clock: the caller passes `now`.
"""

from __future__ import annotations

import bisect
import math
import os
import re
import stat
import sys
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

# Prometheus-style upper bounds in bytes: from subtitles and NFOs (<1 MB) up to
# 4K remuxes (50-100 GB), dense where a 750 GB daily quota makes the size of
# single files matter for planning.
HISTOGRAM_BUCKETS: tuple[float, ...] = (
    1e6,
    1e7,
    1e8,
    5e8,
    1e9,
    2e9,
    5e9,
    1e10,
    2e10,
    5e10,
    1e11,
    math.inf,
)

# The ASCII meaning RE2 (and so rclone) gives POSIX classes inside brackets;
# Python's `re` has no such syntax.
_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}

# DOTALL lets `**` cross newlines in file names; ASCII gives \d, \w and \s
# in an embedded {{regexp}} the meaning RE2 gives them.
_FLAGS = re.DOTALL | re.ASCII

_Matcher = Callable[[str], re.Match[str] | None]


@dataclass(frozen=True, slots=True)
class QueuedFile:
    """One eligible file: path relative to the source (POSIX, no "./"), size in bytes, mtime."""

    path: str
    size: int
    mtime: float


@dataclass(frozen=True)
class SizeDistribution:
    """
    Sizes of the queued files: exact nearest-rank percentiles and cumulative
    histogram counts over HISTOGRAM_BUCKETS, as (upper_bound_bytes, count) pairs
    where count is the number of files of at most that many bytes.
    """

    count: int
    total_bytes: int
    p50: int
    p90: int
    p95: int
    p99: int
    max: int
    buckets: tuple[tuple[float, int], ...]

    def to_dict(self) -> dict[str, Any]:
        """
        Given this distribution, return it as JSON-able data: the scalar fields
        as integers and "buckets" as a list of {"le": bound, "count": n}, where
        finite bounds are integers of bytes and the last bound is "+Inf".
        """
        return {
            "count": self.count,
            "total_bytes": self.total_bytes,
            "p50": self.p50,
            "p90": self.p90,
            "p95": self.p95,
            "p99": self.p99,
            "max": self.max,
            "buckets": [
                {"le": "+Inf" if math.isinf(bound) else int(bound), "count": count}
                for bound, count in self.buckets
            ],
        }


@dataclass(frozen=True)
class ScanResult:
    """
    What one scan of a source found. `files` are the eligible files sorted by
    path; the skipped_* counters say why the others are not in it (a file counts
    under the first reason that applies, in the order excluded, unreadable,
    young, open; an excluded directory counts once and is not walked).
    `oldest_mtime` is the oldest mtime among the eligible files, None when none.
    """

    files: tuple[QueuedFile, ...]
    distribution: SizeDistribution
    skipped_young: int
    skipped_excluded: int
    skipped_open: int
    skipped_unreadable: int
    oldest_mtime: float | None


def scan(
    source: Path,
    *,
    now: float,
    min_age_seconds: float,
    exclude: Sequence[str],
    exclude_open_files: bool,
    open_files: Set[str] | None = None,
) -> ScanResult:
    """
    Given a source folder, the current time in seconds since the epoch, the
    minimum age a file must have, rclone-style exclude patterns and whether
    files open in some process are to be left alone, return the eligible
    regular files under it (symlinks and special files are never followed or
    queued) and why the others were skipped.

    A file is too young when now - mtime < min_age_seconds. `open_files` is the
    set of absolute real paths taken as open; when it is None and
    exclude_open_files is true, it comes from open_files_under(source). Files or
    directories that vanish during the walk are skipped silently; those that
    cannot be read are counted in skipped_unreadable.

    Raise ValueError if an exclude pattern is invalid, and OSError
    (FileNotFoundError, NotADirectoryError, PermissionError) if the source
    itself cannot be listed: an unmounted or missing source must not look like
    an empty queue.
    """
    root = os.fspath(source)
    file_rule, directory_rule = _compile_rules(exclude)
    if not exclude_open_files:
        open_files = None
    elif open_files is None:
        open_files = open_files_under(source)
    real_root_prefix = _directory_prefix(os.path.realpath(root)) if open_files else ""

    files: list[QueuedFile] = []
    sizes: list[int] = []
    oldest_mtime = math.inf
    skipped_young = skipped_excluded = skipped_open = skipped_unreadable = 0
    # Bound once: this loop body runs once per file of a million-file library.
    add_file = files.append
    add_size = sizes.append
    make_queued_file = QueuedFile

    # Depth-first with an explicit stack: no recursion limit, and only one
    # open directory handle at a time.
    pending: list[tuple[str, str]] = [(root, "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            entries = os.scandir(directory)
        except FileNotFoundError:
            if not prefix:
                raise
            continue
        except OSError:
            if not prefix:
                raise
            skipped_unreadable += 1
            continue
        with entries:
            try:
                for entry in entries:
                    try:
                        # is_file/is_dir with follow_symlinks=False answer from
                        # the directory listing itself; only candidates that
                        # pass the excludes pay for a stat call.
                        if not entry.is_file(follow_symlinks=False):
                            if entry.is_dir(follow_symlinks=False):
                                relative = prefix + entry.name + "/"
                                if directory_rule is not None and directory_rule(relative):
                                    skipped_excluded += 1
                                else:
                                    pending.append((entry.path, relative))
                            continue
                        relative = prefix + entry.name
                        if "\n" in relative:
                            # rclone's --files-from-raw takes one path a line: such a
                            # name cannot be handed to it.
                            skipped_unreadable += 1
                            continue
                        if file_rule is not None and file_rule(relative):
                            skipped_excluded += 1
                            continue
                        status = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    except OSError:
                        skipped_unreadable += 1
                        continue
                    mtime = status.st_mtime
                    if now - mtime < min_age_seconds:
                        skipped_young += 1
                        continue
                    if open_files and real_root_prefix + relative in open_files:
                        skipped_open += 1
                        continue
                    size = status.st_size
                    add_file(make_queued_file(relative, size, mtime))
                    add_size(size)
                    if mtime < oldest_mtime:
                        oldest_mtime = mtime
            except FileNotFoundError:
                # The directory went away while it was being listed.
                pass
            except OSError:
                # Listing failed part way (an I/O error on a flaky mount): keep
                # what was read and say the rest could not be.
                skipped_unreadable += 1

    # Paths are unique within one scan, so ordering by path alone is total and
    # independent of the order the filesystem lists entries in.
    files.sort(key=attrgetter("path"))
    return ScanResult(
        files=tuple(files),
        distribution=size_distribution(sizes),
        skipped_young=skipped_young,
        skipped_excluded=skipped_excluded,
        skipped_open=skipped_open,
        skipped_unreadable=skipped_unreadable,
        oldest_mtime=oldest_mtime if files else None,
    )


def size_distribution(sizes: Sequence[int]) -> SizeDistribution:
    """
    Given file sizes in bytes, return their count, total, exact nearest-rank
    percentiles (the p-th percentile is the smallest size that at least p% of
    the sizes do not exceed), maximum and cumulative histogram over
    HISTOGRAM_BUCKETS. An empty input gives zeros everywhere. Raise ValueError
    if a size is negative.
    """
    ordered = sorted(sizes)
    count = len(ordered)
    if count and ordered[0] < 0:
        raise ValueError(f"file sizes must not be negative, got {ordered[0]}")
    buckets = tuple((bound, bisect.bisect_right(ordered, bound)) for bound in HISTOGRAM_BUCKETS)
    if not count:
        return SizeDistribution(0, 0, 0, 0, 0, 0, 0, buckets)

    def nearest_rank(percent: int) -> int:
        # Integer ceiling of percent * count / 100: float products such as
        # 0.95 * 20 land a hair off the whole number and shift the rank.
        rank = -(-percent * count // 100)
        return ordered[max(rank, 1) - 1]

    return SizeDistribution(
        count=count,
        total_bytes=sum(ordered),
        p50=nearest_rank(50),
        p90=nearest_rank(90),
        p95=nearest_rank(95),
        p99=nearest_rank(99),
        max=ordered[-1],
        buckets=buckets,
    )


def compile_excludes(patterns: Sequence[str]) -> Callable[[str, bool], bool]:
    """
    Given rclone-style exclude patterns, return a predicate that, given a path
    relative to the source (POSIX separators, no leading "/") and whether it is
    a directory, says whether rclone would exclude it.

    As in rclone: `*` matches within one path element, `**` across elements,
    `?` one non-"/" character, `[...]` a character class (negated with `^`,
    POSIX classes such as `[[:digit:]]` allowed; `!` is literal, as in rclone),
    `{a,b}` alternatives, `{{regexp}}` a regular expression and `\\c` the
    character c (rclone documents that, though it hands `\\d` to its regexp
    engine as a digit class). A leading "/" anchors the pattern at the source root,
    otherwise it matches the end of the path at an element boundary. A trailing
    "/" makes it a directory rule excluding the directory and everything under
    it, just like `dir/**`; a pattern containing `**` applies to files and
    directories, any other pattern to files only. Each pattern is compiled once.
    Raise ValueError naming the pattern if one is invalid.
    """
    file_rule, directory_rule = _compile_rules(patterns)

    def is_excluded(relative_path: str, is_dir: bool) -> bool:
        if is_dir:
            return directory_rule is not None and directory_rule(relative_path + "/") is not None
        return file_rule is not None and file_rule(relative_path) is not None

    return is_excluded


def open_files_under(root: Path) -> set[str]:
    """
    Given a folder, return the absolute real paths of the regular files under
    it that some process currently has open, read from the /proc/*/fd links.
    Processes that vanish or whose descriptors may not be read are passed over,
    so an unprivileged caller sees only its own user's processes. Return an
    empty set where there is no /proc (any system but Linux).
    """
    found: set[str] = set()
    if not sys.platform.startswith("linux"):
        return found
    prefix = _directory_prefix(os.path.realpath(root))
    try:
        processes = os.scandir("/proc")
    except OSError:
        return found
    with processes:
        for process in processes:
            if not process.name.isdigit():
                continue
            try:
                with os.scandir(process.path + "/fd") as descriptors:
                    for descriptor in descriptors:
                        try:
                            target = os.readlink(descriptor.path)
                            if not target.startswith(prefix):
                                continue
                            # stat through the fd link reaches the open file
                            # itself, so directories and pipes are told apart.
                            if stat.S_ISREG(os.stat(descriptor.path).st_mode):
                                found.add(target)
                        except OSError:
                            continue
            except OSError:
                continue
    return found


def _directory_prefix(real_path: str) -> str:
    """Given a real directory path, return it with exactly one trailing "/"."""
    return real_path.rstrip("/") + "/"


def _compile_rules(patterns: Sequence[str]) -> tuple[_Matcher | None, _Matcher | None]:
    """
    Given rclone-style exclude patterns, return one compiled full match for
    file paths and one for directory paths (given with a trailing "/"), each
    None when no pattern applies to that kind, sorted as rclone's Filter.Add
    sorts them. Raise ValueError naming the pattern if one is invalid.
    """
    file_rules: list[tuple[bool, str]] = []
    directory_rules: list[tuple[bool, str]] = []
    for pattern in patterns:
        glob = pattern
        is_directory_rule = glob.endswith("/")
        is_file_rule = not is_directory_rule
        if is_directory_rule:
            # rclone: excluding "dir/" is excluding "dir/**".
            glob += "**"
        if "**" in glob:
            is_directory_rule = is_file_rule = True
        try:
            rule = _glob_to_regex(glob)
            re.compile(rule[1], _FLAGS)
        except (ValueError, re.error) as error:
            raise ValueError(f"invalid exclude pattern {pattern!r}: {error}") from None
        if is_file_rule:
            file_rules.append(rule)
        if is_directory_rule:
            directory_rules.append(rule)
        if glob == "*":
            # rclone turns an exclude of "*" into the directory rule "/**"
            # too: nothing below the root can hold an included file.
            directory_rules.append((True, ".*"))
    return _combine(file_rules, patterns), _combine(directory_rules, patterns)


def _combine(rules: list[tuple[bool, str]], patterns: Sequence[str]) -> _Matcher | None:
    """
    Given (anchored, expression) rules, return the full match of a path
    against any of them, where an unanchored expression may also match the
    path after any "/"; None if there are no rules. Raise ValueError if they
    clash (a named group of an embedded {{regexp}} used in two patterns).
    """
    if not rules:
        return None
    # One alternation means one regex call per path however many patterns
    # there are; with only excludes, rule order does not matter. rclone
    # searches for `(^|/)rule$`; a full match of `(.*/)?rule` means the same
    # and is several times faster in Python's engine, which would otherwise
    # retry the whole alternation at every character of the path. A rule that
    # starts with `**` (".*", which crosses "/") already matches after any
    # "/", so it goes without that prefix: the engine then tries it once
    # instead of once per "/" in the path, which halves the cost of the
    # default excludes. (An expression from _glob_to_regex has no top-level
    # "|", so its leading ".*" covers the whole rule.)
    free_rules = [expression for anchored, expression in rules if anchored or expression.startswith(".*")]
    unanchored = "|".join(
        f"(?:{expression})"
        for anchored, expression in rules
        if not anchored and not expression.startswith(".*")
    )
    alternatives = [f"(?:.*/)?(?:{unanchored})"] if unanchored else []
    alternatives += [f"(?:{expression})" for expression in free_rules]
    try:
        return re.compile("|".join(alternatives), _FLAGS).fullmatch
    except re.error as error:
        raise ValueError(f"exclude patterns {list(patterns)!r} do not combine: {error}") from None


def _glob_to_regex(glob: str) -> tuple[bool, str]:
    """
    Given one rclone filter glob, return whether it is anchored at the source
    root (a leading "/") and a Python regular expression for the rest that,
    matched in full (after any "/" of the path unless anchored), matches what
    rclone's globToRegexp (path mode) matches. Raise ValueError if the glob is
    malformed.
    """
    anchored = glob.startswith("/")
    if anchored:
        glob = glob[1:]
    parts: list[str] = []
    index = 0
    length = len(glob)
    brace_depth = 0
    while index < length:
        character = glob[index]
        if character == "\\":
            if index + 1 >= length:
                raise ValueError("trailing backslash")
            parts.append(re.escape(glob[index + 1]))
            index += 2
        elif character == "*":
            end = index
            while end < length and glob[end] == "*":
                end += 1
            stars = end - index
            if stars > 2:
                raise ValueError("too many stars")
            parts.append("[^/]*" if stars == 1 else ".*")
            index = end
        elif character == "?":
            parts.append("[^/]")
            index += 1
        elif character == "[":
            index = _translate_class(glob, index, parts)
        elif character == "]":
            raise ValueError("mismatched ']'")
        elif character == "{" and glob.startswith("{{", index):
            index = _translate_embedded_regex(glob, index, parts)
        elif character == "{":
            brace_depth += 1
            parts.append("(?:")
            index += 1
        elif character == "}":
            if not brace_depth:
                raise ValueError("mismatched '{' and '}'")
            brace_depth -= 1
            parts.append(")")
            index += 1
        elif character == "," and brace_depth:
            parts.append("|")
            index += 1
        else:
            parts.append(re.escape(character))
            index += 1
    if brace_depth:
        raise ValueError("mismatched '{' and '}'")
    return anchored, "".join(parts)


def _translate_embedded_regex(glob: str, start: int, parts: list[str]) -> int:
    """
    Given a glob and the index of a "{{" in it, append the raw regular
    expression up to the matching "}}" to parts as a group and return the index
    after it. As rclone does, a longer run of "}" ends the expression at its
    last two, so `{{a{2}}}` means `a{2}`. Raise ValueError if it is unclosed.
    """
    close = glob.find("}}", start + 2)
    if close < 0:
        raise ValueError("mismatched '{{' and '}}'")
    while close + 2 < len(glob) and glob[close + 2] == "}":
        close += 1
    expression = glob[start + 2 : close]
    try:
        re.compile(expression, _FLAGS)
    except re.error as error:
        raise ValueError(f"bad regular expression {expression!r}: {error}") from None
    parts.append(f"(?:{expression})")
    return close + 2


def _translate_class(glob: str, start: int, parts: list[str]) -> int:
    """
    Given a glob and the index of a "[" in it, append the equivalent Python
    character class to parts and return the index after its "]". Raise
    ValueError if the class is empty, unclosed or holds a stray "[".
    """
    index = start + 1
    length = len(glob)
    translated = ["["]
    if index < length and glob[index] == "^":
        translated.append("^")
        index += 1
    members = 0
    while True:
        if index >= length:
            raise ValueError("mismatched '[' and ']'")
        character = glob[index]
        if character == "]":
            break
        if character == "\\":
            if index + 1 >= length:
                raise ValueError("trailing backslash")
            translated.append(re.escape(glob[index + 1]))
            index += 2
        elif character == "[" and glob.startswith("[:", index):
            close = glob.find(":]", index + 2)
            name = glob[index + 2 : close] if close >= 0 else ""
            if name not in _POSIX_CLASSES:
                raise ValueError(f"unknown character class [:{name}:]")
            translated.append(_POSIX_CLASSES[name])
            index = close + 2
        elif character == "[":
            # rclone counts brackets, so a bare "[" inside a class unbalances
            # the glob there; refuse it rather than guess.
            raise ValueError("'[' inside a character class must be escaped as \\[")
        elif character == "-" and members and index + 1 < length and glob[index + 1] != "]":
            translated.append("-")
            index += 1
            continue
        else:
            translated.append(re.escape(character))
            index += 1
        members += 1
    if not members:
        raise ValueError("empty character class")
    translated.append("]")
    parts.append("".join(translated))
    return index + 1
