"""The hidden cleaner: unionfs-fuse whiteouts become deletions on the remotes.

When a file that lives only on the remote is deleted through a unionfs-fuse
union (Sonarr replacing an episode, say), unionfs cannot delete it from the
read-only remote branch; it writes a whiteout marker instead, `NAME_HIDDEN~`,
at the same relative path under its metadata folder (`.unionfs-fuse`). So
each marker `<folder>/<path>_HIDDEN~` means "`<path>` is deleted": cloudplow
deletes `<remote><path>` on every remote listed (a file with deletefile, a
folder with purge), then removes the marker and the metadata folders that
leaves empty. A marker whose deletion failed on any remote stays, so the next
run tries again; a path already gone from a remote counts as deleted.

    cloudplow clean   -> clean_hidden(config) -> per marker: rclone lsjson --stat,
                         deletefile | purge on each remote, then unlink the marker
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from cloudplow.config import Config
from cloudplow.config.load import HiddenFolder
from cloudplow.rclone import command, execute
from cloudplow.tidy import remove_emptied_folders

logger = logging.getLogger(__name__)

MARKER_SUFFIX = "_HIDDEN~"


@dataclass
class CleanResult:
    markers: int = 0
    deleted: list[str] = field(default_factory=list)  # remote:path deleted
    already_gone: int = 0  # remote:path that was not there
    failed: list[str] = field(default_factory=list)  # "marker: reason", markers kept

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def find_markers(folder: Path) -> list[str]:
    """Given a unionfs-fuse metadata folder, return the whiteout markers under it, relative, sorted."""
    markers = []
    for directory, folders, files in os.walk(folder):
        for name in (*files, *folders):
            if name.endswith(MARKER_SUFFIX):
                markers.append(Path(directory, name).relative_to(folder).as_posix())
        folders[:] = [name for name in folders if not name.endswith(MARKER_SUFFIX)]
    return sorted(markers)


def remote_target(remote: str, marker: str) -> str:
    """Given a remote such as "gdrive:" or "gdrive:/Media" and a marker path, return what it hides."""
    hidden = marker.removesuffix(MARKER_SUFFIX)
    if remote.endswith((":", "/")):
        return remote + hidden
    return f"{remote}/{hidden}"


def clean_folder(binary: str, config: Config, hidden: HiddenFolder, result: CleanResult) -> None:
    """Given one hidden folder, delete what each marker hides on every remote, then the marker."""
    markers = find_markers(hidden.folder)
    result.markers += len(markers)
    cleared = []
    for marker in markers:
        problems = []
        for remote in hidden.remotes:
            target = remote_target(remote, marker)
            try:
                kind = command.object_kind(binary, target, config_path=config.rclone_config)
                if kind is None:
                    result.already_gone += 1
                    continue
                command.delete(binary, target, kind=kind, config_path=config.rclone_config)
            except execute.RcloneError as error:
                problems.append(f"{target}: {error}")
                continue
            logger.info("hidden: deleted %s (%s)", target, kind)
            result.deleted.append(target)
        if problems:
            result.failed.append(f"{hidden.folder / marker}: {'; '.join(problems)}")
            logger.warning(
                "hidden: kept %s for the next run: %s", hidden.folder / marker, "; ".join(problems)
            )
            continue
        marker_path = hidden.folder / marker
        try:
            if marker_path.is_dir() and not marker_path.is_symlink():
                marker_path.rmdir()
            else:
                marker_path.unlink()
        except FileNotFoundError:
            pass
        except OSError as error:
            result.failed.append(f"{marker_path}: cannot remove the marker: {error.strerror or error}")
            continue
        cleared.append(marker)
    remove_emptied_folders(hidden.folder, cleared)


def clean_hidden(config: Config, binary: str | None = None) -> CleanResult:
    """
    Given the configuration, clean every `hidden` folder and return what was
    done. Raise execute.RcloneError if rclone cannot be found.
    """
    binary = binary or execute.find_rclone(config.rclone_binary)
    result = CleanResult()
    for hidden in config.hidden:
        if not hidden.folder.is_dir():
            result.failed.append(f"{hidden.folder}: no such folder (is the union mounted?)")
            logger.warning("hidden: %s is not a folder; nothing cleaned there", hidden.folder)
            continue
        clean_folder(binary, config, hidden, result)
    return result
