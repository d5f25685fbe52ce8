"""After a move session: remove the source folders the session emptied.

Only folders that held a file the session moved (and, once they are gone,
their parents) are candidates, deepest first; `source` itself never is. Each
is removed with rmdir, which the kernel refuses for a folder that is not
empty, so a folder still holding a file the session left, or one that got a
new file meanwhile, always stays: there is no check-then-delete race.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

logger = logging.getLogger(__name__)


def emptied_folder_candidates(moved_paths: Iterable[str]) -> list[PurePosixPath]:
    """
    Given the paths (relative to source) of files a session moved away, return
    every folder above them, relative to source and without source itself,
    deepest first.
    """
    folders: set[PurePosixPath] = set()
    for moved in moved_paths:
        parent = PurePosixPath(moved).parent
        while parent != PurePosixPath("."):
            if parent in folders:
                break  # its parents are in already
            folders.add(parent)
            parent = parent.parent
    return sorted(folders, key=lambda folder: (-len(folder.parts), str(folder)))


def remove_emptied_folders(source: Path, moved_paths: Iterable[str]) -> list[str]:
    """
    Given the uploader's source and the paths a session moved away, remove the
    folders that are empty now, deepest first, and return them (relative).
    A folder that is not empty, gone already or not removable is left as it is.
    """
    removed: list[str] = []
    for folder in emptied_folder_candidates(moved_paths):
        target = source / folder
        try:
            if target.is_symlink():
                continue  # a link to a folder elsewhere is not ours to judge
            os.rmdir(target)
        except FileNotFoundError:
            continue
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                logger.warning("cannot remove emptied folder %s: %s", target, error.strerror or error)
            continue
        removed.append(folder.as_posix())
    if removed:
        logger.info("removed %d emptied folder(s) under %s", len(removed), source)
    return removed
